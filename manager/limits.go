package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/session"
)

// Quotas and rate limits (Config.Limits, package limits) are checked at
// the doors, before a session or a task costs anything: a new session's
// address before its credential is checked (sessionDoor) or, in process,
// before the connect hooks run; its user after them (they say who the
// user is); a task before the middleware chain. A refusal is an
// answer like any other: an error frame with rate_limited or
// quota_exceeded for the task (the session goes on), an error frame and a
// close for a WebSocket session, a 429 with Retry-After for REST.
//
// Concurrent sessions are counted per manager: a session handed to another
// manager leaves this one's count and joins the other's (even past the
// quota there: it is no new session). A refused task writes no log line:
// a flood would flood the log too.

// limitMetrics count refusals, resolved once: a flood of refused tasks
// must not hash labels per task.
type limitMetrics struct {
	sessionRate, sessionQuota, taskRate, taskQuota prometheus.Counter
}

func newLimitMetrics(reg prometheus.Registerer) (*limitMetrics, error) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_manager_limited_total",
		Help: "New sessions and tasks refused by a limit: what (session, task) and which (rate: rate_limited, quota: quota_exceeded)."},
		[]string{"what", "limit"})
	if err := reg.Register(v); err != nil {
		return nil, err
	}
	return &limitMetrics{sessionRate: v.WithLabelValues("session", "rate"), sessionQuota: v.WithLabelValues("session", "quota"),
		taskRate: v.WithLabelValues("task", "rate"), taskQuota: v.WithLabelValues("task", "quota")}, nil
}

// Limits are the limits the manager applies (Config.Limits), for other
// doors to share (the conversion API's uploads); nil when it limits
// nothing.
func (m *Manager) Limits() *limits.Limits { return m.limits }

// sessionLimits is what a session's limits need: its keys, the user's
// session slot, the tasks it has in flight. nil when the manager limits
// nothing, so that the task path pays one nil check.
type sessionLimits struct {
	// user and ip are the session's keys in the rate limiters; user is
	// set by admitUser, before the session takes tasks.
	user, ip string
	// release gives the user's session slot back; nil without one. It is
	// idempotent.
	release func()
	// pending counts the tasks accepted and not yet answered.
	pending atomic.Int32
}

// limitError is a refusal by a limit: the error the client sees and how
// long to wait before trying again (0: until something ends).
type limitError struct {
	se         *session.Error
	retryAfter time.Duration
}

func (e *limitError) Error() string { return e.se.Error() }
func (e *limitError) Unwrap() error { return e.se }

// RetryAfter is how long the caller of a request that err refused should
// wait before trying again; ok is false when err is no rate limit's
// refusal.
func RetryAfter(err error) (d time.Duration, ok bool) {
	var le *limitError
	if errors.As(err, &le) && le.retryAfter > 0 {
		return le.retryAfter, true
	}
	return 0, false
}

func rateLimited(what string, wait time.Duration) *limitError {
	return &limitError{se: session.NewError(session.CodeRateLimited,
		"too many "+what+"; try again in "+waitText(wait)), retryAfter: wait}
}

// waitText says a wait as people read it: tenths of a second below one,
// whole seconds (rounded up) above.
func waitText(d time.Duration) string {
	if tenths := max(1, (d+99*time.Millisecond)/(100*time.Millisecond)); tenths < 10 {
		return "0." + strconv.Itoa(int(tenths)) + " seconds"
	}
	n := limits.RetryAfterSeconds(d)
	if n == 1 {
		return "1 second"
	}
	return strconv.Itoa(n) + " seconds"
}

// newSessionLimits makes the limits of a session from remote; nil when
// the manager limits nothing. Until admitUser names its user, a session
// counts as its address.
func (m *Manager) newSessionLimits(remote string) *sessionLimits {
	if m.limits == nil {
		return nil
	}
	ip := addressKey(remote)
	return &sessionLimits{user: addressUser(ip), ip: ip}
}

// addressUser is the user key of a session known by its address only; ""
// (no limit per user) for an in-process session without one.
func addressUser(ip string) string {
	if ip == "" {
		return ""
	}
	return "ip:" + ip
}

// addressKey is the address of remote without its port.
func addressKey(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// userKey is who a session's user is, for the limits: its principal's
// user and tenant (auth.SessionPrincipal), else the user a connect hook
// named, else its address (see addressUser).
func userKey(info *session.Info, ip string) string {
	if p := auth.SessionPrincipal(info); p != nil && p.User != "" {
		return "p:" + p.Tenant + "\x00" + p.User
	}
	if info.User != "" {
		return "u:" + info.User
	}
	return addressUser(ip)
}

// addressChecked marks a request whose address sessionDoor has taken a
// new session from.
type addressChecked struct{}

// sessionDoor takes a new session from the address's bucket on the HTTP
// doors (/ws but for resumes, /login, /stream), before anything else
// looks at the request: a flood from one address costs no credential
// check and no connect hook. Past the rate it answers 429 with
// Retry-After, before any WebSocket upgrade, as authentication answers
// 401.
func (m *Manager) sessionDoor(c *gin.Context) {
	if m.limits == nil || m.cfg.Limits.SessionIPRate.Unlimited() {
		return // admitAddress has nothing to take either
	}
	switch c.FullPath() {
	case "/ws":
		if c.Query("resume") != "" {
			return // no new session
		}
	case "/login", "/login/:id", "/stream":
	default:
		return
	}
	ok, wait := m.limits.AllowSession("", addressKey(m.clientAddr(c.Request)))
	if !ok {
		m.limited.sessionRate.Inc()
		c.Header("Retry-After", strconv.Itoa(limits.RetryAfterSeconds(wait)))
		m.refuse(c, http.StatusTooManyRequests, session.CodeRateLimited, addressRefusal(wait).se.Message, nil)
		return
	}
	c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), addressChecked{}, true))
}

func addressRefusal(wait time.Duration) *limitError {
	return rateLimited("new sessions from your address", wait)
}

// admitAddress takes a new session from the address's bucket, before the
// connect hooks run, unless sessionDoor has.
func (m *Manager) admitAddress(ctx context.Context, s *Session, r *http.Request) error {
	if s.lim == nil || s.lim.ip == "" {
		return nil
	}
	if r != nil && r.Context().Value(addressChecked{}) != nil {
		return nil
	}
	if ok, wait := m.limits.AllowSession("", s.lim.ip); !ok {
		m.limited.sessionRate.Inc()
		m.auditSession(ctx, s, "refused", slog.String("code", session.CodeRateLimited), slog.String("limit", "session rate per address"))
		return addressRefusal(wait)
	}
	return nil
}

// admitUser takes a new session from its user's bucket and one of the
// user's session slots, once the connect hooks have said who the user is.
// The session's end gives the slot back.
func (m *Manager) admitUser(ctx context.Context, s *Session) error {
	l := s.lim
	if l == nil {
		return nil
	}
	l.user = userKey(&s.info, l.ip)
	if ok, wait := m.limits.AllowSession(l.user, ""); !ok {
		m.limited.sessionRate.Inc()
		m.auditSession(ctx, s, "refused", slog.String("code", session.CodeRateLimited), slog.String("limit", "session rate per user"))
		return rateLimited("new sessions", wait)
	}
	release, ok := m.limits.AcquireSession(l.user)
	if !ok {
		n := m.limits.SessionsPerUser()
		m.limited.sessionQuota.Inc()
		m.auditSession(ctx, s, "refused", slog.String("code", session.CodeQuotaExceeded), slog.String("limit", "sessions per user"))
		return &limitError{se: session.NewError(session.CodeQuotaExceeded,
			fmt.Sprintf("you already have %d %s open, the most allowed", n, plural(n, "session")))}
	}
	l.release = release
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// limitResumed names the user of a session resumed from another manager,
// once its principal is known, and counts it among the user's sessions
// without refusing it: it is no new session, and it has left the other
// manager's count.
func (s *Session) limitResumed() {
	if l := s.lim; l != nil {
		l.user = userKey(&s.info, l.ip)
		l.release = s.m.limits.HoldSession(l.user)
	}
}

// releaseLimits gives the session's slot back: at its end, or when it
// moves to another manager. Once only, whichever comes.
func (s *Session) releaseLimits() {
	if s.lim != nil && s.lim.release != nil {
		s.lim.release()
	}
}

// admitTask counts a task against the session's tasks in flight and its
// user's and address's task rates. Admitted, the task must be followed by
// taskDone once answered.
func (s *Session) admitTask() error {
	l := s.lim
	if l == nil {
		return nil
	}
	lim := s.m.limits
	if n := lim.Config().TasksInFlight; n > 0 && l.pending.Add(1) > int32(n) {
		l.pending.Add(-1)
		s.m.limited.taskQuota.Inc()
		return &limitError{se: session.NewError(session.CodeQuotaExceeded,
			fmt.Sprintf("this session has %d %s in flight, the most allowed", n, plural(n, "task")))}
	}
	if ok, wait := lim.AllowTask(l.user, l.ip); !ok {
		s.taskDone()
		s.m.limited.taskRate.Inc()
		return rateLimited("tasks", wait)
	}
	return nil
}

// taskDone ends what admitTask began.
func (s *Session) taskDone() {
	if s.lim != nil && s.m.limits.Config().TasksInFlight > 0 {
		s.lim.pending.Add(-1)
	}
}

// limitDisconnect is how a WebSocket refused by a limit is closed: 1013
// (try again later) for a rate, 1008 for a quota. Refused sessions never
// began, so no disconnect hook sees these.
func limitDisconnect(err error) (session.Disconnect, bool) {
	var le *limitError
	if !errors.As(err, &le) {
		return session.Disconnect{}, false
	}
	if le.se.Code == session.CodeRateLimited {
		return session.Disconnect{Code: session.CloseTryAgainLater, Reason: "rate limited", Task: *le.se}, true
	}
	return session.Disconnect{Code: session.ClosePolicyViolation, Reason: "quota exceeded", Task: *le.se}, true
}

// setRetryAfter adds Retry-After to a REST answer refused by a rate limit.
func setRetryAfter(c *gin.Context, err error) {
	if d, ok := RetryAfter(err); ok {
		c.Header("Retry-After", strconv.Itoa(limits.RetryAfterSeconds(d)))
	}
}

// loginStatus is the status of a refused REST login: awv3's 200 with
// status "rejected", except for a limit, which is a 429 (with Retry-After
// for a rate) so that clients and proxies back off.
func loginStatus(c *gin.Context, err error) int {
	var le *limitError
	if !errors.As(err, &le) {
		return http.StatusOK
	}
	setRetryAfter(c, err)
	return httpStatus(le.se.Code)
}
