// Package loadtest is `drover load`: it measures drover against a direct
// connection to the reference worker in the same run and reports ratios, so
// that the figures mean something on any machine.
//
// By default it starts everything it needs in this process: a reference
// worker on loopback (the direct baseline) and a full drover stack (a
// manager and a local farm whose instances are child processes of the
// reference worker). Every scenario runs the same client code against both.
//
// It owns the scenarios, their clients and the report. It does not own the
// servers it measures: those are the worker, manager and farm packages,
// wired as `drover up` wires them (package app).
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/worker"
)

// The scenarios, in the order they are reported.
const (
	ScenarioLatency    = "latency"
	ScenarioThroughput = "throughput"
	ScenarioBulk       = "bulk"
	ScenarioIdle       = "idle"
)

// Scenarios lists every scenario in report order.
var Scenarios = []string{ScenarioLatency, ScenarioThroughput, ScenarioBulk, ScenarioIdle}

// RoleIdleClient makes Run the client side of the idle scenario: the
// process the tool starts to hold idle connections outside its own heap.
const RoleIdleClient = "idle-client"

// Config configures a run. The zero value of each field means its default.
type Config struct {
	// Duration is how long each scenario measures each target (5 s), after
	// a short warm-up.
	Duration time.Duration
	// Conns is the number of connections of the throughput scenario (64).
	Conns int
	// Window is the number of tasks each throughput connection keeps in
	// flight (1: the tasks of a session run in order anyway).
	Window int
	// Idle is the number of idle connections of the idle scenario (1000).
	Idle int
	// Scenarios picks scenarios by name (all of Scenarios).
	Scenarios []string
	// Target is the WebSocket URL of an external drover (ws://host/ws)
	// measured instead of a stack started here.
	Target string
	// Baseline is the WebSocket URL of an external reference worker
	// measured instead of one started here. With Target or Baseline the idle
	// scenario is skipped: it reads the servers' memory in this process.
	Baseline string
	// JSON writes the report as JSON instead of a table.
	JSON bool
	// CPUProfile, when set, is the file a CPU profile of the whole run is
	// written to. Client goroutines carry the label side=client, the
	// in-process worker side=worker and the manager side=manager.
	CPUProfile string

	// WorkerCommand is the argv of the instances of the drover stack; empty
	// means this executable's worker subcommand. WorkerEnv is added to
	// their environment.
	WorkerCommand []string
	WorkerEnv     []string
	// ClientCommand is the argv prefix of the idle scenario's client
	// process, to which --target=URL and --idle=N are appended; empty means
	// this executable's `load --role=idle-client`. ClientEnv is added to its
	// environment.
	ClientCommand []string
	ClientEnv     []string

	// Role, when RoleIdleClient, makes Run the idle client: it holds Idle
	// connections to Target, writes "ready" and waits for Stdin to end.
	Role  string
	Stdin io.Reader

	// Logger receives the log of the servers started here; nil discards.
	Logger *slog.Logger
	// Progress, when set, receives one line per step of the run.
	Progress io.Writer
}

func (c *Config) defaults() error {
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Conns <= 0 {
		c.Conns = 64
	}
	if c.Window <= 0 {
		c.Window = 1
	}
	if c.Idle <= 0 {
		c.Idle = 1000
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("loadtest: unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	for _, u := range []string{c.Target, c.Baseline} {
		if u != "" && !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			return fmt.Errorf("loadtest: %q is not a ws:// or wss:// URL", u)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Stdin == nil {
		c.Stdin = os.Stdin
	}
	return nil
}

func (c *Config) wants(s string) bool { return slices.Contains(c.Scenarios, s) }

// external reports whether a server is measured that this process does not
// host, which rules out the idle scenario.
func (c *Config) external() bool { return c.Target != "" || c.Baseline != "" }

// Run runs the selected scenarios against both targets and writes the
// report to out. It returns early with ctx's error when ctx ends.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	if cfg.Role == RoleIdleClient {
		return idleClient(ctx, cfg.Target, cfg.Idle, cfg.Stdin, out)
	}
	if cfg.Role != "" {
		return fmt.Errorf("loadtest: unknown role %q", cfg.Role)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("loadtest: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return fmt.Errorf("loadtest: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}

	r := &run{cfg: cfg}
	defer r.close()
	if err := r.start(ctx); err != nil {
		return err
	}
	rep, err := r.scenarios(ctx)
	if err != nil {
		return err
	}
	if cfg.JSON {
		return rep.writeJSON(out)
	}
	return rep.writeTable(out)
}

// run is one run: the servers it started and how to reach both targets.
type run struct {
	cfg      Config
	direct   string // URL of the reference worker
	drover   string // URL of the drover endpoint
	stack    *stack // nil when Target is external
	cleanups []func()
}

func (r *run) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "drover load: "+format+"\n", args...)
}

func (r *run) close() {
	for _, fn := range slices.Backward(r.cleanups) {
		fn()
	}
}

func (r *run) start(ctx context.Context) error {
	r.direct, r.drover = r.cfg.Baseline, r.cfg.Target
	if r.direct == "" {
		url, stop, err := startWorker(r.cfg.Logger)
		if err != nil {
			return err
		}
		r.cleanups = append(r.cleanups, stop)
		r.direct = url
	}
	if r.drover == "" {
		// Throughput binds one instance per connection; the other scenarios
		// need one.
		n := 1
		if r.cfg.wants(ScenarioThroughput) {
			n = r.cfg.Conns
		}
		r.progress("starting a drover stack with %d warm instances", n)
		st, err := startStack(r.cfg, n)
		if err != nil {
			return err
		}
		r.cleanups = append(r.cleanups, st.close)
		r.stack = st
		r.drover = st.url()
		if err := st.waitWarm(ctx); err != nil {
			return err
		}
	}
	return nil
}

// scenarios runs the selected scenarios. Idle runs first, while the stacks
// are quiet; throughput runs last because its sessions end by killing all
// instances of the stack, which are then started again.
func (r *run) scenarios(ctx context.Context) (*report, error) {
	rep := &report{Config: reportConfig{
		Duration:   r.cfg.Duration.String(),
		Conns:      r.cfg.Conns,
		Window:     r.cfg.Window,
		Idle:       r.cfg.Idle,
		GoVersion:  runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		Direct:     r.direct,
		Drover:     r.drover,
	}}
	order := []string{ScenarioIdle, ScenarioLatency, ScenarioBulk, ScenarioThroughput}
	for _, sc := range order {
		if !r.cfg.wants(sc) {
			continue
		}
		if sc == ScenarioIdle && r.cfg.external() {
			r.progress("idle: skipped, it needs both servers in this process")
			continue
		}
		rows, err := r.scenario(ctx, sc)
		if err != nil {
			return nil, fmt.Errorf("loadtest: %s: %w", sc, err)
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	slices.SortStableFunc(rep.Rows, func(a, b Row) int {
		return slices.Index(Scenarios, a.Scenario) - slices.Index(Scenarios, b.Scenario)
	})
	return rep, nil
}

// measure runs fn against the direct worker, then against drover, labelled
// for the CPU profile.
func (r *run) measure(ctx context.Context, sc string, fn func(ctx context.Context, target, url string) error) error {
	for _, t := range []struct{ name, url string }{{"direct", r.direct}, {"drover", r.drover}} {
		if t.name == "drover" && r.stack != nil {
			// The previous scenario's sessions ended and their instances are
			// being replaced: measure once the pool is whole again.
			if err := r.stack.waitWarm(ctx); err != nil {
				return err
			}
		}
		r.progress("%s: %s", sc, t.name)
		var err error
		pprof.Do(ctx, pprof.Labels("side", "client", "scenario", sc, "target", t.name), func(ctx context.Context) {
			err = fn(ctx, t.name, t.url)
		})
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return nil
}

func (r *run) scenario(ctx context.Context, sc string) ([]Row, error) {
	d := r.cfg.Duration
	switch sc {
	case ScenarioLatency:
		var res [2]latencies
		err := r.measure(ctx, sc, func(ctx context.Context, target, url string) error {
			l, err := runLatency(ctx, url, d)
			res[index(target)] = l
			return err
		})
		if err != nil {
			return nil, err
		}
		return latencyRows(res[0], res[1]), nil
	case ScenarioThroughput:
		var res [2]float64
		err := r.measure(ctx, sc, func(ctx context.Context, target, url string) error {
			v, err := runThroughput(ctx, url, r.cfg.Conns, r.cfg.Window, d)
			res[index(target)] = v
			return err
		})
		if err != nil {
			return nil, err
		}
		return []Row{newRow(sc, "msg/s", res[0], res[1],
			fmt.Sprintf("%d conns, window %d", r.cfg.Conns, r.cfg.Window))}, nil
	case ScenarioBulk:
		var res [2]float64
		err := r.measure(ctx, sc, func(ctx context.Context, target, url string) error {
			v, err := runBulk(ctx, url, d)
			res[index(target)] = v
			return err
		})
		if err != nil {
			return nil, err
		}
		return []Row{newRow(sc, "MB/s", res[0]/1e6, res[1]/1e6, "64 KiB binary frames")}, nil
	case ScenarioIdle:
		return r.idle(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", sc)
}

func index(target string) int {
	if target == "direct" {
		return 0
	}
	return 1
}

// startWorker serves the reference worker on a loopback port in this
// process.
func startWorker(log *slog.Logger) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("loadtest: listen for the worker: %w", err)
	}
	w := worker.New(worker.Config{Logger: log.With("component", "direct-worker")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go pprof.Do(ctx, pprof.Labels("side", "worker"), func(ctx context.Context) {
		defer close(done)
		if err := w.Serve(ctx, ln); err != nil {
			log.Warn("direct worker stopped", "err", err)
		}
	})
	return "ws://" + ln.Addr().String() + "/", func() { cancel(); <-done }, nil
}

// stack is a drover started in this process, as `drover up` runs it.
type stack struct {
	up     *app.Up
	warm   int
	cancel context.CancelFunc
	done   chan error
	log    *slog.Logger
}

// startStack starts a manager and a local farm with instances slots, all of
// them kept warm.
func startStack(cfg Config, instances int) (*stack, error) {
	var pools []app.PoolConfig
	if len(cfg.WorkerCommand) > 0 {
		pools = []app.PoolConfig{{
			Pool: manager.Pool{Name: "default", Warm: instances},
			PoolSpec: farm.PoolSpec{Name: "default", Command: cfg.WorkerCommand[0],
				Args: cfg.WorkerCommand[1:], Env: cfg.WorkerEnv, Protocol: farm.ProtocolNative},
		}}
	} else {
		// The pool of `drover up`, with quiet workers: the farm logs an
		// instance's stderr as warnings.
		var err error
		if pools, err = app.DefaultPools(instances); err != nil {
			return nil, fmt.Errorf("loadtest: %w", err)
		}
		pools[0].Args = append(pools[0].Args, "--log-level=warn")
	}
	var (
		up  *app.Up
		err error
	)
	// Goroutines inherit the labels of the goroutine that starts them: the
	// manager's connections to the instances it warms now, and everything
	// its server starts, count as side=manager in a CPU profile.
	ctx, cancel := context.WithCancel(context.Background())
	ctx = pprof.WithLabels(ctx, pprof.Labels("side", "manager"))
	pprof.Do(ctx, pprof.Labels(), func(context.Context) {
		up, err = app.NewUp(app.UpConfig{
			Addr:          "127.0.0.1:0",
			Instances:     instances,
			Warm:          instances,
			Pools:         pools,
			ShutdownGrace: 10 * time.Second,
		}, cfg.Logger, prometheus.NewRegistry())
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("loadtest: start drover: %w", err)
	}
	st := &stack{up: up, warm: instances, cancel: cancel, done: make(chan error, 1), log: cfg.Logger}
	go pprof.Do(ctx, pprof.Labels(), func(ctx context.Context) {
		st.done <- up.Run(ctx)
	})
	return st, nil
}

func (s *stack) url() string { return "ws://" + s.up.Addr().String() + "/ws" }

// waitWarm waits until every instance slot holds an idle instance.
func (s *stack) waitWarm(ctx context.Context) error {
	const limit = 2 * time.Minute
	deadline := time.Now().Add(limit)
	for s.up.Manager.Capacity().Idle < s.warm {
		if time.Now().After(deadline) {
			return fmt.Errorf("drover: %d warm instances not ready within %s (capacity %+v)",
				s.warm, limit, s.up.Manager.Capacity())
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (s *stack) close() {
	s.cancel()
	if err := <-s.done; err != nil {
		s.log.Warn("drover stack shutdown", "err", err)
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errStalled is returned when a server stops answering within a scenario.
var errStalled = errors.New("the server stopped answering")
