package farm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The glue between the process runtime and the protocol adapters: pool
// options per protocol, the per-farm resources the adapters need (the dial
// listener, unpacked binaries, slot numbers), and the hooks the start and
// exit paths call. The manager speaks the native protocol to every
// instance; each adapter_*.go file adapts one other protocol to it and says
// how. README.md ("Instance programs") and docs/protocol.md describe the
// protocols for users.

const (
	defaultSpawnRetries = 3
	defaultSpawnBackoff = 2 * time.Second
)

// parseProtocol checks the protocol-specific options of p.spec and fills in
// their defaults.
func parseProtocol(p *pool) error {
	spec := &p.spec
	bad := func(format string, args ...any) error {
		return fmt.Errorf("farm: pool %q: "+format, append([]any{spec.Name}, args...)...)
	}
	p.protocol = spec.Protocol
	if p.protocol == "" {
		p.protocol = ProtocolNative
	}
	switch p.protocol {
	case ProtocolNative, ProtocolDial, ProtocolStdio, ProtocolStream:
	default:
		return bad("unsupported protocol %q", spec.Protocol)
	}
	for name, d := range map[string]time.Duration{
		"idle_gap": spec.IdleGap, "liveliness": spec.Liveliness, "initial_use": spec.InitialUse,
		"spawn_backoff": spec.SpawnBackoff,
	} {
		if d < 0 {
			return bad("negative %s", name)
		}
	}
	switch spec.Readiness {
	case "", ReadinessProbe:
		p.readiness = ReadinessProbe
	case ReadinessLiveliness:
		if p.protocol != ProtocolStream {
			return bad("readiness %q is for stream pools", spec.Readiness)
		}
		p.readiness = ReadinessLiveliness
	default:
		return bad("unknown readiness %q", spec.Readiness)
	}
	if spec.Delimiter != "" && p.protocol != ProtocolStdio {
		return bad("a delimiter is for stdio pools")
	}
	p.idleGap = cmp0(spec.IdleGap, defaultIdleGap)
	p.liveliness = cmp0(spec.Liveliness, defaultLiveliness)
	p.initialUse = cmp0(spec.InitialUse, defaultInitialUse)
	if p.protocol == ProtocolDial {
		switch {
		case spec.SpawnRetries == 0:
			p.spawnRetries = defaultSpawnRetries
		case spec.SpawnRetries > 0:
			p.spawnRetries = spec.SpawnRetries
		}
		p.spawnBackoff = cmp0(spec.SpawnBackoff, defaultSpawnBackoff)
	}
	return nil
}

func cmp0(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// setupAdapters prepares what the pools' protocols and runtimes need, once,
// when the farm is made: the models directory, the slot numbers, the dial
// listener, the unpacked binaries and the Docker runtime. On error nothing
// is left behind.
func (f *Farm) setupAdapters(cfg Config) (err error) {
	f.slotRefs = make([]int, f.slots)
	f.dialWait = make(map[string]*dialLink)
	if cfg.ModelsDir != "" {
		abs, err := filepath.Abs(cfg.ModelsDir)
		if err != nil {
			return fmt.Errorf("farm: models directory: %w", err)
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return fmt.Errorf("farm: models directory %s is no directory", abs)
		}
		f.modelsDir = abs
	}
	var dial, stream, other bool
	for _, name := range f.poolNames {
		switch f.pools[name].protocol {
		case ProtocolDial:
			dial = true
		case ProtocolStream:
			stream = true
		case ProtocolNative:
			other = true
		}
	}
	if stream && f.portMin != 0 {
		// The first Slots ports of the range are the slots' stream ports;
		// native instances take theirs from the rest.
		n := f.portMax - f.portMin + 1
		need := f.slots
		if other {
			need++ // and native pools at least one more
		}
		if n < need {
			return fmt.Errorf("farm: port range %d-%d: stream pools need one port per slot (%d), native pools more",
				f.portMin, f.portMax, f.slots)
		}
		f.streamPorts = true
		if rest := n - f.slots; rest > 0 {
			f.portNext %= rest
		}
	}
	defer func() {
		if err != nil {
			f.closeAdapters(true)
		}
	}()
	if dial {
		if f.dialSrv, err = newDialServer(f); err != nil {
			return err
		}
	}
	for _, name := range f.poolNames {
		p := f.pools[name]
		if p.spec.Binaries == "" {
			continue
		}
		base := ""
		if cfg.StateDir != "" {
			base = filepath.Join(cfg.StateDir, "binaries")
		} else {
			if f.binTemp == "" {
				if f.binTemp, err = os.MkdirTemp("", "drover-binaries-"); err != nil {
					return fmt.Errorf("farm: binaries: %w", err)
				}
			}
			base = f.binTemp
		}
		if p.binDir, err = unpackBinaries(p.spec.Binaries, base, name, cfg.StateDir != ""); err != nil {
			return fmt.Errorf("farm: pool %q: %w", name, err)
		}
		f.log.Info("pool binaries unpacked", "pool", name, "dir", p.binDir)
	}
	for _, name := range f.poolNames {
		if f.pools[name].docker != nil {
			// Last: it removes the containers a previous run left behind.
			f.docker, err = newDockerRuntime(f, cfg.ReconcileInterval)
			return err
		}
	}
	return nil
}

// closeAdapters releases what setupAdapters made: the dial listener and,
// when final, the unpacked binaries of a farm without a state directory and
// the Docker runtime (Close releases those only once no instance can use
// them any more). It may be called again.
func (f *Farm) closeAdapters(final bool) {
	if f.dialSrv != nil {
		f.dialSrv.close()
	}
	if final {
		f.docker.close()
	}
	if final && f.binTemp != "" {
		if err := os.RemoveAll(f.binTemp); err != nil {
			f.log.Warn("remove unpacked binaries", "dir", f.binTemp, "err", err)
		}
	}
}

// takeSlotLocked numbers a slot a start takes; f.mu is held.
func (f *Farm) takeSlotLocked() int {
	for i, n := range f.slotRefs {
		if n == 0 {
			f.slotRefs[i] = 1
			return i
		}
	}
	// f.used < f.slots, so a slot number is free unless a record outlived
	// its start (abandon); share the last one rather than fail.
	f.slotRefs[len(f.slotRefs)-1]++
	return len(f.slotRefs) - 1
}

func (f *Farm) dropSlotLocked(slot int) {
	if f.slotRefs[slot] > 0 {
		f.slotRefs[slot]--
	}
}

// instancePort picks the port of a new instance: none for protocols that
// need none, the slot's port for stream instances when the farm has a port
// range, and any free port otherwise.
func (f *Farm) instancePort(p *pool, slot int) (int, error) {
	switch {
	case p.protocol == ProtocolDial || p.protocol == ProtocolStdio:
		return 0, nil
	case p.protocol == ProtocolStream && f.streamPorts:
		port := f.portMin + slot
		if !f.reservePort(port) {
			return 0, fmt.Errorf("slot port %d still held", port)
		}
		if !portFree(f.host, port) {
			f.releasePort(port)
			return 0, fmt.Errorf("slot port %d is in use by another process", port)
		}
		return port, nil
	}
	return f.allocPort()
}

// prepare sets up the adapter of a new instance before its unit is
// spawned.
func (f *Farm) prepare(inst *instance) error {
	switch inst.pool.protocol {
	case ProtocolDial:
		inst.dial = newDialLink(f, inst)
		f.mu.Lock()
		f.dialWait[inst.id] = inst.dial
		f.mu.Unlock()
	case ProtocolStdio:
		// parseRuntime keeps stdio pools on the process runtime.
		l, err := newStdioLink(f, inst, inst.unit.(*processUnit).cmd)
		if err != nil {
			return fmt.Errorf("pipes: %w", err)
		}
		inst.stdio = l
	case ProtocolStream:
		inst.stream = &streamWatch{ready: make(chan struct{})}
	}
	return nil
}

// spawnDone is called once the spawn of inst succeeded (running) or failed.
func (f *Farm) spawnDone(inst *instance, running bool) {
	if inst.stdio != nil {
		inst.stdio.started(running)
	}
	if !running {
		f.detach(inst)
	}
}

// detach releases an instance's adapter once its process is gone (or was
// never spawned): manager connections close, a task in flight is lost.
func (f *Farm) detach(inst *instance) {
	if inst.dial != nil {
		f.mu.Lock()
		if f.dialWait[inst.id] == inst.dial {
			delete(f.dialWait, inst.id)
		}
		f.mu.Unlock()
		inst.dial.close()
	}
	if inst.stdio != nil {
		inst.stdio.close()
	}
	if inst.stream != nil {
		f.disarmStream(inst)
	}
}

// awaitInstance waits until a spawned instance is ready, the way its
// protocol tells.
// probesPort reports whether the pool's instances are ready when their
// port accepts a connection (awaitReady).
func probesPort(p *pool) bool {
	switch {
	case p.protocol == ProtocolStdio, p.protocol == ProtocolDial:
		return false
	case p.protocol == ProtocolStream && p.readiness == ReadinessLiveliness:
		return false
	}
	return true
}

func (f *Farm) awaitInstance(ctx context.Context, inst *instance) error {
	switch p := inst.pool; {
	case p.protocol == ProtocolStdio:
		return nil
	case p.protocol == ProtocolDial:
		return f.awaitDial(ctx, inst)
	case p.protocol == ProtocolStream && p.readiness == ReadinessLiveliness:
		return f.awaitLiveliness(ctx, inst)
	}
	return f.awaitReady(ctx, inst)
}

// readyLocked is called as an instance becomes ready; f.mu is held.
func (f *Farm) readyLocked(inst *instance) {
	if inst.stream != nil {
		f.armStreamLocked(inst)
	}
}

// kill ends an instance the farm gave up on with SIGKILL. Its exit is
// reported to OnExit like a crash, with cause in the error. An instance
// already exiting or being stopped is left to that.
func (f *Farm) kill(inst *instance, cause error) {
	f.mu.Lock()
	if inst.state == StateExited || inst.stopping || inst.cause != nil {
		f.mu.Unlock()
		return
	}
	inst.cause = cause
	f.setStateLocked(inst, StateStopping)
	f.mu.Unlock()
	f.log.Warn("killing instance", "instance", inst.id, "pool", inst.pool.spec.Name, inst.unitAttr(), "err", cause)
	inst.unit.kill()
}

// retrySpawn decides whether a dial start that failed with err gets
// another attempt, and waits out the backoff if so.
func (f *Farm) retrySpawn(ctx context.Context, p *pool, id string, attempt int, err error) bool {
	if attempt >= p.spawnRetries || ctx.Err() != nil ||
		errors.Is(err, errStoppedEarly) || errors.Is(err, ErrClosed) || errors.Is(err, ErrDraining) {
		return false
	}
	f.log.Warn("instance spawn failed, retrying", "instance", id, "pool", p.spec.Name,
		"attempt", attempt+1, "of", p.spawnRetries+1, "backoff", p.spawnBackoff, "err", err)
	t := time.NewTimer(p.spawnBackoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed
}

// renewID gives a start that retries a fresh instance id, so that nothing
// of the failed attempt (a late handshake) can be taken for the new one.
func (f *Farm) renewID(poolName, id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pending, id)
	id = f.newIDLocked(poolName)
	f.pending[id] = struct{}{}
	return id
}

// goTracked runs fn on a goroutine that Close waits for. It returns false,
// without running fn, once the farm has finished closing.
func (f *Farm) goTracked(fn func()) bool {
	f.mu.Lock()
	if f.doneSet {
		f.mu.Unlock()
		return false
	}
	f.running++
	f.mu.Unlock()
	go func() {
		defer func() {
			f.mu.Lock()
			f.running--
			f.maybeDoneLocked()
			f.mu.Unlock()
		}()
		fn()
	}()
	return true
}

// templateFields fills the adapters' template fields.
func (f *Farm) templateFields(inst *instance, d *templateData) {
	if f.dialSrv != nil {
		d.PrivatePort = f.dialSrv.port
	}
	d.Model = inst.model
	d.ModelDirs = inst.modelDir
	if d.ModelDirs == "" {
		d.ModelDirs = f.modelsDir
	}
	d.Binaries = inst.pool.binDir
}

// resolveCommand applies the pool's unpacked binaries to a rendered command
// and working directory.
func resolveCommand(p *pool, name, dir string) (string, string) {
	if p.binDir == "" {
		return name, dir
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(p.binDir, name)
	}
	if dir == "" {
		dir = p.binDir
	} else if !filepath.IsAbs(dir) {
		dir = filepath.Join(p.binDir, dir)
	}
	return name, dir
}

// instanceAddr is host:port, or empty for an instance without a port.
func (f *Farm) instanceAddr(port int) string {
	if port == 0 {
		return ""
	}
	return net.JoinHostPort(f.host, strconv.Itoa(port))
}

// startPlan is what every attempt of one start shares.
type startPlan struct {
	slot     int
	model    string
	modelDir string
	// sessionDir: modelDir is a session directory made for this start.
	sessionDir bool
	warm       bool // StartOptions.Warm
}
