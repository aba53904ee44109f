// Package drover sets up drover in one call, for Go programs that embed it
// the way awv3-node users embedded that manager as a node module: a manager
// and a local farm, with pools declared once, for every protocol (native,
// stdio, dial, stream).
//
//	srv, err := drover.New(drover.Config{
//		Addr: "127.0.0.1:8181",
//		Pools: []drover.Pool{{
//			Pool:     manager.Pool{Name: "cat", Warm: 1},
//			PoolSpec: farm.PoolSpec{Command: "/bin/cat", Protocol: farm.ProtocolStdio},
//		}},
//	})
//	if err != nil { ... }
//	srv.Manager().Use(myMiddleware) // and OnConnect, Router(), Open
//	err = srv.Start()
//	...
//	err = srv.Stop(ctx)
//
// It owns the wiring between packages manager and farm: the pools split
// into the manager's policy and the farm's spec, checked at setup (a pool
// no farm serves fails New instead of timing out in the queue); the local
// farm's loopback server, through which the manager reaches the instances
// the farm adapts (stdio, dial) or relays (stream), and the token between
// them; the farm's exit reports to the manager; and the order of shutdown.
// `drover up` is built on it.
//
// It does not own the manager's policies (package manager), how instances
// start (package farm), configuration files and flags (cmd/drover), or
// farms on other machines (`drover farm`; admit them with
// Config.Manager.FarmToken).
//
// The package is named after the module, as Caddy's root package is where
// Caddy is embedded: it is the one import an embedder starts from. Its
// Server follows the lifecycle of the other long-running parts: New
// builds and listens, Start serves, Stop(ctx) ends it all.
package drover

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/proxy"
)

// Errors of New and Start.
var (
	// ErrNoFarm: a pool has nothing to start its instances with and no
	// farm on another machine may register to serve it.
	ErrNoFarm = errors.New("no farm serves pool")
	// ErrStopped: Start after Stop.
	ErrStopped = errors.New("drover: the server is stopped")
)

// DefaultShutdownGrace is how long Stop lets HTTP requests and sessions
// end when Config.ShutdownGrace is zero.
const DefaultShutdownGrace = 10 * time.Second

// Pool is one pool, declared once: the manager's policy (warm, release,
// timeouts) and the farm's way of starting its instances (command,
// protocol, runtime). Name it in either half. A pool with no farm half (no
// command, runtime or image) is served only by farms on other machines.
//
// In a YAML file, both halves' keys sit side by side (koanf squash), as
// `drover up --config` reads them.
type Pool struct {
	manager.Pool  `koanf:",squash"`
	farm.PoolSpec `koanf:",squash"`
}

// Config configures a Server. Only Pools is required.
type Config struct {
	// Addr is where the server listens, as net.Listen takes it
	// ("127.0.0.1:8181"; port 0 picks a free port, which Server.Addr
	// tells). Empty means no listener: serve Manager().Handler() on a
	// server of your own, and do not call Start.
	Addr string
	// TLS, when set, serves the listener over TLS: https and wss. Its
	// certificates come from GetCertificate (package certreload's, which
	// reloads them) or Certificates; connections keep the certificate
	// they were made with. Farms on other machines are dialled with
	// Manager.FarmTLS.
	TLS *tls.Config
	// Pools are the pools clients may ask for. The first is the default
	// unless Manager.DefaultPool names another.
	Pools []Pool
	// Manager configures the manager, except its pools, which come from
	// Pools. Its Logger defaults to Logger; its Registerer to a registry
	// of its own that the farm shares, served on /metrics. A FarmToken
	// admits farms on other machines as well; the local farm's server
	// uses it too.
	Manager manager.Config
	// Farm configures the local farm, except its pools, which come from
	// Pools. Name defaults to "local", Slots to one per CPU, Logger to
	// Logger, Registerer to the manager's. OnExit, if set, is called after
	// the manager has been told. Without any pool that runs locally there
	// is no local farm.
	Farm farm.Config
	// Logger receives the log of every part, each with its component; nil
	// discards it.
	Logger *slog.Logger
	// ShutdownGrace bounds how long Stop lets HTTP requests and sessions
	// end (DefaultShutdownGrace) before instances are stopped.
	ShutdownGrace time.Duration
	// Conversion, when set, serves conversions: the HOOPS conversion
	// server's API, and conversion jobs on the local farm's job slots and
	// on farms that register with the manager's FarmToken.
	Conversion *Conversion
}

// Server is a manager with its local farm, serving on Config.Addr.
type Server struct {
	m      *manager.Manager
	f      *farm.Farm          // nil without local pools
	conv   *conversion.Service // nil without Config.Conversion
	ln     net.Listener        // nil without Config.Addr
	grace  time.Duration
	served chan struct{} // closed when serving ends, or at Stop if it never began

	mu          sync.Mutex
	cleanups    cleanup.Stack
	started     bool
	stopped     bool
	stopErr     error
	cancelServe context.CancelFunc
	serveErr    error // written before served is closed
}

// New builds the manager and the local farm, and listens on cfg.Addr. Warm
// instances start at once; sessions are served after Start. If New fails,
// what it built is stopped again.
func New(cfg Config) (_ *Server, err error) {
	mpools, specs, err := cfg.split()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{grace: cmp.Or(cfg.ShutdownGrace, DefaultShutdownGrace), served: make(chan struct{})}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.grace)
			defer cancel()
			err = errors.Join(err, s.cleanups.Run(ctx))
		}
	}()

	// Listening first: a taken port fails before any instance starts.
	if cfg.Addr != "" {
		if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("drover: listen on %s: %w", cfg.Addr, err)
		}
		if cfg.TLS != nil {
			s.ln = tls.NewListener(s.ln, cfg.TLS)
		}
		s.cleanups.PushFunc("listener", func() error {
			if err := s.ln.Close(); !errors.Is(err, net.ErrClosed) {
				return err // the manager's server closes it when it ran
			}
			return nil
		})
	}

	mc := cfg.Manager
	mc.Pools = mpools
	if mc.Logger == nil {
		mc.Logger = log.With("component", "manager")
	}
	if mc.AuditLogger == nil {
		mc.AuditLogger = log.With("component", "audit")
	}
	if mc.Registerer == nil && mc.Gatherer == nil {
		reg := prometheus.NewRegistry()
		mc.Registerer, mc.Gatherer = reg, reg
	}
	// The manager reaches adapted and relayed instances through the local
	// farm's server, with the farm token; a random one unless farms on
	// other machines are admitted with a token of the caller's.
	local := needsFarmServer(specs)
	if local && mc.FarmToken == "" {
		mc.FarmToken = randomToken()
	}

	var m *manager.Manager // set before the farm can start an instance
	var handle manager.Farm
	if len(specs) > 0 {
		fc := cfg.Farm
		fc.Pools = specs
		fc.Name = cmp.Or(fc.Name, "local")
		fc.ID = cmp.Or(fc.ID, localFarmID(cfg.Addr, specs))
		if fc.Logger == nil {
			fc.Logger = log.With("component", "farm")
		}
		if fc.Registerer == nil {
			fc.Registerer = mc.Registerer
		}
		if fc.Models == nil {
			fc.Models = localModels(func() *conversion.Service { return s.conv })
		}
		onExit := cfg.Farm.OnExit
		fc.OnExit = func(inst farm.Instance, err error) {
			m.InstanceExited(inst, err)
			if onExit != nil {
				onExit(inst, err)
			}
		}
		if s.f, err = farm.New(fc); err != nil {
			return nil, err
		}
		s.cleanups.Push("local farm", s.f.Close)
		handle = s.f
		if local {
			if handle, err = s.serveFarm(mc.FarmToken, mc.HTTP, log); err != nil {
				return nil, err
			}
		}
	}

	if m, err = manager.New(mc); err != nil {
		return nil, err
	}
	s.m = m
	s.cleanups.Push("manager", s.stopManager)
	if handle != nil {
		m.AddFarm(handle)
	}
	if cfg.Conversion != nil {
		if err := s.setupConversion(*cfg.Conversion, m, mc, log); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// split turns the pools into the manager's and the local farm's halves.
func (cfg *Config) split() ([]manager.Pool, []farm.PoolSpec, error) {
	if len(cfg.Manager.Pools) > 0 || len(cfg.Farm.Pools) > 0 {
		return nil, nil, errors.New("drover: declare pools once, in Config.Pools; Manager.Pools and Farm.Pools are made from it")
	}
	if len(cfg.Pools) == 0 {
		return nil, nil, errors.New("drover: no pools configured")
	}
	var mpools []manager.Pool
	var specs []farm.PoolSpec
	for _, p := range cfg.Pools {
		name := cmp.Or(p.Pool.Name, p.PoolSpec.Name)
		switch {
		case name == "":
			return nil, nil, errors.New("drover: a pool has no name")
		case p.Pool.Name != "" && p.PoolSpec.Name != "" && p.Pool.Name != p.PoolSpec.Name:
			return nil, nil, fmt.Errorf("drover: pool %q is also named %q: name it once", p.Pool.Name, p.PoolSpec.Name)
		}
		p.Pool.Name, p.PoolSpec.Name = "", ""
		runsLocally := !reflect.ValueOf(p.PoolSpec).IsZero()
		p.Pool.Name, p.PoolSpec.Name = name, name
		mpools = append(mpools, p.Pool)
		switch {
		case runsLocally:
			specs = append(specs, p.PoolSpec)
		case cfg.Manager.FarmToken == "":
			return nil, nil, fmt.Errorf("drover: %w %q: give it a command (or runtime docker and an image), "+
				"or admit farms on other machines with Manager.FarmToken", ErrNoFarm, name)
		}
	}
	return mpools, specs, nil
}

// needsFarmServer reports whether a pool's instances are adapted by the
// farm (the manager reaches them through the farm's server) or report
// their liveliness to it (stream instances, whose viewers the manager
// relays to their own ports). Native instances are dialled directly.
func needsFarmServer(specs []farm.PoolSpec) bool {
	for _, p := range specs {
		if p.Protocol != "" && p.Protocol != farm.ProtocolNative {
			return true
		}
	}
	return false
}

// localFarmID is the local farm's id: a random one (empty), except for
// docker pools on a fixed address, whose containers carry the id; a stable
// one lets the next run on that address remove what a killed one left.
// The "up " prefix keeps the ids `drover up` has always used.
func localFarmID(addr string, specs []farm.PoolSpec) string {
	docker := false
	for _, p := range specs {
		docker = docker || p.Runtime == farm.RuntimeDocker
	}
	if !docker {
		return ""
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || port == "0" {
		return ""
	}
	return farm.StableID("up " + addr)
}

// serveFarm serves the local farm's API on loopback, so that the instances
// the farm adapts (dial, stdio) or relays (stream) can be reached, and
// returns the farm as the manager sees it then.
func (s *Server) serveFarm(token string, limits manager.HTTPTimeouts, log *slog.Logger) (manager.Farm, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("drover: listen for the local farm: %w", err)
	}
	relay := proxy.New(proxy.Options{Logger: log.With("component", "farm-relay")})
	fsrv, err := farm.NewServer(s.f, farm.ServerConfig{Token: token, Relay: relay,
		OrphanGrace: -1, // the manager dials native instances directly, not through this server
		Logger:      log.With("component", "farm-server")})
	if err != nil {
		return nil, errors.Join(err, ln.Close())
	}
	hs := limits.Server(fsrv)
	hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s.cleanups.Push("local farm server", func(ctx context.Context) error {
		err := errors.Join(fsrv.Close(), relay.Shutdown(ctx), hs.Shutdown(ctx))
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
	return &localFarm{Farm: s.f, base: "ws://" + ln.Addr().String(), header: bearer.Header(token)}, nil
}

// localFarm is the local farm as the manager sees it when some of its
// instances are reached through its server: native and stream instances
// at their own ports, the others (dial, stdio) at the server's URL for
// them, which other managers dial; this process's manager connects to
// those over an in-process connection (ConnectInstance).
type localFarm struct {
	*farm.Farm
	base   string
	header http.Header
}

// StopInstance stops an instance within the farm's stop grace. The
// manager stops waiting after a timeout of its own; the instance still gets
// its grace, as a remote farm's does (farm.Server).
func (l *localFarm) StopInstance(ctx context.Context, id string) error {
	return l.Farm.StopInstance(context.WithoutCancel(ctx), id)
}

var (
	_ manager.Farm          = (*localFarm)(nil)
	_ manager.ViaFarm       = (*localFarm)(nil)
	_ manager.ConnectorFarm = (*localFarm)(nil)
)

// Header is sent with connections through the farm server: the token.
func (l *localFarm) Header() http.Header { return l.header }

// Serves reports whether url goes through the farm server.
func (l *localFarm) Serves(url string) bool { return strings.HasPrefix(url, l.base+farm.PathInstance) }

// ConnectInstance connects the manager to an instance the farm adapts
// over an in-process connection (farm.Farm.Connect) rather than the farm
// server: no TCP connection and no HTTP upgrade per session. served
// false: the instance has a port of its own, which the manager dials.
func (l *localFarm) ConnectInstance(info farm.Instance) (conn net.Conn, served bool, err error) {
	if !l.Serves(info.URL) {
		return nil, false, nil
	}
	conn, err = l.Connect(info.ID)
	return conn, true, err
}

// StartInstance starts an instance of pool.
func (l *localFarm) StartInstance(ctx context.Context, pool string) (farm.Instance, error) {
	return l.StartInstanceWith(ctx, pool, farm.StartOptions{})
}

// StartInstanceWith starts an instance and, unless the manager reaches it
// at its own port, gives it the farm server's URL for it. Native
// instances are dialled there, and a stream instance's viewer is relayed
// there by the manager: one relay hop, not two (the manager tells the farm
// of the viewer, see placement.StreamWatcher).
func (l *localFarm) StartInstanceWith(ctx context.Context, pool string, opts farm.StartOptions) (farm.Instance, error) {
	inst, err := l.Farm.StartInstanceWith(ctx, pool, opts)
	if err == nil && inst.Protocol != "" && inst.Protocol != farm.ProtocolNative && inst.Protocol != farm.ProtocolStream {
		inst.URL = l.base + farm.PathInstance + inst.ID
	}
	return inst, err
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Manager is the manager: add middleware (Use), connect and disconnect
// hooks, routes (Router) before Start; open in-process sessions (Open)
// any time before Stop.
func (s *Server) Manager() *manager.Manager { return s.m }

// Farm is the local farm; nil when no pool runs locally.
func (s *Server) Farm() *farm.Farm { return s.f }

// Addr is the address the server listens on; nil without Config.Addr.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Start serves the manager's routes on the listener in the background.
// A second call does nothing.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return ErrStopped
	case s.ln == nil:
		return errors.New("drover: no Config.Addr to serve on: serve Manager().Handler() yourself")
	case s.started:
		return nil
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancelServe = cancel
	go func() {
		err := s.m.Serve(ctx, s.ln, s.grace)
		if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr = err
		close(s.served)
	}()
	return nil
}

// Done is closed when serving ends: when Stop is called, or when serving
// failed, which Stop then reports.
func (s *Server) Done() <-chan struct{} { return s.served }

// Stop ends everything New and Start began, in reverse: the server stops
// accepting, clients get close frames, sessions end within the shutdown
// grace, the local farm's instances are stopped. ctx bounds the waits.
// Every call waits for the first and returns its result.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.stopped = true
		s.stopErr = s.cleanups.Run(ctx)
		if !s.started {
			close(s.served)
		}
	}
	return s.stopErr
}

// stopManager shuts the manager down: by ending Serve, which does that
// after the HTTP server stopped, or directly if it never served.
func (s *Server) stopManager(ctx context.Context) error {
	if !s.started {
		return s.m.Shutdown(ctx)
	}
	s.cancelServe()
	var err error
	select {
	case <-s.served:
		err = s.serveErr
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Serve shut the manager down, unless serving had failed before.
	return errors.Join(err, s.m.Shutdown(ctx))
}
