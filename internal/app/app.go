// Package app is what the drover command's servers are made of: `up` (a
// manager and a local farm in one process) and `manager` (the public server
// alone), both built on package drover's one setup call, and `farm` (a
// farm for managers on other machines). It owns their configuration types
// and their lifecycle: New... builds and listens, Start serves, Stop(ctx)
// undoes what was built, in reverse, and Run does all three around a
// context. Parsing flags and files stays in cmd/drover; the wiring of a
// manager to its local farm is package drover's.
package app

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
)

// PoolConfig is one pool as the config file writes it: the manager's policy
// and the farm's way of starting its instances, side by side.
type PoolConfig = drover.Pool

// UpConfig configures `drover up`.
type UpConfig struct {
	Addr            string        `koanf:"addr"`
	Instances       int           `koanf:"instances"`
	Warm            int           `koanf:"warm"`
	HealthThreshold float64       `koanf:"health_threshold"`
	ResumeGrace     time.Duration `koanf:"resume_grace"`
	MaxMessageSize  int64         `koanf:"max_message_size"`
	ShutdownGrace   time.Duration `koanf:"shutdown_grace"`
	// AdminToken makes its bearer an admin; see ManagerConfig.AdminToken.
	AdminToken string `koanf:"admin_token"`
	// Procs is how many CPUs the process runs Go code on at once
	// (GOMAXPROCS); see cmd/drover's --procs.
	Procs int `koanf:"procs"`
	// Runtime, Image and ReconcileInterval are the local farm's docker
	// settings; see RuntimeConfig.
	RuntimeConfig `koanf:",squash"`
	Pools         []PoolConfig `koanf:"pools"`
	// Redis: see ManagerConfig.Redis.
	Redis string `koanf:"redis"`
	// JobSlots is how many conversions the local farm runs at once; 0
	// for none.
	JobSlots int `koanf:"job_slots"`
	// Converters are converters the local farm adds; see ConverterConfig.
	Converters []ConverterConfig `koanf:"converters"`
	// CacheSize and CacheDir: the local farm's model cache (default
	// directory: one per data directory); see CacheConfig.
	CacheConfig `koanf:",squash"`
	// How the local farm's converters run, and their limits.
	ConverterRuntimeConfig `koanf:",squash"`
	// The conversion service's settings: the data directory, upload
	// limit, webhooks.
	ConversionConfig `koanf:",squash"`
	// Who may do what: auth, origins, limits, TLS.
	SecurityConfig `koanf:",squash"`
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
	// StopGrace is how long a stopped instance has between SIGTERM (a
	// container: its stop signal) and SIGKILL; 0 means
	// farm.DefaultStopGrace. See farm.Config.StopGrace.
	StopGrace time.Duration `koanf:"stop_grace"`
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
		}, viewerPool("", true)}
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

// DefaultPools is the pool set of `drover up` without a config or a
// runtime: the reference worker, and the reference viewer as the stream
// pool of streaming sessions, both run by this same executable; the
// worker by drover-worker instead when it sits next to it (see
// WorkerCommand).
func DefaultPools(warm int) ([]PoolConfig, error) {
	exe, err := ownExe()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd, args := WorkerCommand(exe)
	return []PoolConfig{{
		Pool:     manager.Pool{Name: "default", Warm: warm},
		PoolSpec: farm.PoolSpec{Name: "default", Command: cmd, Args: args, Protocol: farm.ProtocolNative},
	}, viewerPool(exe, false)}, nil
}

// WorkerCommand is how the reference worker is started next to the drover
// executable exe: drover-worker in the same directory (cmd/drover-worker,
// which make build puts there) when it is there, since it starts in about
// half the time, else `exe worker`.
func WorkerCommand(exe string) (string, []string) {
	lean := filepath.Join(filepath.Dir(exe), "drover-worker")
	if fi, err := os.Stat(lean); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return lean, nil
	}
	return exe, []string{"worker"}
}

// Up is a running `drover up`: package drover's server with the state it
// keeps in.
type Up struct {
	node
	Manager *manager.Manager
	Farm    *farm.Farm
}

// NewUp opens the state, builds the manager and the local farm, and
// listens on cfg.Addr; Run (or Start) serves.
func NewUp(cfg UpConfig, log *slog.Logger, reg *prometheus.Registry) (_ *Up, err error) {
	pools, err := cfg.pools(cfg.Pools, cfg.Warm)
	if err != nil {
		return nil, err
	}
	pools = withInitialUse(pools, cfg.StreamInitialUse)
	u := &Up{node: node{grace: shutdownGrace(cfg.ShutdownGrace), reloads: reloads{log: reloadLog(log)}}}
	defer u.undoIfFailed(&err)
	st, err := OpenStore(cfg.Redis, log)
	if err != nil {
		return nil, err
	}
	u.cleanups.PushFunc("store", st.Close)
	conv, err := cfg.conversion(cfg.Redis, jobSlots(cfg.JobSlots), log, &u.cleanups)
	if err != nil {
		return nil, err
	}
	if conv.Converter, err = converter(cfg.Converters, cfg.ConverterRuntimeConfig, upConverterOwner(cfg.Addr),
		log.With("component", "convert"), &u.cleanups); err != nil {
		return nil, err
	}
	cache, err := cfg.open(upCacheDir(cmp.Or(cfg.Data, drover.DefaultDataDir)), log, reg, &u.cleanups)
	if err != nil {
		return nil, err
	}
	tlsc, err := cfg.TLSConfig.manager(&u.reloads)
	if err != nil {
		return nil, err
	}
	authn, err := cfg.authenticator(cfg.AdminToken, cfg.Data, cfg.Redis, log, &u.cleanups)
	if err != nil {
		return nil, err
	}
	u.OnReload("auth keys", authn.Reload)
	u.srv, err = drover.New(drover.Config{
		Addr:  cfg.Addr,
		TLS:   tlsc.listener,
		Pools: pools,
		Manager: cfg.harden(manager.Config{
			FarmTLS:         tlsc.farms,
			RequireFarmCert: tlsc.requireFarmCert,
			Store:           st,
			HealthThreshold: cfg.HealthThreshold,
			ResumeGrace:     cfg.ResumeGrace,
			MaxMessageSize:  cfg.MaxMessageSize,
			Limits:          cfg.Limits(),
			Registerer:      reg,
			Gatherer:        reg,
			AllowedOrigins:  cfg.AllowedOrigins,
			MetricsToken:    cfg.MetricsToken,
			Auth:            authn,
			AdminToken:      cfg.AdminToken,
		}),
		Farm: farm.Config{Slots: cfg.Instances, ReconcileInterval: cfg.ReconcileInterval, StopGrace: cfg.StopGrace,
			Cache: cache},
		Logger:        log,
		ShutdownGrace: u.grace,
		Conversion:    conv,
	})
	if err != nil {
		return nil, err
	}
	u.cleanups.Push("drover", u.srv.Stop)
	u.Manager, u.Farm = u.srv.Manager(), u.srv.Farm()
	if f := cfg.TaskFilter(); f != nil {
		u.Manager.Use(f) // first: a refused task reaches no other middleware
	}
	u.Manager.Use(middleware.Logging(log.With("component", "tasks")))
	return u, nil
}

// jobSlots turns a configured count (0: none) into package drover's (0:
// the default, negative: none).
func jobSlots(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func coalesce(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
