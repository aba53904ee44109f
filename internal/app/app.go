// Package app wires drover's parts into the programs the drover command
// runs: `up` (a manager and a local farm in one process). It owns process
// lifecycle (listen, serve, ordered shutdown), not configuration parsing,
// which stays in cmd/drover.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/lib/bearer"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/store"
)

// PoolConfig is one pool as the config file writes it: the manager's policy
// and the farm's way of starting its instances.
type PoolConfig struct {
	manager.Pool  `koanf:",squash"`
	farm.PoolSpec `koanf:",squash"`
}

// UpConfig configures `drover up`.
type UpConfig struct {
	Addr            string        `koanf:"addr"`
	Instances       int           `koanf:"instances"`
	Warm            int           `koanf:"warm"`
	HealthThreshold float64       `koanf:"health_threshold"`
	ResumeGrace     time.Duration `koanf:"resume_grace"`
	MaxMessageSize  int64         `koanf:"max_message_size"`
	ShutdownGrace   time.Duration `koanf:"shutdown_grace"`
	// Runtime, Image and ReconcileInterval are the local farm's docker
	// settings; see RuntimeConfig.
	RuntimeConfig `koanf:",squash"`
	Pools         []PoolConfig `koanf:"pools"`
	// Redis: see ManagerConfig.Redis.
	Redis string `koanf:"redis"`
}

// RuntimeConfig says where a farm's instances run by default.
type RuntimeConfig struct {
	// Runtime is the runtime of the default pool and of the pools that
	// name none: "process" (the default) or "docker".
	Runtime string `koanf:"runtime"`
	// Image is the image of the docker pools that name none; default
	// farm.DefaultImage, the reference worker image `make image` builds.
	Image string `koanf:"image"`
	// ReconcileInterval is how often the farm removes the containers
	// labelled with its id that it does not track; see
	// farm.Config.ReconcileInterval.
	ReconcileInterval time.Duration `koanf:"reconcile_interval"`
}

// pools returns the pools with rc's defaults applied; without pools, the
// reference worker as pool "default" with warm idle instances: a process of
// this executable, or a container of the image.
func (rc RuntimeConfig) pools(pools []PoolConfig, warm int) ([]PoolConfig, error) {
	switch rc.Runtime {
	case "", farm.RuntimeProcess, farm.RuntimeDocker:
	default:
		return nil, fmt.Errorf("unknown runtime %q (want %s or %s)", rc.Runtime, farm.RuntimeProcess, farm.RuntimeDocker)
	}
	if len(pools) == 0 {
		if rc.Runtime != farm.RuntimeDocker {
			return DefaultPools(warm)
		}
		pools = []PoolConfig{{
			Pool:     manager.Pool{Name: "default", Warm: warm},
			PoolSpec: farm.PoolSpec{Name: "default", Protocol: farm.ProtocolNative},
		}}
	}
	out := make([]PoolConfig, len(pools))
	for i, p := range pools {
		p.Runtime = coalesce(p.Runtime, rc.Runtime)
		if p.Runtime == farm.RuntimeDocker {
			p.Image = coalesce(p.Image, coalesce(rc.Image, farm.DefaultImage))
		}
		out[i] = p
	}
	return out, nil
}

// usesDocker reports whether a pool runs in containers.
func usesDocker(pools []farm.PoolSpec) bool {
	for _, p := range pools {
		if p.Runtime == farm.RuntimeDocker {
			return true
		}
	}
	return false
}

// DefaultPools is the pool set of `drover up` without a config or a
// runtime: the reference worker, run by this same executable.
func DefaultPools(warm int) ([]PoolConfig, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return []PoolConfig{{
		Pool:     manager.Pool{Name: "default", Warm: warm},
		PoolSpec: farm.PoolSpec{Name: "default", Command: exe, Args: []string{"worker"}, Protocol: farm.ProtocolNative},
	}}, nil
}

// Up is a running `drover up`.
type Up struct {
	Manager *manager.Manager
	Farm    *farm.Farm
	ln      net.Listener
	log     *slog.Logger
	grace   time.Duration
	store   store.Store

	// The local farm's server, only for pools that need it.
	farmSrv  *farm.Server
	farmHTTP *http.Server
	relay    *proxy.Relay
}

// NewUp builds the manager and the local farm and listens on cfg.Addr.
func NewUp(cfg UpConfig, log *slog.Logger, reg *prometheus.Registry) (*Up, error) {
	pools, err := cfg.pools(cfg.Pools, cfg.Warm)
	if err != nil {
		return nil, err
	}
	cfg.Pools = pools
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	// Pools whose instances do not speak the native protocol are reached
	// through a farm server on loopback, behind a token made for this run.
	var token string
	for _, p := range cfg.Pools {
		if p.Protocol != "" && p.Protocol != farm.ProtocolNative {
			token = randomToken()
			break
		}
	}
	st, err := OpenStore(cfg.Redis, log)
	if err != nil {
		return nil, err
	}
	mcfg := manager.Config{
		Store:           st,
		FarmToken:       token,
		HealthThreshold: cfg.HealthThreshold,
		ResumeGrace:     cfg.ResumeGrace,
		MaxMessageSize:  cfg.MaxMessageSize,
		Logger:          log.With("component", "manager"),
		Registerer:      reg,
		Gatherer:        reg,
	}
	specs := make([]farm.PoolSpec, 0, len(cfg.Pools))
	for _, p := range cfg.Pools {
		p.Pool.Name, p.PoolSpec.Name = coalesce(p.Pool.Name, p.PoolSpec.Name), coalesce(p.PoolSpec.Name, p.Pool.Name)
		mcfg.Pools = append(mcfg.Pools, p.Pool)
		specs = append(specs, p.PoolSpec)
	}
	m, err := manager.New(mcfg)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	m.Use(middleware.Logging(log.With("component", "tasks")))
	f, err := farm.New(farm.Config{
		ID:                upFarmID(cfg.Addr, specs),
		Name:              "local",
		Slots:             cfg.Instances,
		Pools:             specs,
		Logger:            log.With("component", "farm"),
		OnExit:            m.InstanceExited,
		Registerer:        reg,
		ReconcileInterval: cfg.ReconcileInterval,
	})
	if err != nil {
		return nil, errors.Join(err, m.Shutdown(context.Background()))
	}
	up := &Up{Manager: m, Farm: f, log: log, grace: cfg.ShutdownGrace, store: st}
	var handle manager.Farm = f
	if token != "" {
		if handle, err = up.serveFarm(token); err != nil {
			return nil, errors.Join(err, m.Shutdown(context.Background()), f.Close(context.Background()))
		}
	}
	if up.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, errors.Join(fmt.Errorf("listen on %s: %w", cfg.Addr, err),
			up.closeFarmServer(context.Background()), m.Shutdown(context.Background()), f.Close(context.Background()))
	}
	m.AddFarm(handle)
	return up, nil
}

// upFarmID is the local farm's id: a random one, except for docker pools on
// a fixed address, whose containers carry the id; a stable one lets the
// next drover up on that address remove what a killed one left.
func upFarmID(addr string, specs []farm.PoolSpec) string {
	if !usesDocker(specs) {
		return ""
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || port == "0" {
		return ""
	}
	return farm.StableID("up " + addr)
}

// serveFarm serves the local farm's API on loopback, so that instances the
// farm adapts (dial, stdio) or relays (stream) can be reached.
func (u *Up) serveFarm(token string) (manager.Farm, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the local farm: %w", err)
	}
	u.relay = proxy.New(proxy.Options{Logger: u.log.With("component", "farm-relay")})
	u.farmSrv, err = farm.NewServer(u.Farm, farm.ServerConfig{Token: token, Relay: u.relay,
		OrphanGrace: -1, // native instances are dialled directly, not through this server
		Logger:      u.log.With("component", "farm-server")})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	u.farmHTTP = &http.Server{Handler: u.farmSrv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.farmHTTP.Serve(ln) }()
	return &localFarm{Farm: u.Farm, base: "ws://" + ln.Addr().String(),
		header: bearer.Header(token)}, nil
}

func (u *Up) closeFarmServer(ctx context.Context) error {
	if u.farmHTTP == nil {
		return nil
	}
	u.farmSrv.Close()
	return errors.Join(u.relay.Shutdown(ctx), u.farmHTTP.Shutdown(ctx))
}

// localFarm is the in-process farm of drover up. Native instances are
// dialled directly; the others through the farm server, whose URL it sets.
type localFarm struct {
	*farm.Farm
	base   string
	header http.Header
}

// Header is sent with connections through the farm server.
func (l *localFarm) Header() http.Header { return l.header }

// Serves reports whether url goes through the farm server.
func (l *localFarm) Serves(url string) bool { return strings.HasPrefix(url, l.base+farm.PathInstance) }

func (l *localFarm) StartInstance(ctx context.Context, pool string) (farm.Instance, error) {
	return l.StartInstanceWith(ctx, pool, farm.StartOptions{})
}

func (l *localFarm) StartInstanceWith(ctx context.Context, pool string, opts farm.StartOptions) (farm.Instance, error) {
	inst, err := l.Farm.StartInstanceWith(ctx, pool, opts)
	if err == nil && inst.Protocol != "" && inst.Protocol != farm.ProtocolNative {
		inst.URL = l.base + farm.PathInstance + inst.ID
	}
	return inst, err
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func coalesce(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Addr is the address the manager listens on.
func (u *Up) Addr() net.Addr { return u.ln.Addr() }

// Run serves until ctx ends, then shuts down in order: clients get close
// frames, sessions end, and every instance is stopped.
func (u *Up) Run(ctx context.Context) error {
	err := u.Manager.Serve(ctx, u.ln, u.grace)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), u.grace)
	defer cancel()
	return errors.Join(err, u.closeFarmServer(sctx), u.Farm.Close(sctx), u.store.Close())
}
