package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
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
}

// FarmNode is a running `drover farm`: the runtime, its HTTP server and the
// agent that keeps it registered with the managers.
type FarmNode struct {
	Farm   *farm.Farm
	Agent  *farm.Agent
	Server *farm.Server
	relay  *proxy.Relay
	ln     net.Listener
	url    string
	log    *slog.Logger
	grace  time.Duration
}

// NewFarm listens on cfg.Addr, kills what the farm's previous run left
// behind, and builds the farm, its server and its agent.
func NewFarm(cfg FarmConfig, log *slog.Logger, reg *prometheus.Registry) (n *FarmNode, err error) {
	if cfg.Token == "" {
		return nil, ErrNoToken
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Pools, err = cfg.pools(cfg.Pools, 0); err != nil {
		return nil, err
	}
	specs := make([]farm.PoolSpec, 0, len(cfg.Pools))
	for _, p := range cfg.Pools {
		p.PoolSpec.Name = coalesce(p.PoolSpec.Name, p.Pool.Name)
		specs = append(specs, p.PoolSpec)
	}

	// Cleanups run in reverse if a later step fails.
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				err = errors.Join(err, undo[i]())
			}
		}
	}()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	undo = append(undo, ln.Close)
	if cfg.ID == "" {
		cfg.ID = farm.StableID(idAddr(cfg.Addr, ln.Addr()))
	}
	if cfg.StateDir == "" {
		cfg.StateDir = farm.DefaultStateDir(cfg.ID)
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = "http://" + reachable(ln.Addr(), log)
	}
	flog := log.With("component", "farm")
	f, err := farm.New(farm.Config{
		ID:                cfg.ID,
		Name:              cfg.Name,
		Slots:             cfg.Instances,
		Pools:             specs,
		Logger:            flog,
		Registerer:        reg,
		StateDir:          cfg.StateDir,
		Host:              cfg.InstanceHost,
		ReconcileInterval: cfg.ReconcileInterval,
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return f.Close(context.Background()) })
	agent, err := farm.NewAgent(farm.AgentConfig{
		Farm:         f,
		Managers:     cfg.Managers,
		Token:        cfg.Token,
		AdvertiseURL: advertise,
		Labels:       cfg.Labels,
		Priority:     cfg.Priority,
		MaxDrain:     cfg.MaxDrain,
		Logger:       log.With("component", "agent"),
	})
	if err != nil {
		return nil, err
	}
	relay := proxy.New(proxy.Options{Logger: log.With("component", "relay")})
	srv, err := farm.NewServer(f, farm.ServerConfig{
		Token:       cfg.Token,
		Relay:       relay,
		Require:     agent.AddManager,
		OrphanGrace: orphanGrace(cfg),
		Direct:      cfg.Direct,
		Gatherer:    reg,
		Logger:      flog,
	})
	if err != nil {
		return nil, err
	}
	return &FarmNode{Farm: f, Agent: agent, Server: srv, relay: relay, ln: ln, url: advertise,
		log: log, grace: cfg.ShutdownGrace}, nil
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

// Run serves and keeps the farm registered until ctx ends or a drain is
// over, then deregisters and shuts down: relayed connections get close
// frames, every instance is stopped, and the server ends.
func (n *FarmNode) Run(ctx context.Context) error {
	srv := &http.Server{Handler: n.Server, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(n.ln) }()

	actx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentDone := make(chan error, 1)
	go func() { agentDone <- n.Agent.Run(actx) }()

	var err error
	select {
	case err = <-agentDone:
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
		stopAgent()
		err = errors.Join(err, <-agentDone)
	}

	sctx, cancel := context.WithTimeout(context.Background(), n.grace)
	defer cancel()
	errs := []error{err, n.relay.Shutdown(sctx), n.Farm.Close(sctx)}
	if serr := srv.Shutdown(sctx); serr != nil {
		errs = append(errs, serr)
	}
	select {
	case serr := <-serveErr:
		if !errors.Is(serr, http.ErrServerClosed) {
			errs = append(errs, serr)
		}
	default:
	}
	errs = append(errs, n.Server.Close())
	return errors.Join(errs...)
}

// orphanGrace turns the orphan sweeper off for a farm advertising direct
// ports: managers' connections to its instances do not pass the farm.
func orphanGrace(cfg FarmConfig) time.Duration {
	if cfg.Direct {
		return -1
	}
	return cfg.OrphanGrace
}
