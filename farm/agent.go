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
	// registerTimeout bounds one registration or deregistration call.
	registerTimeout = 5 * time.Second
	// drainPoll is how often a draining farm looks whether it is empty.
	drainPoll = 50 * time.Millisecond
)

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
	// MaxDrain bounds a drain: instances still running after it are
	// stopped by whoever closes the farm (default 5 min).
	MaxDrain time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to reach a
	// manager that refuses or does not answer (250 ms, 5 s).
	RetryMin, RetryMax time.Duration
	// Client makes the calls to managers; nil means one of the agent's own,
	// whose idle connections are closed when Run returns.
	Client *http.Client
	// Logger receives the agent's log; nil discards.
	Logger *slog.Logger
}

// Agent keeps a farm registered with its managers: it registers with each
// (one goroutine per manager), sends heartbeats at the interval the manager
// asks for, registers again when a manager answers 404 (it restarted or
// declared the farm dead), and keeps retrying, with backoff, a manager it
// cannot reach. It drains the farm when asked (Drain, or a manager's
// heartbeat answer) and deregisters when it stops.
type Agent struct {
	cfg    AgentConfig
	f      *Farm
	log    *slog.Logger
	client *http.Client
	own    bool // client is ours to clean up
	header http.Header

	drainOnce sync.Once
	drainCh   chan struct{} // closed when the drain begins

	mu      sync.Mutex
	links   map[string]*link // by manager URL
	order   []*link
	runCtx  context.Context // set while Run runs; nil before and after
	wg      sync.WaitGroup  // link goroutines
	started bool
	stopped bool
}

// link is the agent's relation with one manager.
type link struct {
	url     string // base URL, no trailing slash
	display string // url with any password masked, for logs
	slots   int    // slots offered; 0 means all
	kick    chan struct{}

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
		client:  cfg.Client,
		drainCh: make(chan struct{}),
		links:   map[string]*link{},
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.client == nil {
		a.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		a.own = true
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
		first: make(chan struct{})}
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
	if a.own {
		a.client.CloseIdleConnections()
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
		if n == 0 && st.Free == st.Slots {
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
			code, err := a.call(ctx, http.MethodDelete, l.url+PathFarms+"/"+url.PathEscape(a.f.ID()), nil, nil)
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
		interval, err := a.register(ctx, l)
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
		a.heartbeats(ctx, l, interval)
		l.setRegistered(false)
	}
}

// heartbeats beats every interval until ctx ends or the manager no longer
// knows the farm.
func (a *Agent) heartbeats(ctx context.Context, l *link, interval time.Duration) {
	t := time.NewTimer(interval)
	defer t.Stop()
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
		}
		resp, code, err := a.heartbeat(ctx, l, interval)
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
				a.log.Warn("heartbeat failed, will keep trying", "manager", l.display, "err", err)
			}
			// Keep beating: a manager that comes back answers 404 and gets
			// a fresh registration. Slow down while it is away.
			t.Reset(a.backoff(fails))
			continue
		}
		if fails > 0 {
			a.log.Info("heartbeat answered again", "manager", l.display, "after_failures", fails)
			fails = 0
		}
		if resp.Drain {
			a.startDrain("manager " + l.display + " asked to drain")
		}
		t.Reset(interval)
	}
}

// offered is the number of slots a manager is offered.
func (a *Agent) offered(l *link) int {
	if l.slots > 0 {
		return min(l.slots, a.f.Slots())
	}
	return a.f.Slots()
}

func (a *Agent) register(ctx context.Context, l *link) (time.Duration, error) {
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
	}
	var resp RegisterResponse
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	if _, err := a.call(ctx, http.MethodPost, l.url+PathFarms, req, &resp); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.joined = true
	l.mu.Unlock()
	if resp.HeartbeatIntervalMS <= 0 {
		return defaultHeartbeatInterval, nil
	}
	return time.Duration(resp.HeartbeatIntervalMS) * time.Millisecond, nil
}

func (a *Agent) heartbeat(ctx context.Context, l *link, interval time.Duration) (HeartbeatResponse, int, error) {
	st := a.f.Status()
	hb := Heartbeat{Free: min(st.Free, a.offered(l)), Draining: st.Draining, Instances: st.Instances}
	var resp HeartbeatResponse
	// A beat later than a few intervals is worthless: the manager has
	// declared the farm dead by then.
	ctx, cancel := context.WithTimeout(ctx, max(2*interval, time.Second))
	defer cancel()
	code, err := a.call(ctx, http.MethodPost, l.url+PathFarms+"/"+url.PathEscape(st.ID)+"/heartbeat", hb, &resp)
	return resp, code, err
}

// call sends a JSON request with the token and decodes a JSON answer. Its
// errors name the method, path and status, never the token.
func (a *Agent) call(ctx context.Context, method, target string, body, out any) (int, error) {
	code, err := jsonhttp.Call(ctx, a.client, method, target, a.header, body, out)
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
