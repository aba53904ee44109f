// Package app wires drover's parts into the programs the drover command
// runs: `up` (a manager and a local farm in one process). It owns process
// lifecycle (listen, serve, ordered shutdown), not configuration parsing,
// which stays in cmd/drover.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
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
	Pools           []PoolConfig  `koanf:"pools"`
}

// DefaultPools is the pool set of `drover up` without a config: the
// reference worker, run by this same executable.
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
}

// NewUp builds the manager and the local farm and listens on cfg.Addr.
func NewUp(cfg UpConfig, log *slog.Logger, reg *prometheus.Registry) (*Up, error) {
	if len(cfg.Pools) == 0 {
		pools, err := DefaultPools(cfg.Warm)
		if err != nil {
			return nil, err
		}
		cfg.Pools = pools
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	mcfg := manager.Config{
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
		return nil, err
	}
	m.Use(middleware.Logging(log.With("component", "tasks")))
	f, err := farm.New(farm.Config{
		Name:       "local",
		Slots:      cfg.Instances,
		Pools:      specs,
		Logger:     log.With("component", "farm"),
		OnExit:     m.InstanceExited,
		Registerer: reg,
	})
	if err != nil {
		return nil, errors.Join(err, m.Shutdown(context.Background()))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen on %s: %w", cfg.Addr, err),
			m.Shutdown(context.Background()), f.Close(context.Background()))
	}
	m.AddFarm(f)
	return &Up{Manager: m, Farm: f, ln: ln, log: log, grace: cfg.ShutdownGrace}, nil
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
	return errors.Join(err, u.Farm.Close(sctx))
}
