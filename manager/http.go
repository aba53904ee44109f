package manager

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/store"
	"github.com/drover-dev/drover/web"
)

func (m *Manager) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// gin trusts forwarding headers from anyone by default. Here only
	// Config.TrustedProxies are: c.ClientIP() is what clientAddr says, so
	// a forged X-Forwarded-For does not buy a fresh bucket of the limits
	// per address.
	_ = r.SetTrustedProxies(m.cfg.TrustedProxies)
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, m.recovered), bodylimit.Limit(m.cfg.MaxBodyBytes, tooLarge), m.checkOrigin, m.sessionDoor)
	user, admin := m.Require(LevelUser), m.Require(LevelAdmin)
	r.GET("/ws", user, func(c *gin.Context) { m.serveWS(c.Writer, c.Request) })
	r.GET("/stream", user, m.serveStream)
	r.GET("/health", m.serveHealth)
	r.GET("/livez", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	r.GET("/status", m.serveStatus) // redacted unless the caller is an admin
	r.GET("/events", user, m.serveEvents)
	r.GET("/login", user, m.serveLogin)
	r.GET("/login/:id", user, m.serveLogin)
	r.GET("/logout/:id", user, m.serveLogout)
	r.POST("/execute/:id", user, m.serveExecute)
	r.DELETE("/sessions/:id", admin, m.serveEndSession)
	m.keyRoutes(r.Group("/admin/keys", admin))
	m.farmRoutes(r)
	if m.cfg.Gatherer != nil {
		r.GET("/metrics", m.metricsGuard(), gin.WrapH(promhttp.HandlerFor(m.cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	ui := http.StripPrefix("/ui", web.Handler())
	r.GET("/ui/*path", gin.WrapH(ui))
	r.GET("/", func(c *gin.Context) {
		if !m.viewerDoor(c) {
			c.Redirect(http.StatusFound, "/ui/")
		}
	})
	r.NoRoute(func(c *gin.Context) {
		if !m.viewerDoor(c) {
			restError(c, http.StatusNotFound, session.CodeNotFound, "no such route")
		}
	})
	return r
}

// recovered answers a request whose handler panicked, and logs the
// panic with the request's URL scrubbed of credentials (gin's own
// recovery prints the request line, ?access_token= included).
func (m *Manager) recovered(c *gin.Context, err any) {
	m.log.Error("panic while serving a request", "method", c.Request.Method, "url", auth.Scrub(c.Request.URL),
		"panic", fmt.Sprint(err), "stack", string(debug.Stack()))
	c.AbortWithStatusJSON(http.StatusInternalServerError, restBody{Code: session.CodeInternal, Message: "internal error"})
}

// restBody is the body of every REST error: a protocol code and a plain
// sentence.
type restBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// tooLarge answers a body over its route's bound.
func tooLarge(c *gin.Context, limit int64) {
	restError(c, http.StatusRequestEntityTooLarge, session.CodeTooLarge,
		fmt.Sprintf("the request body is larger than this route accepts (%d bytes)", limit))
}

func restError(c *gin.Context, status int, code, msg string) {
	c.JSON(status, restBody{Code: code, Message: msg})
}

// restFail answers a REST request with the error err, in the status that
// fits its code.
func (m *Manager) restFail(c *gin.Context, err error) {
	code, msg := m.clientError(err)
	setRetryAfter(c, err)
	restError(c, httpStatus(code), code, msg)
}

// health applies the health rule: the status code and body of /health.
func (m *Manager) health(c Capacity) (int, any) {
	body := func(word string) gin.H {
		return gin.H{"status": word, "busy": c.Busy, "slots": c.Slots, "ratio": c.Ratio()}
	}
	switch {
	case c.StoreDown:
		return http.StatusServiceUnavailable, body("store unavailable")
	case m.cfg.Health != nil:
		code, b := m.cfg.Health(c)
		switch {
		case code == 0:
			code = http.StatusOK
		case code < 100 || code > 599:
			code = http.StatusInternalServerError
		}
		if b == nil {
			b = body("ok")
			if !healthyCode(code) {
				b = body("unhealthy")
			}
		}
		return code, b
	case c.Slots == 0:
		return http.StatusServiceUnavailable, body("no capacity")
	case c.Ratio() >= m.cfg.HealthThreshold:
		return http.StatusServiceUnavailable, body("busy")
	}
	return http.StatusOK, body("ok")
}

// healthyCode: what load balancers take for a passing check.
func healthyCode(code int) bool { return code >= 200 && code < 400 }

func (m *Manager) serveHealth(c *gin.Context) {
	c.JSON(m.health(m.place.Capacity()))
}

// REST: awv3-compatible login, execute, logout.

type restReply struct {
	Op     string `json:"op"`
	Status string `json:"status"`
	ID     string `json:"id"`
	// Code and Message say why a login was rejected.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

func (m *Manager) serveLogin(c *gin.Context) {
	key := c.Param("id")
	if key != "" && (len(key) > 128 || !printable(key)) {
		restError(c, http.StatusBadRequest, session.CodeBadRequest, "session id must be 1 to 128 printable characters")
		return
	}
	if key != "" {
		m.mu.Lock()
		s, taken := m.restKeys[key]
		m.mu.Unlock()
		if taken {
			if !samePrincipal(s.owner, auth.FromContext(c.Request.Context())) {
				c.JSON(http.StatusOK, restReply{Op: "system", Status: "rejected", ID: key,
					Code: session.CodeBadRequest, Message: "choose another session id"})
				return
			}
			c.JSON(http.StatusOK, restReply{Op: "system", Status: "permitted", ID: key})
			return
		}
	}
	q := c.Request.URL.Query()
	// awv3's login answers at once; ?wait=true queues.
	opts, err := session.ParseConnectOptions(q, m.connectDefaults(false))
	if err != nil {
		m.restFail(c, err)
		return
	}
	r := openRequest{opts: opts, remote: m.clientAddr(c.Request), http: c.Request, query: q, restKey: key}
	if r.restKey == "" {
		r.restKey = newToken()
	}
	s, err := m.openNow(c.Request.Context(), r)
	if err != nil {
		code, msg := m.clientError(err)
		m.log.Info("rest login rejected", "code", code, "err", err)
		c.JSON(loginStatus(c, err), restReply{Op: "system", Status: "rejected", ID: key, Code: code, Message: msg})
		return
	}
	// Any manager behind the load balancer can serve the next request.
	m.shareSession(s)
	c.JSON(http.StatusOK, restReply{Op: "system", Status: "permitted", ID: s.restKey})
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}

// restSession finds the REST session of key: here, or placed by another
// manager sharing the store, which hands it over.
func (m *Manager) restSession(c *gin.Context, key string) *Session {
	m.mu.Lock()
	s := m.restKeys[key]
	m.mu.Unlock()
	if s == nil && key != "" {
		s = m.claimShared(c.Request.Context(), restSecret(key), key, m.clientAddr(c.Request))
	}
	if s != nil && !samePrincipal(s.owner, auth.FromContext(c.Request.Context())) {
		return nil // someone else's: no such session, as far as the caller knows
	}
	return s
}

const noSuchSession = "no such session"

func (m *Manager) serveLogout(c *gin.Context) {
	s := m.restSession(c, c.Param("id"))
	if s == nil {
		restError(c, http.StatusNotFound, session.CodeNotFound, noSuchSession)
		return
	}
	s.end(session.DisconnectLogout)
	c.JSON(http.StatusOK, restReply{Op: "system", Status: "disconnected", ID: s.restKey})
}

func (m *Manager) serveExecute(c *gin.Context) {
	s := m.restSession(c, c.Param("id"))
	if s == nil {
		restError(c, http.StatusNotFound, session.CodeNotFound, noSuchSession)
		return
	}
	bodylimit.SetLimit(c, m.cfg.MaxMessageSize)
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		// An oversized body gets the limit's 413.
		restError(c, http.StatusBadRequest, session.CodeBadRequest, "could not read the body")
		return
	}
	results, err := s.Execute(c.Request.Context(), body)
	if err != nil {
		m.restFail(c, err)
		return
	}
	if results == nil {
		results = []Result{}
	}
	c.JSON(http.StatusOK, results)
}

func httpStatus(code string) int {
	switch code {
	case session.CodeBadRequest:
		return http.StatusBadRequest
	case session.CodeNotFound:
		return http.StatusNotFound
	case session.CodeTimeout:
		return http.StatusGatewayTimeout
	case session.CodeInstanceLost:
		return http.StatusBadGateway
	case session.CodeNoCapacity, session.CodeShutdown, session.CodeUnavailable:
		return http.StatusServiceUnavailable
	case session.CodeUnauthorized:
		return http.StatusUnauthorized
	case session.CodeRejected, session.CodeForbidden:
		return http.StatusForbidden
	case session.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case session.CodeRateLimited, session.CodeQuotaExceeded:
		return http.StatusTooManyRequests
	case session.CodeTaskFailed:
		return http.StatusUnprocessableEntity
	case session.CodeInterrupted:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// OpenOptions are the options of an in-process session.
type OpenOptions struct {
	Pool   string // "" for the default pool
	Wait   bool   // queue when no instance is free
	Remote string // shown in status and logs
	// HTTP is the request the session is opened for, if any: the connect
	// hooks see it and its query. When Labels is nil, the labels of its
	// query apply.
	HTTP *http.Request
	// Labels restrict placement to farms that carry them all.
	Labels map[string]string
}

// Open opens a session from Go without a socket (awv3's "virtual user"): the
// connect hooks run, the session is placed, and Execute runs tasks through
// the same middleware chain WebSocket clients use. Close it when done.
func (m *Manager) Open(ctx context.Context, opts OpenOptions) (*Session, error) {
	r := openRequest{opts: session.ConnectOptions{Pool: cmp.Or(opts.Pool, m.cfg.DefaultPool), Wait: opts.Wait,
		Labels: opts.Labels}, remote: opts.Remote, http: opts.HTTP}
	if opts.HTTP != nil {
		r.query = opts.HTTP.URL.Query()
		if opts.Labels == nil {
			q, err := session.ParseConnectOptions(r.query, session.ConnectOptions{})
			if err != nil {
				return nil, err
			}
			r.opts.Labels = q.Labels
		}
	}
	return m.openNow(ctx, r)
}

// Status is the JSON of /status. It holds no secret: no resume token, no
// REST key, no task data.
type Status struct {
	Version   string           `json:"version"`
	Uptime    float64          `json:"uptime_seconds"`
	Capacity  StatusCapacity   `json:"capacity"`
	Farms     []StatusFarm     `json:"farms"`
	Pools     []StatusPool     `json:"pools"`
	Instances []StatusInstance `json:"instances"`
	Sessions  []StatusSession  `json:"sessions"`
	Queue     []StatusWaiter   `json:"queue"`
	// Conversion is the conversion service's part: its job queue and the
	// farms' job slots (SetConversionStatus); absent without one.
	Conversion any `json:"conversion,omitempty"`
}

// StatusCapacity is the capacity part of Status.
type StatusCapacity struct {
	Slots     int     `json:"slots"`
	Busy      int     `json:"busy"`
	Idle      int     `json:"idle"`
	Starting  int     `json:"starting"`
	Ratio     float64 `json:"ratio"`
	Threshold float64 `json:"threshold,omitempty"` // with Rule "threshold"
	Healthy   bool    `json:"healthy"`
	// StoreDown: the shared state cannot be reached.
	StoreDown bool `json:"store_down,omitempty"`
	// Rule is what decides /health: "threshold" or "custom" (Config.Health).
	Rule string `json:"rule"`
}

// StatusFarm describes one farm.
type StatusFarm struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Slots int    `json:"slots"`
	Free  int    `json:"free"`
	// JobSlots are the conversion jobs the farm runs at once, as it
	// registered them.
	JobSlots int `json:"job_slots,omitempty"`
	// Live: the farm is on the books (a dead one is removed from them).
	Live bool `json:"live"`
	// Suspect: a start could not reach the farm, and it has not answered
	// since (by a heartbeat or a probe); it takes no sessions meanwhile.
	Suspect  bool              `json:"suspect,omitempty"`
	Draining bool              `json:"draining"`
	Remote   bool              `json:"remote"`
	Priority int               `json:"priority"`
	Labels   map[string]string `json:"labels,omitempty"`
	Pools    []string          `json:"pools"`
	LastSeen time.Time         `json:"last_seen"`
}

// StatusPool describes one pool.
type StatusPool struct {
	Name      string `json:"name"`
	Warm      int    `json:"warm"`
	Release   string `json:"release"`
	Instances int    `json:"instances"`
	Idle      int    `json:"idle"`
	Busy      int    `json:"busy"`
	Starting  int    `json:"starting"`
}

// StatusInstance describes one instance.
type StatusInstance struct {
	ID    string `json:"id"`
	Pool  string `json:"pool"`
	Farm  string `json:"farm"`
	State string `json:"state"`
	PID   int    `json:"pid,omitempty"`
	// Container is the short id of the instance's Docker container.
	Container string    `json:"container,omitempty"`
	Session   string    `json:"session"`
	Started   time.Time `json:"started"`
}

// StatusSession describes one session.
type StatusSession struct {
	ID            string  `json:"id"`
	User          string  `json:"user"`
	Pool          string  `json:"pool"`
	Instance      string  `json:"instance"`
	Age           float64 `json:"age_seconds"`
	TasksInFlight int     `json:"tasks_in_flight"`
	State         string  `json:"state"`
}

// StatusWaiter describes one queued session.
type StatusWaiter struct {
	Session  string  `json:"session"`
	Pool     string  `json:"pool"`
	Position int     `json:"position"`
	Waiting  float64 `json:"waiting_seconds"`
}

// Status reports the manager's state.
func (m *Manager) Status() Status {
	now := time.Now()
	st := Status{Version: m.cfg.Version, Uptime: now.Sub(m.started).Seconds(),
		Farms: []StatusFarm{}, Pools: []StatusPool{}, Instances: []StatusInstance{},
		Sessions: []StatusSession{}, Queue: []StatusWaiter{}}
	capa := m.place.Capacity()
	snap := m.place.Snapshot()
	for _, f := range snap.Farms {
		st.Farms = append(st.Farms, StatusFarm{ID: f.ID, Name: f.Name, Slots: f.Slots, Free: f.Free, Live: true,
			Suspect: f.Suspect, Draining: f.Draining, Remote: f.Remote, Priority: f.Priority, Labels: f.Labels,
			Pools: f.Pools, LastSeen: f.LastSeen, JobSlots: f.JobSlots})
	}
	for _, p := range snap.Pools {
		release := ReleaseKill
		if p.Reuse {
			release = ReleaseReuse
		}
		st.Pools = append(st.Pools, StatusPool{Name: p.Name, Warm: p.Warm, Release: release,
			Instances: p.Instances, Idle: p.Idle, Busy: p.Busy, Starting: p.Starting})
	}
	for _, in := range snap.Instances {
		st.Instances = append(st.Instances, StatusInstance{ID: in.ID, Pool: in.Pool, Farm: in.Farm, State: in.State,
			PID: in.PID, Container: in.Container, Session: in.Holder, Started: in.Started})
	}
	for _, w := range snap.Queue {
		st.Queue = append(st.Queue, StatusWaiter{Session: w.Holder, Pool: w.Pool, Position: w.Position,
			Waiting: now.Sub(w.Since).Seconds()})
	}
	code, _ := m.health(capa)
	st.Capacity = StatusCapacity{Slots: capa.Slots, Busy: capa.Busy, Idle: capa.Idle, Starting: capa.Starting,
		Ratio: capa.Ratio(), Rule: "threshold", Threshold: m.cfg.HealthThreshold, Healthy: healthyCode(code),
		StoreDown: capa.StoreDown}
	if m.cfg.Health != nil {
		st.Capacity.Rule, st.Capacity.Threshold = "custom", 0
	}
	for _, ss := range m.snapshotSessions() {
		ss.mu.Lock()
		state := ss.state
		ss.mu.Unlock()
		st.Sessions = append(st.Sessions, StatusSession{ID: ss.info.ID, User: ss.info.User, Pool: ss.info.Pool,
			Instance: ss.info.Instance, Age: now.Sub(ss.info.Created).Seconds(),
			TasksInFlight: int(ss.inFlight.Load()), State: state.String()})
	}
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].Age > st.Sessions[j].Age })
	return st
}

// PublicStatus is /status for callers who are not admins: the version,
// the capacity and whether the manager is healthy; no farm, instance,
// session or queue.
type PublicStatus struct {
	Version  string         `json:"version"`
	Uptime   float64        `json:"uptime_seconds"`
	Capacity StatusCapacity `json:"capacity"`
}

func (m *Manager) serveStatus(c *gin.Context) {
	st := m.Status()
	if !m.principal(c.Request).Admin() {
		c.JSON(http.StatusOK, PublicStatus{Version: st.Version, Uptime: st.Uptime, Capacity: st.Capacity})
		return
	}
	st.Conversion = m.conversionStatus(c.Request.Context())
	c.JSON(http.StatusOK, st)
}

// serveEvents streams the events of every manager sharing the store (farms
// added, removed and draining; sessions opened, ended, moved; slots freed)
// as server-sent events, for dashboards. Events hold ids, never secrets.
// Those are an admin's; a user gets only the other parts' events, which
// their sources scope to the user's principal in the request's context
// (the conversion service: the items of the user's tenant).
func (m *Manager) serveEvents(c *gin.Context) {
	var ch <-chan store.Event
	if auth.FromContext(c.Request.Context()).Admin() {
		watched, stop := m.shared.watch()
		defer stop()
		ch = watched
	}
	ctx, cancel := context.WithCancel(c.Request.Context())
	defer cancel()
	extra := m.extraEvents(ctx)
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	c.Status(http.StatusOK)
	c.Writer.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-m.shared.quiet:
			return
		case <-keepalive.C:
			_, _ = io.WriteString(c.Writer, ": keepalive\n\n")
		case e := <-ch:
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			_, _ = fmt.Fprintf(c.Writer, "event: %s\ndata: %s\n\n", e.Type, b)
		case e, ok := <-extra:
			if !ok {
				extra = nil
				continue
			}
			b, err := json.Marshal(e.Data)
			if err != nil {
				continue
			}
			_, _ = fmt.Fprintf(c.Writer, "event: %s\ndata: %s\n\n", e.Type, b)
		}
		c.Writer.Flush()
	}
}
