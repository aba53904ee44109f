// Package manager is drover's public server: the client WebSocket endpoint,
// the awv3-compatible REST routes, the farm API, health and status, and
// the sessions themselves: their tasks through the middleware chain to
// their instances, resume, timeouts and hand-off between managers.
//
// Where a session's instance runs is package placement's business: the
// farm registry, slots, warm pools and the wait queue. The manager hands
// it each session as a placement.Holder and its own instance connection
// as the dial function; the task path runs on that connection and never
// enters placement. Farms in the manager's process are added with
// AddFarm; remote farms register over the farm API, whose wire types are
// package farmapi's (the manager does not import the farm agent). It does
// not run instance processes (package farm does). gin is the HTTP edge;
// the session and task logic works on plain Go types and can be driven
// in-process with Open.
package manager

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/httpguard"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/placement"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/store"
)

// Release policies of a pool.
const (
	ReleaseKill  = "kill"  // stop the instance when its session ends; a fresh one takes the slot
	ReleaseReuse = "reuse" // reset it (see Pool.Reset) and return it to the idle pool
)

// ResetNone is the Pool.Reset of a reuse pool whose instances go back to the
// idle pool as their last session left them.
const ResetNone = "none"

// Pool is the manager's policy for one pool of instances. How instances are
// started is the farm's business (farm.PoolSpec).
type Pool struct {
	Name string `koanf:"name"`
	// Warm is how many idle instances to keep ready.
	Warm int `koanf:"warm"`
	// Release is ReleaseKill (default) or ReleaseReuse.
	Release string `koanf:"release"`
	// Reset says how a ReleaseReuse pool clears an instance between
	// sessions, and is required for one (it is refused with ReleaseKill,
	// whose instances are never handed on). It is the data of a task sent
	// to the instance outside any session, which must answer done once the
	// previous session's state is gone; an error, a timeout (TaskTimeout)
	// or a broken connection kills the instance instead. Give it as the
	// config file does, a map ({command: reset} for the reference worker),
	// or as any value encoding/json marshals to the task data, such as a
	// json.RawMessage. Or ResetNone: no reset, so the next session sees
	// what the previous one left.
	Reset any `koanf:"reset"`
	// TaskTimeout bounds one task (default 60 s).
	TaskTimeout time.Duration `koanf:"task_timeout"`
	// QueueTimeout bounds the wait for an instance (default 60 s).
	QueueTimeout time.Duration `koanf:"queue_timeout"`
	// IdleTimeout ends a session without tasks for this long (0: never).
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// MaxLifetime ends a session this long after it began (0: never).
	MaxLifetime time.Duration `koanf:"max_lifetime"`

	// resetTask is Reset as JSON task data, nil without a reset task; set
	// by Config.defaults.
	resetTask []byte
}

func (p *Pool) defaults() {
	if p.Release == "" {
		p.Release = ReleaseKill
	}
	if p.TaskTimeout <= 0 {
		p.TaskTimeout = 60 * time.Second
	}
	if p.QueueTimeout <= 0 {
		p.QueueTimeout = 60 * time.Second
	}
}

// checkReset checks Reset against Release and keeps the reset task as JSON.
// A reuse pool must say how it resets, even if it is "none": reusing
// instances as they are hands one user's state to the next, which nobody
// should get by leaving a key out.
func (p *Pool) checkReset() error {
	p.resetTask = nil
	if p.Reset == nil {
		if p.Release == ReleaseReuse {
			return fmt.Errorf("release: reuse needs a reset: the task that clears an instance between sessions "+
				"(for the reference worker, reset: {command: reset}), or reset: %s to hand each session "+
				"the state the previous one left", ResetNone)
		}
		return nil
	}
	if p.Release != ReleaseReuse {
		return fmt.Errorf("reset applies to release: %s only; with release: %s each session gets a fresh instance",
			ReleaseReuse, p.Release)
	}
	v := p.Reset
	switch r := v.(type) {
	case string:
		if r == ResetNone {
			return nil
		}
		return fmt.Errorf("reset must be %s or the data of a reset task, such as {command: reset}, "+
			"not the string %q (in YAML write the task unquoted; in Go give a map or a json.RawMessage)", ResetNone, r)
	case []byte:
		// Bytes are JSON here, not a base64 string.
		v = json.RawMessage(r)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("reset: the task data is not JSON: %w", err)
	}
	if string(b) == "null" {
		return fmt.Errorf("reset: the task data is null; use reset: %s for no reset", ResetNone)
	}
	p.resetTask = b
	return nil
}

// Config configures a Manager. The zero value of each field means its default.
type Config struct {
	// Pools are the pools sessions may ask for; the first is the default
	// unless DefaultPool names another.
	Pools       []Pool
	DefaultPool string
	// HealthThreshold is the busy ratio at which /health answers 503 (0.9),
	// unless Health replaces that rule.
	HealthThreshold float64
	// Health, when set, replaces the rule of /health: given the capacity,
	// it returns the status code (0 means 200) and the body, written as
	// JSON (nil: drover's usual body). It changes /health only, which is
	// what load balancers see: placement and the wait queue go on as
	// before. While the shared state is unreachable /health answers 503
	// without asking it. /status shows rule "custom" instead of the
	// threshold, and whether the hook's code is 2xx or 3xx as healthy.
	Health func(Capacity) (status int, body any)
	// ResumeGrace is how long a dropped session stays resumable (30 s).
	ResumeGrace time.Duration
	// MaxMessageSize bounds a client message (4 MiB); larger ones close the
	// connection with 1009.
	MaxMessageSize int64
	// MaxInstanceMessage bounds a message from an instance (64 MiB).
	MaxInstanceMessage int64
	// WriteTimeout bounds one write to a client (10 s).
	WriteTimeout time.Duration
	// JanitorInterval is how often idle and lifetime limits are checked (1 s).
	JanitorInterval time.Duration
	// AllowedOrigins are the browser origins, besides the manager's own,
	// that may open WebSockets and send requests other than GET and HEAD
	// (scheme://host[:port]); "*" admits any, and only when stated. They
	// get CORS headers. Requests without an Origin header (not from a
	// browser) are not affected.
	AllowedOrigins []string
	// CheckOrigin, when set, decides instead of AllowedOrigins which
	// origins may open a WebSocket.
	CheckOrigin func(*http.Request) bool
	// Auth says who sends a request (package auth: JWTs, API keys, the
	// admin token). nil means protected mode: callers on this machine are
	// users, and admins while AdminToken is empty; the AdminToken makes
	// an admin; nobody else is admitted.
	Auth auth.RequestAuthenticator
	// MetricsToken, when set, puts /metrics behind this bearer token (or
	// an admin's credential); empty leaves /metrics open.
	MetricsToken string
	Logger       *slog.Logger
	// AuditLogger gets the audit lines (msg "audit"): sessions started and
	// ended, requests refused. nil means Logger with component "audit".
	AuditLogger *slog.Logger
	// FarmToken admits farms to the registry API (and is what the manager
	// shows farms); empty disables remote farms.
	FarmToken string
	// AdminToken admits administrative calls such as draining a farm.
	AdminToken string
	// FarmTLS configures the wss connections to farms on other machines
	// (farms advertising https URLs): its roots verify the farm, its
	// client certificate is shown. nil: the system's roots.
	FarmTLS *tls.Config
	// RequireFarmCert makes the farm API refuse requests that came over a
	// connection without a verified client certificate, on top of the
	// farm token. The listener must ask for one: a TLS listener with
	// ClientAuth tls.VerifyClientCertIfGiven and the farms' CAs.
	RequireFarmCert bool
	// HeartbeatInterval is what farms are told to use (1 s); a farm silent
	// for MissedHeartbeats intervals (3) is dead.
	HeartbeatInterval time.Duration
	MissedHeartbeats  int
	Registerer        prometheus.Registerer
	Gatherer          prometheus.Gatherer
	Version           string
	// Store is the state the manager shares with other managers: farms,
	// reservations, resumable sessions and events. nil means an in-memory
	// store of its own (one manager). The caller closes it.
	Store store.Store
	// ID names the manager in the store; empty means the host name plus a
	// random suffix. It must differ between managers sharing a store.
	ID string
	// HandOffOnShutdown: Shutdown leaves placed sessions to the other
	// managers sharing the store instead of ending them. Clients are
	// closed with 1012 (service restart) and resume through any manager
	// within the resume grace; their instances keep running.
	HandOffOnShutdown bool
	// Limits are the quotas and rate limits of sessions and tasks per
	// user and per address (package limits); the zero value limits
	// nothing. Concurrent sessions are counted per manager.
	Limits limits.Config
	// HTTP bounds the connections of the server Serve runs: header,
	// body-pace and idle timeouts, a header size (httpguard.Timeouts;
	// zero fields take its defaults).
	HTTP HTTPTimeouts
	// MaxBodyBytes bounds a request body on routes that set no bound of
	// their own (64 KiB); REST's /execute takes MaxMessageSize and the
	// conversion API its upload limit.
	MaxBodyBytes int64
	// TrustedProxies are the load balancers in front of the manager
	// (addresses or CIDR prefixes): behind them, a client's address is
	// the last one of X-Forwarded-For they did not add, for the limits
	// per address, the audit lines and /status. Without them, the peer's
	// address counts and the header is ignored. Authentication never
	// trusts the header: a forwarded request is not from this machine.
	TrustedProxies []string
}

// HTTPTimeouts are the limits of an HTTP server's connections.
type HTTPTimeouts = httpguard.Timeouts

func (c *Config) defaults() error {
	if len(c.Pools) == 0 {
		return errors.New("manager: no pools configured")
	}
	seen := map[string]bool{}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.Name == "" {
			return errors.New("manager: a pool has no name")
		}
		if seen[p.Name] {
			return fmt.Errorf("manager: pool %q configured twice", p.Name)
		}
		seen[p.Name] = true
		if p.Release != "" && p.Release != ReleaseKill && p.Release != ReleaseReuse {
			return fmt.Errorf("manager: pool %q: release must be %q or %q", p.Name, ReleaseKill, ReleaseReuse)
		}
		p.defaults()
		if err := p.checkReset(); err != nil {
			return fmt.Errorf("manager: pool %q: %w", p.Name, err)
		}
	}
	if c.DefaultPool == "" {
		c.DefaultPool = c.Pools[0].Name
	}
	if !seen[c.DefaultPool] {
		return fmt.Errorf("manager: default pool %q is not configured", c.DefaultPool)
	}
	if c.HealthThreshold <= 0 {
		c.HealthThreshold = 0.9
	}
	if c.ResumeGrace <= 0 {
		c.ResumeGrace = 30 * time.Second
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 4 << 20
	}
	if c.MaxInstanceMessage <= 0 {
		c.MaxInstanceMessage = 64 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.JanitorInterval <= 0 {
		c.JanitorInterval = time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.MissedHeartbeats <= 0 {
		c.MissedHeartbeats = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Auth == nil {
		// Protected mode: no JWT keys, no API keys.
		var admins []string
		if c.AdminToken != "" {
			admins = []string{c.AdminToken}
		}
		a, err := auth.New(auth.Config{AdminTokens: admins, Logger: c.Logger})
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		c.Auth = a
	}
	if c.AuditLogger == nil {
		c.AuditLogger = c.Logger.With("component", "audit")
	}
	if c.Registerer == nil {
		reg := prometheus.NewRegistry()
		c.Registerer, c.Gatherer = reg, reg
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Store == nil {
		c.Store = store.NewMemory()
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = cmp.Or(host, "manager") + "-" + newID()[:6]
	}
	return nil
}

// Manager is drover's manager. Make one with New, add farms, serve its
// Handler, and Shutdown it.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	place   *placement.Placer
	pools   pools
	shared  *shared
	router  *gin.Engine
	upgrade *websocket.Upgrader
	// auditLog gets the audit lines; origins is the origin policy.
	auditLog *slog.Logger
	origins  origins
	proxies  []netip.Prefix // Config.TrustedProxies
	// relays for stream sessions: to in-process farms' instances, and to
	// remote farms with the farm token.
	relay, farmRelay *proxy.Relay
	started          time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// limits applies Config.Limits and limited counts its refusals; nil
	// when it limits nothing.
	limits  *limits.Limits
	limited *limitMetrics

	chain           middleware.Chain
	connectHooks    []middleware.ConnectHook
	disconnectHooks []middleware.DisconnectHook

	mu       sync.Mutex
	sessions map[string]*Session // by session id
	tokens   map[string]*Session // by resume token
	restKeys map[string]*Session // by REST id
	conns    map[*clientConn]struct{}
	closing  bool
	// poller watches quiet client connections (quiet.go); nil until the
	// first one, and where there is none.
	pollOnce sync.Once
	poller   *readPoller

	// extMu guards the other parts' additions to /events and /status.
	extMu      sync.Mutex
	sources    []EventSource
	convStatus func(context.Context) any

	// idleEndHook, set by tests, runs when the janitor has found a session
	// idle and before it ends it.
	idleEndHook atomic.Pointer[func(*session.Info)]
}

// New makes a Manager. It starts its janitor; call Shutdown to stop it.
func New(cfg Config) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	orig, err := newOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	proxies, err := parseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		proxies:  proxies,
		cfg:      cfg,
		log:      cfg.Logger,
		auditLog: cfg.AuditLogger,
		origins:  orig,
		started:  time.Now(),
		sessions: map[string]*Session{},
		tokens:   map[string]*Session{},
		restKeys: map[string]*Session{},
		conns:    map[*clientConn]struct{}{},
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	m.metrics = met
	if cfg.Limits.Enabled() {
		m.limits = limits.New(cfg.Limits)
		if m.limited, err = newLimitMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.shared = newShared(sharedDeps{st: cfg.Store, id: cfg.ID, log: cfg.Logger, ctx: m.ctx,
		resumeGrace: cfg.ResumeGrace, dropped: met.eventsDropped,
		resumable: m.resumableSessions, movedAway: m.movedAway})
	pcfg := placement.Config{Store: cfg.Store, ID: cfg.ID, FarmToken: cfg.FarmToken,
		HeartbeatInterval: cfg.HeartbeatInterval, MissedHeartbeats: cfg.MissedHeartbeats,
		Dial: m.dial, Attach: m.attach, Publish: m.shared.publish, Resync: m.shared.resyncSessions,
		Logger: cfg.Logger, Registerer: cfg.Registerer}
	if cfg.FarmTLS != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = cfg.FarmTLS
		pcfg.FarmClient = &http.Client{Transport: t}
	}
	m.pools.m = map[string]*poolState{}
	for _, p := range cfg.Pools {
		pcfg.Pools = append(pcfg.Pools, m.placementPool(p))
		m.pools.m[p.Name] = &poolState{cfg: p, metrics: met.forPool(p.Name)}
	}
	if m.place, err = placement.New(pcfg); err != nil {
		return nil, err
	}
	m.shared.place = m.place
	m.upgrade = m.upgrader()
	rlog := cfg.Logger.With("component", "relay")
	m.relay = proxy.New(proxy.Options{Logger: rlog})
	m.farmRelay = proxy.New(proxy.Options{Logger: rlog,
		Header: bearer.Header(cfg.FarmToken), TLS: cfg.FarmTLS})
	m.router = m.routes()
	m.place.Start()
	m.goTracked(m.janitor)
	m.goTracked(m.shared.reconciler)
	m.goTracked(m.shared.listen)
	m.goTracked(m.shared.publisher)
	return m, nil
}

// Use appends middleware to the task chain. Call it before serving.
func (m *Manager) Use(mw ...middleware.Middleware) {
	m.chain = append(m.chain, mw...)
}

// OnConnect adds connect hooks; they run in order before placement.
func (m *Manager) OnConnect(h ...middleware.ConnectHook) {
	m.connectHooks = append(m.connectHooks, h...)
}

// OnDisconnect adds disconnect hooks.
func (m *Manager) OnDisconnect(h ...middleware.DisconnectHook) {
	m.disconnectHooks = append(m.disconnectHooks, h...)
}

// AddFarm makes the slots of a farm in this process available for
// placement. Other managers sharing the store count its slots but cannot
// reach it. The manager dials its instances at their own addresses, which
// only native instances have; a farm that also runs stdio, dial or stream
// pools must serve them behind its port (ViaFarm): package drover sets
// that up.
func (m *Manager) AddFarm(f Farm) { m.place.AddFarm(f) }

// ID is the manager's id in the shared state.
func (m *Manager) ID() string { return m.shared.id }

// InstanceExited is the farm's callback for an instance that exited on its
// own (farm.Config.OnExit).
func (m *Manager) InstanceExited(inst farmapi.Instance, err error) {
	m.place.InstanceExited(inst.ID, err)
}

// Placement is the manager's placement: its farm registry, instances and
// queue. Sessions are placed through it; other holders (jobs) may be too.
func (m *Manager) Placement() *placement.Placer { return m.place }

// Router is the gin engine serving drover's routes; an application may add
// its own routes to it.
func (m *Manager) Router() *gin.Engine { return m.router }

// Handler is the HTTP handler to serve.
func (m *Manager) Handler() http.Handler { return m.router }

// Capacity reports slots and how many are busy.
func (m *Manager) Capacity() Capacity { return m.place.Capacity() }

func (m *Manager) goTracked(fn func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
}

func (m *Manager) addSession(s *Session) {
	m.mu.Lock()
	m.sessions[s.info.ID] = s
	m.tokens[s.token] = s
	if s.restKey != "" {
		m.restKeys[s.restKey] = s
	}
	m.mu.Unlock()
	m.metrics.sessions.Inc()
}

func (m *Manager) removeSession(s *Session) {
	m.mu.Lock()
	_, ok := m.sessions[s.info.ID]
	if ok && m.sessions[s.info.ID] == s {
		delete(m.sessions, s.info.ID)
		delete(m.tokens, s.token)
		if s.restKey != "" {
			delete(m.restKeys, s.restKey)
		}
	}
	m.mu.Unlock()
	if ok {
		m.metrics.sessions.Dec()
	}
}

func (m *Manager) sessionByToken(tok string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokens[tok]
}

func (m *Manager) sessionByID(id string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[id]
}

// shareSession makes a placed WebSocket session resumable through any
// manager sharing the store.
func (m *Manager) shareSession(s *Session) {
	m.mu.Lock()
	if m.sessions[s.info.ID] != s {
		m.mu.Unlock()
		return // it ended meanwhile
	}
	s.tokenHash = tokenHash(boundSecret(s.secret(), s.owner))
	m.mu.Unlock()
	m.shared.putSession(s)
}

// sharedHash is the session's token hash in the store; empty when the
// session is not recorded there.
func (m *Manager) sharedHash(s *Session) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return s.tokenHash
}

// movedAway lets go of a session another manager resumed.
func (m *Manager) movedAway(id, to string) {
	if s := m.sessionByID(id); s != nil {
		s.handOff(to)
	}
}

// resumableSessions are the sessions other managers may resume: WebSocket
// sessions bound to an instance and recorded in the store.
func (m *Manager) resumableSessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Session
	for _, s := range m.sessions {
		if s.tokenHash != "" {
			out = append(out, s)
		}
	}
	return out
}

func (m *Manager) trackConn(c *clientConn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Manager) untrackConn(c *clientConn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

func (m *Manager) snapshotSessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	return out
}

// janitor ends sessions past their idle timeout or lifetime.
func (m *Manager) janitor() {
	t := time.NewTicker(m.cfg.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			m.limits.Sweep()
			for _, s := range m.snapshotSessions() {
				s.mu.Lock()
				placed := s.state == sessActive || s.state == sessDetached
				s.mu.Unlock()
				if !placed {
					continue // queued: the queue timeout applies, not these
				}
				p := s.pool.cfg
				if p.MaxLifetime > 0 && now.Sub(s.boundAt) > p.MaxLifetime {
					s.end(session.DisconnectMaxLifetime)
					continue
				}
				idle := now.Sub(time.Unix(0, s.lastActive.Load()))
				if p.IdleTimeout > 0 && s.inFlight.Load() == 0 && idle > p.IdleTimeout {
					if hook := m.idleEndHook.Load(); hook != nil {
						(*hook)(&s.info)
					}
					// A task may have come in since: it is answered too.
					s.end(session.DisconnectIdleTimeout)
				}
			}
		}
	}
}

// Shutdown ends every session (clients get close 1001), stops placement
// and waits for the manager's goroutines, bounded by ctx. Instances bound
// to sessions are stopped; farms are the caller's to close. A second call
// finds nothing left to end and returns once the first is done.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.place.Close()
	for _, s := range m.snapshotSessions() {
		if m.cfg.HandOffOnShutdown && m.sharedHash(s) != "" {
			s.leave()
			continue
		}
		s.end(session.DisconnectShutdown)
	}
	m.shared.leave()
	m.mu.Lock()
	for c := range m.conns {
		c.close(session.DisconnectShutdown)
	}
	poller := m.poller
	m.mu.Unlock()
	if poller != nil {
		poller.close() // the closes above have taken every quiet connection out
	}
	m.shared.hush()
	relayErr := errors.Join(m.relay.Shutdown(ctx), m.farmRelay.Shutdown(ctx))
	m.cancel()
	done := make(chan struct{})
	var placeErr error
	go func() {
		m.wg.Wait()
		// Placement's goroutines (stops under way, lost callbacks) may
		// still call into sessions: they end after the manager's.
		placeErr = m.place.Stop(ctx)
		close(done)
	}()
	select {
	case <-done:
		return errors.Join(relayErr, placeErr)
	case <-ctx.Done():
		return fmt.Errorf("manager shutdown: %w", ctx.Err())
	}
}

// Serve serves HTTP on ln until ctx ends, then shuts the manager down
// within grace.
func (m *Manager) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv := m.cfg.HTTP.Server(m.router)
	srv.RegisterOnShutdown(m.shared.hush) // event streams would hold Shutdown up
	// What net/http reports itself (TLS handshake failures, such as a farm
	// with a certificate of an unknown CA) goes to the log as records.
	srv.ErrorLog = slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	return errors.Join(err, m.Shutdown(sctx))
}
