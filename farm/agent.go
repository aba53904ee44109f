package farm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/lib/bearer"

	"github.com/drover-dev/drover/internal/lib/jsonhttp"
)

// ErrAgentStopped is returned by AddManager once the agent's Run is over.
var ErrAgentStopped = errors.New("farm: agent stopped")

const (
	defaultMaxDrain          = 5 * time.Minute
	defaultRetryFirst        = 250 * time.Millisecond
	defaultRetryCap          = 5 * time.Second
	defaultHeartbeatInterval = time.Second
	// registerTimeout bounds one registration, its retry included, or one
	// deregistration.
	registerTimeout = 5 * time.Second
	// drainPoll is how often a draining farm looks whether it is empty.
	drainPoll = 50 * time.Millisecond
)

// Drainer is a part of the farm that a drain stops taking work and waits
// for: the job slots.
type Drainer interface {
	// Drain stops taking new work; idempotent.
	Drain()
	// Busy is the work still running.
	Busy() int
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	// Farm is the farm the agent reports. Required.
	Farm *Farm
	// Managers are the managers' base URLs (http://host:port). More can
	// join later through AddManager.
	Managers []string
	// Token is the farm token, sent as "Authorization: Bearer <token>".
	// Required; it never appears in logs or errors.
	Token string
	// AdvertiseURL is the farm's base URL as managers reach it
	// (http://host:port). Required.
	AdvertiseURL string
	Labels       map[string]string
	Priority     int
	// JobSlots is the farm's number of conversion job slots, told to
	// managers at registration (Jobs leases with them); 0 for none.
	JobSlots int
	// Jobs, when set, are the farm's job slots: a drain stops their
	// leasing and waits for their conversions too.
	Jobs Drainer
	// MaxDrain bounds a drain: instances still running after it are
	// stopped by whoever closes the farm (default 5 min).
	MaxDrain time.Duration
	// RetryMin and RetryMax bound the backoff between registration
	// attempts with a manager that refuses or does not answer (250 ms,
	// 5 s). Heartbeats do not back off: see Agent.
	RetryMin, RetryMax time.Duration
	// Client makes the calls to managers; nil means the agent's own, one
	// per manager, whose idle connections are closed when Run returns.
	// Before a call is retried on a new connection, the client's idle
	// connections are closed: a shared client loses them for every
	// manager.
	Client *http.Client
	// Logger receives the agent's log; nil discards.
	Logger *slog.Logger
}

// Agent keeps a farm registered with its managers: it registers with each
// (one goroutine per manager), sends heartbeats at the interval the manager
// asks for, registers again when a manager answers 404 (it restarted or
// declared the farm dead), and keeps retrying, with backoff, a manager it
// cannot register with. It stops at once the instances a registration's
// answer says the managers gave up on. It drains the farm when asked
// (Drain, or a manager's heartbeat answer) and deregisters when it stops.
//
// Heartbeats keep to their schedule, one every interval: a late beat is
// worthless, since managers judge a farm by the time since its last one.
// A beat waits half an interval for its answer. When it gets none, or a
// 5xx, it is sent again at once on a new connection, so that a load
// balancer in front of several managers sharing state (deploy/haproxy.cfg)
// sends it to another one than the manager that hung; the retry may take
// the rest of the interval. A stalled manager thus costs a beat half an
// interval, never the beat.
type Agent struct {
	cfg    AgentConfig
	f      *Farm
	log    *slog.Logger
	header http.Header

	drainOnce sync.Once
	drainCh   chan struct{} // closed when the drain begins

	mu      sync.Mutex
	links   map[string]*link // by manager URL
	order   []*link
	runCtx  context.Context // set while Run runs; nil before and after
	wg      sync.WaitGroup  // link goroutines, and the stops they start
	started bool
	stopped bool
}

// link is the agent's relation with one manager.
type link struct {
	url     string // base URL, no trailing slash
	display string // url with any password masked, for logs
	slots   int    // slots offered; 0 means all
	kick    chan struct{}
	// client calls the manager. The agent's own is the link's alone, so
	// that closing its idle connections before a retry costs no other
	// manager its connection.
	client *http.Client
	own    bool // client is ours to clean up

	mu         sync.Mutex
	registered bool
	first      chan struct{} // closed after the first registration attempt
	firstErr   error
	joined     bool // registered at least once: deregister at the end
}

// NewAgent checks cfg and returns an Agent; Run starts it.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Farm == nil {
		return nil, errors.New("farm: agent needs a farm")
	}
	if cfg.Token == "" {
		return nil, errors.New("farm: agent needs the farm token")
	}
	if err := checkBaseURL(cfg.AdvertiseURL); err != nil {
		return nil, fmt.Errorf("farm: advertise URL: %w", err)
	}
	cfg.MaxDrain = cmp.Or(cfg.MaxDrain, defaultMaxDrain)
	cfg.RetryMin = cmp.Or(cfg.RetryMin, defaultRetryFirst)
	cfg.RetryMax = max(cmp.Or(cfg.RetryMax, defaultRetryCap), cfg.RetryMin)
	a := &Agent{
		cfg:     cfg,
		f:       cfg.Farm,
		log:     cfg.Logger,
		drainCh: make(chan struct{}),
		links:   map[string]*link{},
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.header = bearer.Header(cfg.Token)
	a.header.Set("Content-Type", "application/json")
	for _, m := range cfg.Managers {
		if _, _, err := a.addLink(m, 0); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL") // url errors quote the input, which may hold a password
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s)://host:port URL", u.Redacted())
	}
	return nil
}

// addLink adds a manager, or returns the one already known by that URL.
func (a *Agent) addLink(raw string, slots int) (l *link, added bool, err error) {
	raw = strings.TrimRight(strings.TrimSpace(raw), "/")
	if err := checkBaseURL(raw); err != nil {
		return nil, false, fmt.Errorf("farm: manager URL: %w", err)
	}
	u, _ := url.Parse(raw)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil, false, ErrAgentStopped
	}
	if l := a.links[raw]; l != nil {
		return l, false, nil
	}
	l = &link{url: raw, display: u.Redacted(), slots: slots, kick: make(chan struct{}, 1),
		first: make(chan struct{}), client: a.cfg.Client}
	if l.client == nil {
		l.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		l.own = true
	}
	a.links[raw] = l
	a.order = append(a.order, l)
	return l, true, nil
}

// AddManager registers the farm with one more manager, offering it slots
// instance slots (0: all), and waits until the first registration attempt
// is over or ctx ends; the agent keeps trying after a failure, like for the
// managers it was configured with. A manager already known is left as it
// is. It serves awv3's /require: see RequireFunc.
func (a *Agent) AddManager(ctx context.Context, managerURL string, slots int) (registered bool, err error) {
	l, added, err := a.addLink(managerURL, slots)
	if err != nil {
		return false, err
	}
	if added {
		a.mu.Lock()
		if a.runCtx != nil {
			a.startLinkLocked(l)
		}
		a.mu.Unlock()
		a.log.Info("manager added", "manager", l.display, "slots", slots)
	}
	select {
	case <-l.first:
	case <-ctx.Done():
		return false, nil // still trying
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.registered, l.firstErr
}

// Managers are the base URLs of the managers the agent knows, in the order
// they were added: where the farm's job slots lease jobs.
func (a *Agent) Managers() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, len(a.order))
	for i, l := range a.order {
		out[i] = l.url
	}
	return out
}

func (a *Agent) startLinkLocked(l *link) {
	ctx := a.runCtx
	a.wg.Go(func() { a.runLink(ctx, l) })
}

// Drain starts draining the farm: it takes no new instances, tells every
// manager so, and Run returns once the farm is empty or MaxDrain passed.
// Idempotent; safe before Run.
func (a *Agent) Drain() { a.startDrain("asked to drain") }

func (a *Agent) startDrain(why string) {
	a.drainOnce.Do(func() {
		a.f.Drain()
		if a.cfg.Jobs != nil {
			a.cfg.Jobs.Drain()
		}
		close(a.drainCh)
		a.log.Info("farm draining", "farm", a.f.ID(), "reason", why, "instances", len(a.f.Instances()),
			"max_drain", a.cfg.MaxDrain)
		a.mu.Lock()
		for _, l := range a.order {
			select { // tell the managers now, not at the next beat
			case l.kick <- struct{}{}:
			default:
			}
		}
		a.mu.Unlock()
	})
}

// Draining reports whether the agent is draining the farm.
func (a *Agent) Draining() bool {
	select {
	case <-a.drainCh:
		return true
	default:
		return false
	}
}

// Run keeps the farm registered until ctx ends or a drain completes, then
// deregisters from every manager and returns nil. Closing the farm is left
// to the caller, after Run: instances still running then (a drain that hit
// MaxDrain, or ctx ended) are the caller's to stop. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("farm: agent already ran")
	}
	a.started = true
	linkCtx, stopLinks := context.WithCancel(ctx)
	defer stopLinks()
	a.runCtx = linkCtx
	for _, l := range a.order {
		a.startLinkLocked(l)
	}
	n := len(a.order)
	a.mu.Unlock()
	if n == 0 {
		a.log.Info("no manager configured: waiting for a manager to call /require")
	}

	select {
	case <-ctx.Done():
	case <-a.drainCh:
		a.awaitDrained(ctx)
	}

	// Links stop before deregistering, so that no heartbeat after the
	// deregistration makes a manager ask the farm to register again.
	stopLinks()
	a.mu.Lock()
	a.stopped = true
	a.runCtx = nil
	links := a.order
	a.mu.Unlock()
	a.wg.Wait()
	a.deregisterAll(links)
	for _, l := range links {
		if l.own {
			l.client.CloseIdleConnections()
		}
	}
	a.log.Info("farm agent stopped", "farm", a.f.ID())
	return nil
}

// awaitDrained waits until the farm holds no slot (no instance, no start
// under way), MaxDrain passes or ctx ends.
func (a *Agent) awaitDrained(ctx context.Context) {
	deadline := time.NewTimer(a.cfg.MaxDrain)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		st := a.f.Status()
		n := len(st.Instances)
		busy := 0
		if a.cfg.Jobs != nil {
			busy = a.cfg.Jobs.Busy()
		}
		if n == 0 && st.Free == st.Slots && busy == 0 {
			a.log.Info("farm drained", "farm", a.f.ID())
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			a.log.Warn("drain took longer than allowed, stopping the remaining instances",
				"farm", a.f.ID(), "instances", n, "max_drain", a.cfg.MaxDrain)
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) deregisterAll(links []*link) {
	var wg sync.WaitGroup
	for _, l := range links {
		l.mu.Lock()
		joined := l.joined
		l.mu.Unlock()
		if !joined {
			continue // never reached it
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
			defer cancel()
			code, err := a.call(ctx, l, http.MethodDelete, l.url+PathFarms+"/"+url.PathEscape(a.f.ID()), nil, nil)
			switch {
			case err == nil:
				a.log.Info("deregistered from manager", "manager", l.display)
			case code == http.StatusNotFound:
				a.log.Debug("manager did not know the farm any more", "manager", l.display)
			default:
				a.log.Warn("deregister from manager", "manager", l.display, "err", err)
			}
		})
	}
	wg.Wait()
}

// runLink registers with one manager and sends heartbeats until ctx ends.
func (a *Agent) runLink(ctx context.Context, l *link) {
	var fails int
	var lastErr string
	for ctx.Err() == nil {
		if a.Draining() {
			// A draining farm takes no new sessions: no (re)registration.
			l.reportFirst(false, nil)
			<-ctx.Done()
			return
		}
		interval, stop, err := a.register(ctx, l)
		if ctx.Err() != nil {
			l.reportFirst(false, nil)
			return
		}
		if err != nil {
			l.reportFirst(false, err)
			fails++
			// Say it once per kind of failure, not at every retry.
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				a.log.Warn("cannot register with manager, will keep trying", "manager", l.display, "err", err)
			}
			if !sleepCtx(ctx, a.backoff(fails)) {
				return
			}
			continue
		}
		fails, lastErr = 0, ""
		l.setRegistered(true)
		l.reportFirst(true, nil)
		a.log.Info("registered with manager", "manager", l.display, "farm", a.f.ID(),
			"slots", a.offered(l), "heartbeat", interval)
		a.stopGivenUp(ctx, l, stop)
		a.heartbeats(ctx, l, interval)
		l.setRegistered(false)
	}
}

// heartbeats beats every interval until ctx ends or the manager no longer
// knows the farm. Beats keep to their schedule, failed or not: the next is
// due one interval after the last was, and each must be over by then.
func (a *Agent) heartbeats(ctx context.Context, l *link, interval time.Duration) {
	t := time.NewTimer(interval)
	defer t.Stop()
	due := time.Now().Add(interval)
	var fails int
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			due = time.Now()
		}
		next := due.Add(interval)
		if now := time.Now(); next.Sub(now) < interval/2 {
			// This beat is late (the process was paused, or the machine
			// is overloaded): it still gets half an interval or more.
			next = now.Add(interval)
		}
		resp, code, err := a.heartbeat(ctx, l, interval, next)
		switch {
		case ctx.Err() != nil:
			return
		case code == http.StatusNotFound || code == http.StatusUnauthorized:
			// It restarted, declared the farm dead, or was given another
			// token: start over.
			a.log.Info("manager does not know the farm, registering again", "manager", l.display, "status", code)
			return
		case err != nil:
			fails++
			if fails == 1 {
				a.log.Warn("heartbeat failed, will keep beating", "manager", l.display, "err", err)
			}
			// A manager that comes back answers 404 and gets a fresh
			// registration.
		default:
			if fails > 0 {
				a.log.Info("heartbeat answered again", "manager", l.display, "after_failures", fails)
				fails = 0
			}
			if resp.Drain {
				a.startDrain("manager " + l.display + " asked to drain")
			}
		}
		due = next
		t.Reset(time.Until(due))
	}
}

// offered is the number of slots a manager is offered.
func (a *Agent) offered(l *link) int {
	if l.slots > 0 {
		return min(l.slots, a.f.Slots())
	}
	return a.f.Slots()
}

// managerCount is how many managers the farm registers with.
func (a *Agent) managerCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.order)
}

// register registers the farm with the manager of l and returns the
// heartbeat interval it asks for and the instances it gave up on.
func (a *Agent) register(ctx context.Context, l *link) (time.Duration, []string, error) {
	st := a.f.Status()
	req := RegisterRequest{
		ID:        st.ID,
		Name:      cmp.Or(st.Name, st.ID),
		URL:       a.cfg.AdvertiseURL,
		Labels:    a.cfg.Labels,
		Priority:  a.cfg.Priority,
		Slots:     a.offered(l),
		JobSlots:  a.cfg.JobSlots,
		Pools:     st.Pools,
		Instances: st.Instances,
		Managers:  a.managerCount(),
	}
	var resp RegisterResponse
	// A registration is as harmless to repeat as a heartbeat: one that a
	// stalled manager holds is sent again, to whichever answers.
	deadline := time.Now().Add(registerTimeout)
	if _, err := a.callRetry(ctx, l, http.MethodPost, l.url+PathFarms, req, &resp, registerTimeout/2, deadline); err != nil {
		return 0, nil, err
	}
	l.mu.Lock()
	l.joined = true
	l.mu.Unlock()
	if resp.HeartbeatIntervalMS <= 0 {
		return defaultHeartbeatInterval, resp.Stop, nil
	}
	return time.Duration(resp.HeartbeatIntervalMS) * time.Millisecond, resp.Stop, nil
}

// stopGivenUp stops, at once, the instances the managers gave up on while
// the farm was out of touch: their sessions were told instance_lost, and
// their slots must be free when the managers count them free. Each is
// marked stopping (and sent its stop signal) before stopGivenUp returns,
// so no heartbeat reports it ready or its slot free; once they are all
// gone the link beats at once, so that the freed slots are offered without
// waiting for the next beat.
func (a *Agent) stopGivenUp(ctx context.Context, l *link, ids []string) {
	var stopping []*instance
	for _, id := range ids {
		inst, err := a.f.beginStop(id)
		if err != nil {
			continue // gone already (ErrNotFound): nothing to stop
		}
		stopping = append(stopping, inst)
	}
	if len(stopping) == 0 {
		return
	}
	a.log.Info("stopping the instances the managers gave up on", "manager", l.display, "instances", len(stopping))
	// The link goroutine that calls this is counted in a.wg: Run waits
	// for these stops too.
	a.wg.Go(func() {
		var wg sync.WaitGroup
		for _, inst := range stopping {
			wg.Go(func() {
				// The farm's stop grace, not ctx, bounds the stop: an agent
				// that stops is no reason to kill them harder.
				if err := a.f.awaitStop(context.WithoutCancel(ctx), inst); err != nil {
					a.log.Warn("stop an instance the managers gave up on", "instance", inst.id, "err", err)
				}
			})
		}
		wg.Wait()
		select {
		case l.kick <- struct{}{}:
		default:
		}
	})
}

// heartbeat sends one beat, which must be over by deadline.
func (a *Agent) heartbeat(ctx context.Context, l *link, interval time.Duration, deadline time.Time) (HeartbeatResponse, int, error) {
	st := a.f.Status()
	hb := Heartbeat{Free: min(st.Free, a.offered(l)), Draining: st.Draining, Instances: st.Instances}
	var resp HeartbeatResponse
	code, err := a.callRetry(ctx, l, http.MethodPost, l.url+PathFarms+"/"+url.PathEscape(st.ID)+"/heartbeat", hb, &resp,
		interval/2, deadline)
	return resp, code, err
}

// callRetry makes a call that a manager may hold without answering (it is
// stopped or paused, or a load balancer sent the call to one that is). The
// first attempt gets first. If it gets no answer or a 5xx, the call is
// made again at once on a new connection, which a load balancer may send
// to another manager, until deadline. Calls that can be repeated without
// harm only: registrations and heartbeats.
func (a *Agent) callRetry(ctx context.Context, l *link, method, target string, body, out any,
	first time.Duration, deadline time.Time) (int, error) {
	end := time.Now().Add(first)
	if deadline.Before(end) {
		end = deadline
	}
	actx, cancel := context.WithDeadline(ctx, end)
	code, err := a.call(actx, l, method, target, body, out)
	cancel()
	if err == nil || (code != 0 && code < 500) || ctx.Err() != nil || !time.Now().Before(deadline) {
		return code, err
	}
	// A call cut off by its timeout has its connection closed; closing the
	// idle ones makes sure the retry does not reuse one to the manager that
	// failed, and it keeps the new connection if that one answers.
	l.client.CloseIdleConnections()
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	code2, err2 := a.call(rctx, l, method, target, body, out)
	if err2 != nil {
		return code2, fmt.Errorf("%w (retried on a new connection after: %v)", err2, err) //nolint:errorlint // the first failure is context; callers match the retry's
	}
	return code2, nil
}

// call sends a JSON request with the token and decodes a JSON answer. Its
// errors name the method, path and status, never the token.
func (a *Agent) call(ctx context.Context, l *link, method, target string, body, out any) (int, error) {
	code, err := jsonhttp.Call(ctx, l.client, method, target, a.header, body, out)
	if se := (*jsonhttp.StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusUnauthorized {
		se.Message = "the manager refused the farm token"
	}
	return code, err
}

// backoff is the wait before retry number n (1-based): doubling from
// RetryMin up to RetryMax, with jitter so that farms restarted together do
// not call in lockstep.
func (a *Agent) backoff(n int) time.Duration {
	d := a.cfg.RetryMin
	for i := 1; i < n && d < a.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, a.cfg.RetryMax)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

func (l *link) setRegistered(v bool) {
	l.mu.Lock()
	l.registered = v
	if v {
		l.joined = true
	}
	l.mu.Unlock()
}

// reportFirst records the outcome of the first registration attempt.
func (l *link) reportFirst(ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.first:
		return
	default:
	}
	l.registered = ok
	l.firstErr = err
	close(l.first)
}

// sleepCtx sleeps d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
