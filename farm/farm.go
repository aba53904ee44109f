package farm

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/farmapi"
)

// Sentinel errors of the farm; they are farmapi's, so that a manager sees
// the same ones from a farm in its process and from one over HTTP.
var (
	ErrNoSlot       = farmapi.ErrNoSlot
	ErrUnknownPool  = farmapi.ErrUnknownPool
	ErrNotFound     = farmapi.ErrNotFound
	ErrClosed       = farmapi.ErrClosed
	ErrStartTimeout = farmapi.ErrStartTimeout
	ErrDraining     = farmapi.ErrDraining
	ErrBadModel     = farmapi.ErrBadModel
	ErrNoSessionDir = farmapi.ErrNoSessionDir
	ErrModelFetch   = farmapi.ErrModelFetch
)

// DefaultStopGrace is Config.StopGrace's default: how long a stopped
// instance has between SIGTERM and SIGKILL.
const DefaultStopGrace = 2 * time.Second

const (
	defaultHost         = "127.0.0.1"
	defaultStartTimeout = 15 * time.Second
	// killWait bounds the wait for a process group to go after SIGKILL; only
	// a process stuck in the kernel takes longer.
	killWait = 5 * time.Second
	// startAttempts: a start that failed because another process took the
	// port between our check and the instance's bind is retried once.
	startAttempts = 2
)

// Config configures a Farm.
type Config struct {
	// ID is the farm id; empty means one derived from the host name plus a
	// random suffix.
	ID   string
	Name string
	// Slots is the number of instances alive at once, all pools together;
	// 0 means one per CPU.
	Slots int
	Pools []PoolSpec
	// Host is the address instances listen on and are reached at; empty
	// means 127.0.0.1. Docker pools publish their containers' ports there
	// (it must be an IP address then), unless they use a Network.
	Host string
	// PortMin and PortMax bound the ports handed to instances; both 0 means
	// ephemeral ports chosen by the kernel.
	PortMin, PortMax int
	// StopGrace is the time between SIGTERM and SIGKILL when an instance is
	// stopped; 0 means DefaultStopGrace. A stop's context can cut it short
	// (the farm's server and drover's local farm stop without one). A
	// container's stop timeout is StopGrace in whole seconds, at least one.
	StopGrace time.Duration
	// Logger receives the farm's log and the instances' output; nil discards.
	Logger *slog.Logger
	// OnExit is called once for each instance that exits although nobody
	// asked it to stop, after it left the farm's books (its slot is free);
	// err describes the exit status. It runs on the instance's supervising
	// goroutine with no farm lock held, so it may call StartInstance or
	// StopInstance, but it must not call Close, which waits for it.
	// Instances that fail while starting are reported to the StartInstance
	// caller instead.
	OnExit func(inst Instance, err error)
	// Registerer receives the farm's metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// StateDir, when set, is where the farm records its instance processes
	// (instances.json), so that the next farm started with the same
	// directory kills what this one left behind; New does that first. See
	// leftovers.go. Containers need no state directory: they carry the
	// farm's id.
	StateDir string
	// ModelsDir holds the model directories starts may name
	// (StartOptions.Model); empty means starts name no model.
	ModelsDir string
	// SessionsDir holds the session directories of streaming sessions
	// (StartOptions.SessionDir); empty means a temporary directory that
	// Close removes. The farm owns it: New removes the session directories
	// of its pools that a previous run left there. See sessiondir.go.
	SessionsDir string
	// Models fetches the files of streaming sessions' models
	// (AddSessionFiles); nil refuses them with ErrModelFetch.
	Models ModelFetcher
	// ReconcileInterval is how often a farm with docker pools removes the
	// containers labelled with its id that it does not track (docker.go);
	// it also does so once in New. 0 means 30 s, negative only in New.
	ReconcileInterval time.Duration
	// Cache is the farm's model cache, which its job slots and model
	// fetches read through and its status reports; nil for none. The
	// caller owns it (closes it after the farm).
	Cache *modelcache.Cache
}

// Farm runs the instances of its pools, processes or containers, in a fixed
// number of slots. All methods are safe for concurrent use.
type Farm struct {
	id        string
	name      string
	slots     int
	host      string
	portMin   int
	portMax   int
	stopGrace time.Duration
	pools     map[string]*pool
	poolNames []string
	environ   []string
	log       *slog.Logger
	onExit    func(Instance, error)
	metrics   *metrics
	state     *stateFile // nil without Config.StateDir
	cache     *modelcache.Cache

	// Protocol adapters (adapter.go).
	modelsDir   string      // absolute; empty: starts name no model
	dialSrv     *dialServer // the private listener dial instances connect to
	binTemp     string      // unpacked binaries to remove at Close
	streamPorts bool        // the range's first Slots ports are the slots' stream ports

	docker *dockerRuntime // nil without docker pools

	// Session directories (sessiondir.go).
	models       ModelFetcher
	sessionsMu   sync.Mutex // guards the modes of session directories, and sessionsDir's making
	sessionsDir  string
	sessionsTemp bool // sessionsDir is the farm's own, removed at Close

	// Test hooks. hookBeforeSpawn runs after a port is chosen and before the
	// process is spawned; hookSpawned runs once the process is on the books.
	hookBeforeSpawn func(port int)
	hookSpawned     func(Instance)

	mu        sync.Mutex
	closed    bool
	draining  bool
	used      int                  // slots held: live instances and starts in progress
	instances map[string]*instance // spawned and not yet reaped
	pending   map[string]struct{}  // ids of starts in progress
	ports     map[int]struct{}     // ports of live instances and starts in progress
	portNext  int                  // round-robin cursor into [portMin, portMax]
	running   int                  // supervising and adapter goroutines alive
	done      chan struct{}        // closed once closed and running == 0
	doneSet   bool
	slotRefs  []int                // holders of each slot number: starts and records
	dialWait  map[string]*dialLink // dial instances by id, from spawn to exit
}

// pool is a PoolSpec with its templates parsed.
type pool struct {
	spec         PoolSpec
	command      *template.Template
	args         []*template.Template
	env          []*template.Template
	startTimeout time.Duration

	// Protocol options with their defaults (adapter.go).
	protocol     string // "native" when the spec leaves it empty
	readiness    string
	idleGap      time.Duration
	liveliness   time.Duration
	initialUse   time.Duration
	spawnRetries int
	spawnBackoff time.Duration
	binDir       string // where Binaries was unpacked

	docker *dockerPool // the docker runtime's options; nil for process pools
}

// instance is the farm's record of one spawned process or container.
type instance struct {
	id      string
	pool    *pool
	port    int
	addr    string
	started time.Time
	unit    unit
	// Set before the record is published.
	pid       int
	container string
	probe     string // where readiness is probed when not at addr (a container's own address)

	slot     int    // the slot number it holds
	model    string // StartOptions.Model
	modelDir string
	warm     bool // StartOptions.Warm: no InitialUse
	// sessionDir: modelDir is the instance's own session directory, removed
	// when it exits (set once it is ready; guarded by Farm.mu).
	sessionDir bool
	dial       *dialLink    // dial instances
	stdio      *stdioLink   // stdio instances
	stream     *streamWatch // stream instances; guarded by Farm.mu

	// exited is closed once the process is reaped (the container removed)
	// and the record has left the farm's books; exitErr and stderrTail are
	// set before that.
	exited     chan struct{}
	exitErr    error
	stderrTail string

	// Guarded by Farm.mu.
	state    State
	stopping bool  // a stop was requested: the exit is no crash
	owned    bool  // the instance holds its slot (handed out, or abandoned by its start)
	cause    error // why the farm killed it (kill): its exit is a crash
}

// templateData is what Command, Args and Env templates see.
type templateData struct {
	Port int
	ID   string
	Addr string
	Host string
	Pool string
	// Adapters' fields; see PoolSpec.Command.
	PrivatePort int
	Model       string
	ModelDirs   string
	Binaries    string
}

// New validates cfg and returns a Farm with no instances.
func New(cfg Config) (*Farm, error) {
	f := &Farm{
		id:        cfg.ID,
		name:      cfg.Name,
		slots:     cfg.Slots,
		host:      cmp.Or(cfg.Host, defaultHost),
		portMin:   cfg.PortMin,
		portMax:   cfg.PortMax,
		stopGrace: cmp.Or(cfg.StopGrace, DefaultStopGrace),
		pools:     make(map[string]*pool, len(cfg.Pools)),
		environ:   os.Environ(),
		log:       cfg.Logger,
		onExit:    cfg.OnExit,
		cache:     cfg.Cache,
		instances: make(map[string]*instance),
		pending:   make(map[string]struct{}),
		ports:     make(map[int]struct{}),
		done:      make(chan struct{}),
	}
	if f.id == "" {
		f.id = defaultID()
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case f.slots < 0:
		return nil, fmt.Errorf("farm: slots must not be negative, got %d", f.slots)
	case f.slots == 0:
		f.slots = runtime.NumCPU()
	}
	switch {
	case f.portMin == 0 && f.portMax == 0:
	case f.portMin < 1 || f.portMax > 65535 || f.portMin > f.portMax:
		return nil, fmt.Errorf("farm: bad port range %d-%d", f.portMin, f.portMax)
	default:
		f.portNext = mrand.IntN(f.portMax - f.portMin + 1)
	}
	if f.stopGrace < 0 {
		return nil, fmt.Errorf("farm: stop grace must not be negative, got %s", f.stopGrace)
	}
	for _, spec := range cfg.Pools {
		p, err := parsePool(spec)
		if err != nil {
			return nil, err
		}
		if _, dup := f.pools[spec.Name]; dup {
			return nil, fmt.Errorf("farm: pool %q defined twice", spec.Name)
		}
		f.pools[spec.Name] = p
		f.poolNames = append(f.poolNames, spec.Name)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	f.metrics = m
	if cfg.StateDir != "" {
		if f.state, err = openStateFile(cfg.StateDir, f.id, f.log); err != nil {
			return nil, err
		}
	}
	if err := f.setupAdapters(cfg); err != nil {
		return nil, err
	}
	if err := f.setupSessions(cfg); err != nil {
		return nil, err
	}
	return f, nil
}

func parsePool(spec PoolSpec) (*pool, error) {
	if spec.Name == "" {
		return nil, errors.New("farm: pool without a name")
	}
	if spec.StartTimeout < 0 {
		return nil, fmt.Errorf("farm: pool %q: negative start timeout", spec.Name)
	}
	p := &pool{spec: spec, startTimeout: cmp.Or(spec.StartTimeout, defaultStartTimeout)}
	if err := parseProtocol(p); err != nil {
		return nil, err
	}
	if err := parseRuntime(p); err != nil {
		return nil, err
	}
	parse := func(what, text string) (*template.Template, error) {
		t, err := template.New(what).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("farm: pool %q: %s: %w", spec.Name, what, err)
		}
		return t, nil
	}
	var err error
	if spec.Command != "" { // docker pools may run their image's entrypoint
		if p.command, err = parse("command", spec.Command); err != nil {
			return nil, err
		}
	}
	for i, a := range spec.Args {
		t, err := parse(fmt.Sprintf("args[%d]", i), a)
		if err != nil {
			return nil, err
		}
		p.args = append(p.args, t)
	}
	for i, e := range spec.Env {
		t, err := parse(fmt.Sprintf("env[%d]", i), e)
		if err != nil {
			return nil, err
		}
		p.env = append(p.env, t)
	}
	return p, nil
}

// ID returns the farm id.
func (f *Farm) ID() string { return f.id }

// Name returns the farm's display name.
func (f *Farm) Name() string { return f.name }

// Slots returns the number of instances the farm runs at once.
func (f *Farm) Slots() int { return f.slots }

// Pools returns the pool names in configuration order.
func (f *Farm) Pools() []string { return slices.Clone(f.poolNames) }

// Drain makes the farm refuse new instances with ErrDraining; instances
// already running or starting are left alone. It cannot be undone.
func (f *Farm) Drain() {
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
}

// Draining reports whether Drain was called.
func (f *Farm) Draining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

// Instances returns a snapshot of the live instances (starting, ready or
// stopping), oldest first. Instances that exited are not in it.
func (f *Farm) Instances() []Instance {
	f.mu.Lock()
	out := make([]Instance, 0, len(f.instances))
	for _, inst := range f.instances {
		out = append(out, f.snapshotLocked(inst))
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(a.Started.Compare(b.Started), strings.Compare(a.ID, b.ID))
	})
	return out
}

func (f *Farm) snapshotLocked(inst *instance) Instance {
	return Instance{
		ID:        inst.id,
		Pool:      inst.pool.spec.Name,
		Farm:      f.id,
		Addr:      inst.addr,
		Protocol:  inst.pool.protocol,
		PID:       inst.pid,
		Container: inst.container,
		State:     inst.state,
		Started:   inst.started,
	}
}

// StartInstance starts an instance of the pool with no start options; see
// StartInstanceWith.
func (f *Farm) StartInstance(ctx context.Context, poolName string) (Instance, error) {
	return f.StartInstanceWith(ctx, poolName, StartOptions{})
}

// StartInstanceWith spawns an instance of the pool and waits until it is
// ready: until its port accepts connections, or as its protocol says
// (adapter.go). It fails when ctx is done, when the pool's StartTimeout
// passes (ErrStartTimeout) or when the process or container exits first
// (the error carries its exit status and its last stderr line); the
// instance is then gone and its slot free when StartInstanceWith returns. Dial pools try a failed spawn again
// (SpawnRetries). opts.Model must name a directory under the models
// directory (ErrBadModel).
func (f *Farm) StartInstanceWith(ctx context.Context, poolName string, opts StartOptions) (Instance, error) {
	p, ok := f.pools[poolName]
	if !ok {
		return Instance{}, fmt.Errorf("%w: %q", ErrUnknownPool, poolName)
	}
	var modelDir string
	if opts.Model != "" {
		if opts.SessionDir {
			return Instance{}, fmt.Errorf("%w: a start names a model or asks for a session directory, not both", ErrBadModel)
		}
		var err error
		if modelDir, err = f.resolveModel(opts.Model); err != nil {
			return Instance{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Instance{}, fmt.Errorf("farm: start %s: %w", poolName, err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return Instance{}, ErrClosed
	}
	if f.draining {
		f.mu.Unlock()
		return Instance{}, ErrDraining
	}
	if f.used >= f.slots {
		f.mu.Unlock()
		f.metrics.start(poolName, resultNoSlot)
		return Instance{}, ErrNoSlot
	}
	f.used++
	slot := f.takeSlotLocked()
	id := f.newIDLocked(poolName)
	f.pending[id] = struct{}{}
	f.mu.Unlock()
	if opts.SessionDir {
		var err error
		if modelDir, err = f.newSessionDir(poolName); err != nil {
			f.mu.Lock()
			delete(f.pending, id)
			f.used--
			f.dropSlotLocked(slot)
			f.mu.Unlock()
			f.metrics.start(poolName, resultError)
			return Instance{}, err
		}
	}

	begin := time.Now()
	whole, cancel := ctx, context.CancelFunc(func() {})
	if p.spawnRetries == 0 {
		// One deadline for the whole start; retrying pools have one per spawn.
		whole, cancel = context.WithTimeoutCause(ctx, p.startTimeout, ErrStartTimeout)
	}
	defer cancel()
	plan := startPlan{slot: slot, model: opts.Model, modelDir: modelDir, sessionDir: opts.SessionDir, warm: opts.Warm}

	var (
		inst *instance
		err  error
	)
	for attempt, portTries := 0, 1; ; {
		actx, acancel := whole, context.CancelFunc(func() {})
		if p.spawnRetries > 0 {
			actx, acancel = context.WithTimeoutCause(ctx, p.startTimeout, ErrStartTimeout)
		}
		inst, err = f.startAttempt(actx, p, id, begin, plan)
		acancel()
		if err == nil {
			break
		}
		if errors.Is(err, errPortTaken) && portTries < startAttempts {
			portTries++
			f.log.Warn("instance port taken, retrying with another port",
				"instance", id, "pool", poolName, "err", err)
			continue
		}
		if !f.retrySpawn(ctx, p, id, attempt, err) {
			break
		}
		attempt++
		id = f.renewID(poolName, id)
	}

	f.mu.Lock()
	delete(f.pending, id)
	if err != nil {
		f.used-- // a failed start's process is gone and never owned the slot
		f.dropSlotLocked(slot)
		closed := f.closed
		f.mu.Unlock()
		if opts.SessionDir {
			f.removeSessionDir(modelDir)
		}
		if closed && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		f.metrics.start(poolName, startResult(err))
		level := slog.LevelWarn
		if closed || errors.Is(err, context.Canceled) {
			level = slog.LevelDebug // the farm is closing, or the caller gave up: nothing failed
		}
		f.log.Log(context.Background(), level, "instance start failed", "instance", id, "pool", poolName, "err", err)
		return Instance{}, err
	}
	out := f.snapshotLocked(inst)
	f.mu.Unlock()

	took := time.Since(begin)
	f.metrics.start(poolName, resultReady)
	f.metrics.startDuration(poolName, took)
	f.log.Info("instance ready", "instance", id, "pool", poolName,
		inst.unitAttr(), "addr", out.Addr, "took", took)
	return out, nil
}

// newIDLocked returns an instance id unused by live instances and starts in
// progress. The caller holds f.mu.
func (f *Farm) newIDLocked(poolName string) string {
	for {
		id := poolName + "-" + randHex(4)
		_, live := f.instances[id]
		_, starting := f.pending[id]
		if !live && !starting {
			return id
		}
	}
}

// startAttempt spawns one process or container for the instance id and
// waits until it is ready. On failure it is gone and its port released; the
// caller still holds the slot.
func (f *Farm) startAttempt(ctx context.Context, p *pool, id string, begin time.Time, plan startPlan) (*instance, error) {
	port, err := f.instancePort(p, plan.slot)
	if err != nil {
		return nil, fmt.Errorf("farm: start %s: %w", id, err)
	}
	inst := &instance{
		id:       id,
		pool:     p,
		port:     port,
		addr:     f.instanceAddr(port),
		started:  begin,
		state:    StateStarting,
		exited:   make(chan struct{}),
		slot:     plan.slot,
		model:    plan.model,
		modelDir: plan.modelDir,
		warm:     plan.warm,
	}
	inst.unit, err = f.newUnit(inst)
	if err == nil {
		err = f.prepare(inst)
	}
	if err != nil {
		f.releasePort(port)
		return nil, fmt.Errorf("farm: start %s: %w", id, err)
	}
	if f.hookBeforeSpawn != nil {
		f.hookBeforeSpawn(port)
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		f.releasePort(port)
		f.spawnDone(inst, false)
		return nil, ErrClosed
	}
	f.running++
	f.mu.Unlock()
	spawned := make(chan error, 1)
	go f.supervise(ctx, inst, spawned)
	if err := <-spawned; err != nil {
		f.spawnDone(inst, false)
		return nil, fmt.Errorf("farm: start %s: %w", id, err)
	}
	f.spawnDone(inst, true)

	err = f.awaitInstance(ctx, inst)
	if err == nil {
		f.mu.Lock()
		if inst.state == StateStarting {
			inst.owned = true
			inst.sessionDir = plan.sessionDir // its exit removes the directory now
			f.setStateLocked(inst, StateReady)
			f.readyLocked(inst)
			f.mu.Unlock()
			return inst, nil
		}
		cause := inst.cause
		f.mu.Unlock()
		// It exited or is being stopped (or killed) while we probed it.
		err = errStoppedEarly
		if cause != nil {
			err = cause
		}
		select {
		case <-inst.exited:
			err = f.earlyExitError(inst)
		default:
		}
	}
	f.abandon(inst)
	return nil, fmt.Errorf("farm: start %s: %w", id, err)
}

// errStoppedEarly: a stop request (or Close) took the instance while it started.
var errStoppedEarly = errors.New("stopped before ready")

// errExitedEarly: the process or container exited on its own before it was
// ready.
var errExitedEarly = errors.New("exited before ready")

// errPortTaken marks a start that failed because its port was taken.
var errPortTaken = errors.New("port taken")

// awaitReady probes the instance's address until it accepts a connection.
// Probes start 1 ms apart and back off to probeInterval: most programs bind
// within a few milliseconds of exec, and a cold start serves a waiting client.
// A process that says it listens (ReadyFDEnv) is taken at its word: it is
// not probed again, only checked to hold its port (owns). drover's worker
// says so the moment it listens, and so is spared the probe that would
// find it: a connection it would accept and serve, and the farm make,
// while warm pools refill beside the sessions being served.
// A container is probed at its own address: its published port accepts
// connections (Docker's proxy does) before the program inside listens.
func (f *Farm) awaitReady(ctx context.Context, inst *instance) error {
	addr := inst.addr
	if inst.container != "" {
		addr = inst.probe // empty when it exited at once: it waits for the exit
	}
	delay := time.Millisecond
	note := inst.unit.notified()
	// A process given the readiness pipe was exec'd a moment ago: its
	// first probe waits the first delay, not a refusal sure to come.
	noted, probeNow := false, note == nil
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		// A process that already exited is not ready, even if something else
		// answers on its port.
		select {
		case <-inst.exited:
			return f.earlyExitError(inst)
		default:
		}
		if noted || probeNow && addr != "" && probe(ctx, addr) {
			// Another program may hold the port (another farm's instance,
			// anything that bound it after allocPort looked): then the
			// instance can never bind it, and its clients must not be sent
			// there.
			inGroup, known := inst.unit.owns(inst.port)
			if inGroup || !known {
				return nil
			}
			if noted {
				return fmt.Errorf("%w: the process said it listens, but not on %s", errPortTaken, inst.addr)
			}
			return fmt.Errorf("%w: another process listens on %s", errPortTaken, inst.addr)
		}
		t.Reset(delay)
		select {
		case <-inst.exited:
			return f.earlyExitError(inst)
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-note:
			noted = true
			continue
		case <-t.C:
		}
		probeNow = true
		delay = min(2*delay, probeInterval)
	}
}

// earlyExitError describes an instance that exited before it was ready;
// inst.exited must be closed.
func (f *Farm) earlyExitError(inst *instance) error {
	f.mu.Lock()
	stopped := inst.stopping
	f.mu.Unlock()
	if stopped {
		return errStoppedEarly
	}
	err := fmt.Errorf("%w: %w", errExitedEarly, inst.exitErr)
	if inst.stderrTail != "" {
		err = fmt.Errorf("%w (last stderr line: %q)", err, inst.stderrTail)
	}
	if inst.port != 0 && inst.container == "" && portTaken(f.host, inst.port, inst.stderrTail) {
		err = fmt.Errorf("%w: %w", errPortTaken, err)
	}
	return err
}

// abandon takes down an instance whose start failed and waits until it is
// gone. If it does not go in time, the record keeps the slot until it does.
func (f *Farm) abandon(inst *instance) {
	f.mu.Lock()
	alive := inst.state != StateExited
	if alive {
		inst.stopping = true
		f.setStateLocked(inst, StateStopping)
	}
	f.mu.Unlock()
	if !alive {
		return
	}
	inst.unit.kill()
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-inst.exited:
	case <-t.C:
		// Hand the slot to the record: the supervisor frees it on exit.
		f.mu.Lock()
		if inst.state != StateExited {
			inst.owned = true
			f.used++ // balances the caller's release
			f.slotRefs[inst.slot]++
		}
		f.mu.Unlock()
		f.log.Error("instance did not exit after SIGKILL", "instance", inst.id, inst.unitAttr())
	}
}

// StopInstance stops an instance: SIGTERM to its process group, SIGKILL after
// the stop grace or when ctx is done, whichever comes first; then it waits
// until the process is gone. Whatever is left of the group when the instance
// process exits is killed. A container is stopped by the Docker daemon with
// the stop grace as its timeout (its image's stop signal, then SIGKILL),
// killed when ctx is done first, and removed once it exited; StopInstance
// returns after the removal. StopInstance returns ErrNotFound for an id the farm
// does not know (or no longer knows), which callers treat as success.
// Concurrent stops of one instance all wait for it. A stopped instance is no
// crash: OnExit is not called, and a start in progress fails.
func (f *Farm) StopInstance(ctx context.Context, id string) error {
	inst, err := f.beginStop(id)
	if err != nil {
		return err
	}
	return f.awaitStop(ctx, inst)
}

// beginStop marks an instance stopping and, the first time, asks it to
// stop (SIGTERM, or the container's stop); awaitStop does the rest.
func (f *Farm) beginStop(id string) (*instance, error) {
	f.mu.Lock()
	inst, ok := f.instances[id]
	if !ok {
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	first := !inst.stopping
	inst.stopping = true
	f.setStateLocked(inst, StateStopping)
	f.mu.Unlock()

	if first {
		inst.unit.terminate()
	}
	return inst, nil
}

// awaitStop waits until an instance that beginStop asked to stop is gone,
// killing it after the stop grace or when ctx is done.
func (f *Farm) awaitStop(ctx context.Context, inst *instance) error {
	id := inst.id
	grace := time.NewTimer(f.stopGrace)
	defer grace.Stop()
	select {
	case <-inst.exited:
		return nil
	case <-grace.C:
		f.log.Warn("instance still running after the stop grace, killing it", "instance", id, inst.unitAttr())
	case <-ctx.Done():
		f.log.Warn("stop cut short before the stop grace, killing the instance", "instance", id, inst.unitAttr(),
			"reason", context.Cause(ctx))
	}
	inst.unit.kill()
	kill := time.NewTimer(killWait)
	defer kill.Stop()
	select {
	case <-inst.exited:
		return nil
	case <-kill.C:
		return fmt.Errorf("farm: stop %s: %s did not exit after SIGKILL", id, inst.unit)
	}
}

// Close stops every instance in parallel, refuses new starts with ErrClosed,
// and waits until every goroutine the farm started has returned, or until
// ctx is done. Instances get the stop grace unless ctx ends first. Close is
// idempotent; every call waits.
func (f *Farm) Close(ctx context.Context) error {
	f.mu.Lock()
	first := !f.closed
	f.closed = true
	var ids []string
	if first {
		for id := range f.instances {
			ids = append(ids, id)
		}
	}
	f.mu.Unlock()

	var err error
	if first {
		errs := make([]error, len(ids))
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Go(func() {
				if err := f.StopInstance(ctx, id); !errors.Is(err, ErrNotFound) {
					errs[i] = err
				}
			})
		}
		wg.Wait()
		err = errors.Join(errs...)
		f.closeAdapters(false)
		f.mu.Lock()
		f.maybeDoneLocked()
		f.mu.Unlock()
		f.log.Info("farm closed", "farm", f.id, "stopped", len(ids))
	}
	select {
	case <-f.done:
		if first {
			f.closeAdapters(true)
			f.closeSessions()
		}
		return err
	case <-ctx.Done():
		if first {
			// Their supervisors stop waiting on the Docker daemon; the next
			// farm with this id removes what is left of their containers.
			f.docker.abort()
		}
		return errors.Join(err, fmt.Errorf("farm: close: instances still exiting: %w", ctx.Err()))
	}
}

// maybeDoneLocked closes f.done once the farm is closed and no supervisor is
// left. The caller holds f.mu.
func (f *Farm) maybeDoneLocked() {
	if f.closed && f.running == 0 && !f.doneSet {
		f.doneSet = true
		close(f.done)
	}
}

// setStateLocked moves inst to state and keeps the gauge in step. The caller
// holds f.mu.
func (f *Farm) setStateLocked(inst *instance, state State) {
	if inst.state == state {
		return
	}
	f.metrics.transition(inst.pool.spec.Name, inst.state, state)
	inst.state = state
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// defaultID derives a farm id from the host name's first label plus a
// random suffix, so two farms on one host differ.
func defaultID() string {
	host, _ := os.Hostname()
	return hostLabel(host) + "-" + randHex(3)
}
