package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/store"
)

// ErrNoFarmToken is returned by NewManager without a farm token: a manager
// that admitted any farm would hand its clients' sessions to whoever
// registers first.
var ErrNoFarmToken = errors.New("a manager needs a farm token (--farm-token or DROVER_FARM_TOKEN): farms authenticate with it")

// ManagerConfig configures `drover manager`.
type ManagerConfig struct {
	Addr       string `koanf:"addr"`
	FarmToken  string `koanf:"farm_token"`
	AdminToken string `koanf:"admin_token"`
	// Warm is the warm count of the default pool when Pools is empty.
	Warm              int           `koanf:"warm"`
	HealthThreshold   float64       `koanf:"health_threshold"`
	ResumeGrace       time.Duration `koanf:"resume_grace"`
	MaxMessageSize    int64         `koanf:"max_message_size"`
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval"`
	ShutdownGrace     time.Duration `koanf:"shutdown_grace"`
	// Redis is the URL of the Redis server the managers behind one load
	// balancer share their state through; empty means in-memory state.
	Redis string `koanf:"redis"`
	// ID names the manager in the shared state (default: host name plus a
	// random suffix).
	ID string `koanf:"id"`
	// Pools are the manager's policies; the farms' parts of PoolConfig
	// (command, args, ...) are ignored, so one file can serve both.
	Pools []PoolConfig `koanf:"pools"`
}

// ManagerNode is a running `drover manager`: the public server with no farm
// of its own; farms register over REST.
type ManagerNode struct {
	Manager *manager.Manager
	ln      net.Listener
	grace   time.Duration
	store   store.Store
}

// NewManager builds the manager and listens on cfg.Addr.
func NewManager(cfg ManagerConfig, log *slog.Logger, reg *prometheus.Registry) (*ManagerNode, error) {
	if cfg.FarmToken == "" {
		return nil, ErrNoFarmToken
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	st, err := OpenStore(cfg.Redis, log)
	if err != nil {
		return nil, err
	}
	mcfg := manager.Config{
		Store:             st,
		ID:                cfg.ID,
		HandOffOnShutdown: cfg.Redis != "",
		HealthThreshold:   cfg.HealthThreshold,
		ResumeGrace:       cfg.ResumeGrace,
		MaxMessageSize:    cfg.MaxMessageSize,
		FarmToken:         cfg.FarmToken,
		AdminToken:        cfg.AdminToken,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Logger:            log.With("component", "manager"),
		Registerer:        reg,
		Gatherer:          reg,
	}
	for _, p := range cfg.Pools {
		p.Pool.Name = coalesce(p.Pool.Name, p.PoolSpec.Name)
		mcfg.Pools = append(mcfg.Pools, p.Pool)
	}
	if len(mcfg.Pools) == 0 {
		mcfg.Pools = []manager.Pool{{Name: "default", Warm: cfg.Warm}}
	}
	m, err := manager.New(mcfg)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	m.Use(middleware.Logging(log.With("component", "tasks")))
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen on %s: %w", cfg.Addr, err), m.Shutdown(context.Background()), st.Close())
	}
	return &ManagerNode{Manager: m, ln: ln, grace: cfg.ShutdownGrace, store: st}, nil
}

// OpenStore opens the shared state: Redis at url, or in-memory state when
// url is empty. Redis must answer at start; later outages are the
// manager's to ride out (503 on /health, no new placements, recovery).
func OpenStore(url string, log *slog.Logger) (store.Store, error) {
	if url == "" {
		return store.NewMemory(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := store.NewRedis(ctx, store.RedisOptions{URL: url, Logger: log.With("component", "store")})
	if err != nil {
		return nil, fmt.Errorf("shared state: %w", err)
	}
	return st, nil
}

// Addr is the address the manager listens on.
func (n *ManagerNode) Addr() net.Addr { return n.ln.Addr() }

// Run serves until ctx ends, then shuts down: clients get close frames and
// sessions end; the farms notice through their heartbeats.
func (n *ManagerNode) Run(ctx context.Context) error {
	err := n.Manager.Serve(ctx, n.ln, n.grace)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return errors.Join(err, n.store.Close())
}
