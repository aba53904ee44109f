package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/proxy"
)

var _ farm.Relayer = (*proxy.Relay)(nil)

// ErrNoToken is returned by NewFarm without a farm token.
var ErrNoToken = errors.New("a farm needs the farm token (--token or DROVER_TOKEN): managers and the farm authenticate each other with it")

// FarmConfig configures `drover farm`.
type FarmConfig struct {
	// Addr is where the farm's API and its instances' WebSockets listen.
	Addr string `koanf:"addr"`
	// Advertise is the farm's base URL as managers reach it; default
	// http://<the listen address>, with the host name for an unspecified
	// host.
	Advertise string            `koanf:"advertise"`
	Managers  []string          `koanf:"manager"`
	Token     string            `koanf:"token"`
	Instances int               `koanf:"instances"`
	Labels    map[string]string `koanf:"labels"`
	Priority  int               `koanf:"priority"`
	// ID is the farm id; default farm.StableID of the listen address, so
	// that a restarted farm keeps its id and state directory.
	ID   string `koanf:"id"`
	Name string `koanf:"name"`
	// StateDir holds the farm's instances.json; default
	// farm.DefaultStateDir(ID).
	StateDir string `koanf:"state_dir"`
	// Direct advertises instances' own ports to managers instead of the
	// farm's one port; InstanceHost is the address they listen on.
	Direct        bool          `koanf:"direct"`
	InstanceHost  string        `koanf:"instance_host"`
	MaxDrain      time.Duration `koanf:"max_drain"`
	OrphanGrace   time.Duration `koanf:"orphan_grace"`
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
	// Runtime, Image and ReconcileInterval: see RuntimeConfig.
	RuntimeConfig `koanf:",squash"`
	// Pools say how instances start; without any, the farm runs the
	// reference worker as pool "default", as a process or, with Runtime
	// docker, as a container of Image.
	Pools []PoolConfig `koanf:"pools"`
	// JobSlots is how many conversion jobs the farm runs at once (the
	// HOOPS conversion server's maxConversions); 0 for none.
	JobSlots int `koanf:"job_slots"`
	// SharedData: the farm sees the managers' data directory at the same
	// path, and reads job inputs there instead of downloading them.
	SharedData bool `koanf:"shared_data"`
	// JobDir holds running jobs' files; default a directory in the
	// system's temporary directory. One another farm process holds is
	// left alone for a sibling (farm.JobsConfig.WorkDir).
	JobDir string `koanf:"job_dir"`
	// Converters are converters the farm adds; see ConverterConfig.
	Converters []ConverterConfig `koanf:"converters"`
	// CacheSize and CacheDir: the farm's model cache; see CacheConfig.
	CacheConfig `koanf:",squash"`
	// How the converters run, and their limits.
	ConverterRuntimeConfig `koanf:",squash"`
	// TLS of the farm's listener and towards the managers.
	FarmTLSConfig `koanf:",squash"`
	// The HTTP server's limits (http_max_body_bytes is the managers').
	HardenConfig `koanf:",squash"`
}

// FarmNode is a running `drover farm`: the runtime, its HTTP server and the
// agent that keeps it registered with the managers. Start, Stop and Run are
// called from one goroutine; Drain from any.
type FarmNode struct {
	Farm   *farm.Farm
	Agent  *farm.Agent
	Server *farm.Server
	// Jobs are the farm's conversion job slots; nil without any.
	Jobs  *farm.Jobs
	ln    net.Listener
	http  *http.Server
	url   string
	grace time.Duration

	cleanups cleanup.Stack
	// OnReload and Reload: what SIGHUP re-reads.
	reloads
	started bool
	// Closed when serving or the agent ended, after serveErr or agentErr
	// is set.
	serveDone, agentDone chan struct{}
	serveErr, agentErr   error
	stopAgent            context.CancelFunc
}

// NewFarm listens on cfg.Addr, kills what the farm's previous run left
// behind, and builds the farm, its server and its agent; Run (or Start)
// serves and registers.
func NewFarm(cfg FarmConfig, log *slog.Logger, reg *prometheus.Registry) (_ *FarmNode, err error) {
	if cfg.Token == "" {
		return nil, ErrNoToken
	}
	if cfg.Pools, err = cfg.pools(cfg.Pools, 0); err != nil {
		return nil, err
	}
	specs := make([]farm.PoolSpec, 0, len(cfg.Pools))
	for _, p := range cfg.Pools {
		p.PoolSpec.Name = coalesce(p.PoolSpec.Name, p.Pool.Name)
		specs = append(specs, p.PoolSpec)
	}
	n := &FarmNode{grace: shutdownGrace(cfg.ShutdownGrace), reloads: reloads{log: reloadLog(log)},
		serveDone: make(chan struct{}), agentDone: make(chan struct{})}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), n.grace)
			defer cancel()
			err = errors.Join(err, n.cleanups.Run(ctx))
		}
	}()

	tlsListener, client, err := cfg.FarmTLSConfig.farm(&n.reloads)
	if err != nil {
		return nil, err
	}
	// Pushed in the order that makes the reverse right: the relay's
	// connections and the farm's instances go before the HTTP server
	// drains, so that no request waits on an instance start.
	if n.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	bound := n.ln.Addr()
	if tlsListener != nil {
		n.ln = tls.NewListener(n.ln, tlsListener)
	}
	n.cleanups.PushFunc("listener", func() error {
		if err := n.ln.Close(); !errors.Is(err, net.ErrClosed) {
			return err // the HTTP server closes it once it served
		}
		return nil
	})
	n.http = &http.Server{ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	n.cleanups.Push("http server", n.shutdownHTTP)
	if cfg.ID == "" {
		cfg.ID = farm.StableID(idAddr(cfg.Addr, bound))
	}
	if cfg.StateDir == "" {
		cfg.StateDir = farm.DefaultStateDir(cfg.ID)
	}
	n.url = cfg.Advertise
	if n.url == "" {
		scheme := "http://"
		if tlsListener != nil {
			scheme = "https://"
		}
		n.url = scheme + reachable(bound, log)
	}
	flog := log.With("component", "farm")
	cache, err := cfg.open(filepath.Join(cfg.StateDir, "cache"), log, reg, &n.cleanups)
	if err != nil {
		return nil, err
	}
	n.Farm, err = farm.New(farm.Config{
		ID:                cfg.ID,
		Name:              cfg.Name,
		Slots:             cfg.Instances,
		Pools:             specs,
		Logger:            flog,
		Registerer:        reg,
		StateDir:          cfg.StateDir,
		Host:              cfg.InstanceHost,
		ReconcileInterval: cfg.ReconcileInterval,
		StopGrace:         cfg.StopGrace,
		// Streaming sessions' directories, swept at the next start after a
		// crash; their files come from the managers the agent knows.
		SessionsDir: filepath.Join(cfg.StateDir, "sessions"),
		Models:      farm.NewJobClient(func() []string { return n.Agent.Managers() }, cfg.Token, client),
		Cache:       cache,
	})
	if err != nil {
		return nil, err
	}
	n.cleanups.Push("farm", n.Farm.Close)
	if cfg.JobSlots > 0 {
		conv, err := converter(cfg.Converters, cfg.ConverterRuntimeConfig, cfg.ID, log.With("component", "convert"), &n.cleanups)
		if err != nil {
			return nil, err
		}
		n.Jobs, err = farm.NewJobs(farm.JobsConfig{
			Source:     farm.NewJobClient(func() []string { return n.Agent.Managers() }, cfg.Token, client),
			Farm:       cfg.ID,
			Slots:      cfg.JobSlots,
			Converter:  conv,
			WorkDir:    cfg.JobDir,
			ReadLocal:  cfg.SharedData,
			Cache:      cache,
			Logger:     log.With("component", "jobs"),
			Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
	}
	n.Agent, err = farm.NewAgent(farm.AgentConfig{
		Farm:         n.Farm,
		Managers:     cfg.Managers,
		Token:        cfg.Token,
		Client:       client,
		AdvertiseURL: n.url,
		Labels:       cfg.Labels,
		Priority:     cfg.Priority,
		JobSlots:     max(cfg.JobSlots, 0),
		Jobs:         drainer(n.Jobs),
		MaxDrain:     cfg.MaxDrain,
		Logger:       log.With("component", "agent"),
	})
	if err != nil {
		return nil, err
	}
	relay := proxy.New(proxy.Options{Logger: log.With("component", "relay")})
	n.cleanups.Push("relay", relay.Shutdown)
	n.Server, err = farm.NewServer(n.Farm, farm.ServerConfig{
		Token:       cfg.Token,
		Relay:       relay,
		Require:     n.Agent.AddManager,
		OrphanGrace: orphanGrace(cfg),
		Direct:      cfg.Direct,
		Gatherer:    reg,
		Logger:      flog,
	})
	if err != nil {
		return nil, err
	}
	n.cleanups.PushFunc("farm server", n.Server.Close)
	n.http.Handler = n.Server
	cfg.httpTimeouts().Apply(n.http)
	return n, nil
}

// Start serves the farm's API and starts the agent, which registers with
// the managers and sends heartbeats.
func (n *FarmNode) Start() error {
	if n.started {
		return nil
	}
	n.started = true
	go func() {
		n.serveErr = n.http.Serve(n.ln)
		close(n.serveDone)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	n.stopAgent = cancel
	go func() {
		n.agentErr = n.Agent.Run(ctx)
		close(n.agentDone)
	}()
	if n.Jobs != nil {
		jctx, stopJobs := context.WithCancel(context.Background())
		jobsDone := make(chan error, 1)
		go func() { jobsDone <- n.Jobs.Run(jctx) }()
		// Running conversions are stopped and their attempts failed, so
		// that their jobs go elsewhere without waiting for the leases to
		// expire.
		n.cleanups.Push("job slots", func(ctx context.Context) error {
			stopJobs()
			select {
			case err := <-jobsDone:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	// Last pushed, first run: the agent deregisters before anything stops.
	n.cleanups.Push("agent", func(ctx context.Context) error {
		cancel()
		select {
		case <-n.agentDone:
			return n.agentErr
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	return nil
}

func (n *FarmNode) shutdownHTTP(ctx context.Context) error {
	err := n.http.Shutdown(ctx)
	if n.started {
		<-n.serveDone // Serve returns as soon as Shutdown closed the listener
		if !errors.Is(n.serveErr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("serve: %w", n.serveErr))
		}
	}
	return err
}

// Stop deregisters and shuts down, last built first: relayed connections
// get close frames, every instance is stopped, the server ends. ctx bounds
// it. A second Stop does nothing.
func (n *FarmNode) Stop(ctx context.Context) error { return n.cleanups.Run(ctx) }

// Run serves and keeps the farm registered until ctx ends, a drain is
// over or serving fails, then stops within the shutdown grace.
func (n *FarmNode) Run(ctx context.Context) error {
	err := n.Start()
	if err == nil {
		select {
		case <-ctx.Done():
		case <-n.agentDone:
		case <-n.serveDone:
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), n.grace)
	defer cancel()
	return errors.Join(err, n.Stop(sctx))
}

// idAddr is the address a default farm id is derived from: the configured
// one, unless it leaves the port to the kernel, which makes no two runs
// alike anyway.
func idAddr(configured string, bound net.Addr) string {
	if _, port, err := net.SplitHostPort(configured); err == nil && port != "0" && port != "" {
		return configured
	}
	return bound.String()
}

// reachable turns a listen address into host:port another machine can use.
func reachable(a net.Addr, log *slog.Logger) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		name, err := os.Hostname()
		if err != nil || name == "" {
			name = "localhost"
		}
		log.Warn("advertising the host name to managers; set --advertise if they cannot resolve it", "host", name)
		host = name
	}
	return net.JoinHostPort(host, port)
}

// Addr is the address the farm listens on.
func (n *FarmNode) Addr() net.Addr { return n.ln.Addr() }

// URL is the base URL the farm advertises to managers.
func (n *FarmNode) URL() string { return n.url }

// Drain stops taking instances; Run returns once the farm is empty or the
// maximum drain time passed.
func (n *FarmNode) Drain() { n.Agent.Drain() }

// drainer is the farm's job slots as the agent drains them; nil without.
func drainer(j *farm.Jobs) farm.Drainer {
	if j == nil {
		return nil
	}
	return j
}

// orphanGrace turns the orphan sweeper off for a farm advertising direct
// ports: managers' connections to its instances do not pass the farm.
func orphanGrace(cfg FarmConfig) time.Duration {
	if cfg.Direct {
		return -1
	}
	return cfg.OrphanGrace
}
