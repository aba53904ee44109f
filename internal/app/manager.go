package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover"
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
	// The conversion service's settings. With Redis, items and the job
	// queue live there and every manager serves every farm's jobs; the
	// data directory must then be shared.
	ConversionConfig `koanf:",squash"`
	// Who may do what: auth, origins, limits, TLS.
	SecurityConfig `koanf:",squash"`
}

// ManagerNode is a running `drover manager`: package drover's server with
// no local farm (farms register over REST), and the state it keeps in.
type ManagerNode struct {
	node
	Manager *manager.Manager
}

// NewManager opens the state, builds the manager and listens on cfg.Addr;
// Run (or Start) serves.
func NewManager(cfg ManagerConfig, log *slog.Logger, reg *prometheus.Registry) (_ *ManagerNode, err error) {
	if cfg.FarmToken == "" {
		return nil, ErrNoFarmToken
	}
	// Only the manager's half of each pool: farms bring the other.
	var pools []drover.Pool
	for _, p := range cfg.Pools {
		p.Pool.Name = coalesce(p.Pool.Name, p.PoolSpec.Name)
		pools = append(pools, drover.Pool{Pool: p.Pool})
	}
	if len(pools) == 0 {
		pools = []drover.Pool{{Pool: manager.Pool{Name: "default", Warm: cfg.Warm}}}
	}
	n := &ManagerNode{node: node{grace: shutdownGrace(cfg.ShutdownGrace), reloads: reloads{log: reloadLog(log)}}}
	defer n.undoIfFailed(&err)
	tlsc, err := cfg.TLSConfig.manager(&n.reloads)
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(cfg.Redis, log)
	if err != nil {
		return nil, err
	}
	n.cleanups.PushFunc("store", st.Close)
	conv, err := cfg.conversion(cfg.Redis, -1, log, &n.cleanups)
	if err != nil {
		return nil, err
	}
	authn, err := cfg.authenticator(cfg.AdminToken, cfg.Data, cfg.Redis, log, &n.cleanups)
	if err != nil {
		return nil, err
	}
	n.OnReload("auth keys", authn.Reload)
	n.srv, err = drover.New(drover.Config{
		Addr:  cfg.Addr,
		TLS:   tlsc.listener,
		Pools: pools,
		Manager: cfg.harden(manager.Config{
			FarmTLS:           tlsc.farms,
			RequireFarmCert:   tlsc.requireFarmCert,
			Store:             st,
			ID:                cfg.ID,
			HandOffOnShutdown: cfg.Redis != "",
			HealthThreshold:   cfg.HealthThreshold,
			ResumeGrace:       cfg.ResumeGrace,
			MaxMessageSize:    cfg.MaxMessageSize,
			FarmToken:         cfg.FarmToken,
			AdminToken:        cfg.AdminToken,
			HeartbeatInterval: cfg.HeartbeatInterval,
			Limits:            cfg.Limits(),
			Registerer:        reg,
			Gatherer:          reg,
			AllowedOrigins:    cfg.AllowedOrigins,
			MetricsToken:      cfg.MetricsToken,
			Auth:              authn,
		}),
		Logger:        log,
		ShutdownGrace: n.grace,
		Conversion:    conv,
	})
	if err != nil {
		return nil, err
	}
	n.cleanups.Push("drover", n.srv.Stop)
	n.Manager = n.srv.Manager()
	if f := cfg.TaskFilter(); f != nil {
		n.Manager.Use(f) // first: a refused task reaches no other middleware
	}
	n.Manager.Use(middleware.Logging(log.With("component", "tasks")))
	return n, nil
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
