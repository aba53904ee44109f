package farm

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"text/template"
)

// Runtimes: where an instance runs. The farm's books, slots, ports,
// readiness, adapters, stops and crash reports are the same for every
// runtime; a unit is the part that differs, one running instance as its
// runtime sees it. processUnit (process.go) is a process group on the
// farm's host, containerUnit (docker.go) a Docker container.

// Runtime names of PoolSpec.Runtime.
const (
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"
)

// unit is one instance's process group or container. The supervising
// goroutine calls start, then wait, then cleanup, in that order; the other
// methods may be called from any goroutine once start succeeded, also after
// the instance exited, when they do nothing.
type unit interface {
	// start spawns the instance. ctx bounds the spawn, not the instance's
	// life. On error nothing is left running.
	start(ctx context.Context) error
	// wait blocks until the instance exited and returns how; never nil.
	wait() error
	// cleanup takes down what the instance left behind (the rest of its
	// process group; the container itself) and flushes its output.
	cleanup()
	// terminate asks the instance to end: SIGTERM to a process group; a
	// container is stopped with the stop grace, after which the daemon
	// kills it.
	terminate()
	// kill ends the instance at once (SIGKILL).
	kill()
	// owns reports whether the listener on port (the one a probe found,
	// or the one the instance said it opened) belongs to the instance;
	// known is false when the farm cannot tell.
	owns(port int) (yes, known bool)
	// notified, when not nil, is closed once the instance said that it
	// listens (ReadyFDEnv): the instance is then ready without a probe,
	// once owns finds its listener.
	notified() <-chan struct{}
	// stderrTail is the last line the instance wrote to stderr; valid
	// after cleanup.
	stderrTail() string
	// pid is the instance's process id on the farm's host (0 for a
	// container); container is the short container id ("" for a
	// process). Valid after start.
	pid() int
	container() string
	// String names the unit for logs and errors: "process 4711",
	// "container 0123456789ab".
	String() string
}

var (
	_ unit = (*processUnit)(nil)
	_ unit = (*containerUnit)(nil)
)

// rendered is a pool's templates rendered for one instance.
type rendered struct {
	command string // empty for a container that runs its image's entrypoint
	args    []string
	env     []string // the pool's Env entries only
	dir     string
}

// render executes the pool's Command, Args and Env templates with data.
func render(p *pool, data templateData) (rendered, error) {
	var sb strings.Builder
	exec := func(t *template.Template) (string, error) {
		sb.Reset()
		if err := t.Execute(&sb, data); err != nil {
			return "", fmt.Errorf("render %s: %w", t.Name(), err)
		}
		return sb.String(), nil
	}
	var (
		out rendered
		err error
	)
	if p.command != nil {
		if out.command, err = exec(p.command); err != nil {
			return rendered{}, err
		}
	}
	out.args = make([]string, len(p.args))
	for i, t := range p.args {
		if out.args[i], err = exec(t); err != nil {
			return rendered{}, err
		}
	}
	out.env = make([]string, 0, len(p.env))
	for _, t := range p.env {
		kv, err := exec(t)
		if err != nil {
			return rendered{}, err
		}
		out.env = append(out.env, kv)
	}
	out.dir = p.spec.Dir
	return out, nil
}

// newUnit makes the unit of a new instance for its pool's runtime.
func (f *Farm) newUnit(inst *instance) (unit, error) {
	if inst.pool.docker != nil {
		return f.docker.newUnit(inst)
	}
	return f.newProcessUnit(inst)
}

// outputWriters are the line loggers of an instance's stdout and stderr.
func (f *Farm) outputWriters(inst *instance) (stdout, stderr *lineWriter) {
	log := f.log.With("instance", inst.id, "pool", inst.pool.spec.Name)
	stdout = &lineWriter{log: log.With("stream", "stdout"), level: slog.LevelInfo}
	stderr = &lineWriter{log: log.With("stream", "stderr"), level: slog.LevelWarn, keepTail: true}
	return stdout, stderr
}

// unitAttr names an instance's process or container in a log record.
func (inst *instance) unitAttr() slog.Attr {
	if inst.container != "" {
		return slog.String("container", inst.container)
	}
	return slog.Int("pid", inst.pid)
}

// supervise spawns inst's unit, reports the spawn on spawned, publishes
// inst, and waits until the unit exits; then it takes inst off the farm's
// books and reports a crash to OnExit.
func (f *Farm) supervise(ctx context.Context, inst *instance, spawned chan<- error) {
	defer func() {
		f.mu.Lock()
		f.running--
		f.maybeDoneLocked()
		f.mu.Unlock()
	}()
	poolName := inst.pool.spec.Name
	u := inst.unit

	if err := u.start(ctx); err != nil {
		f.releasePort(inst.port)
		spawned <- err
		return
	}
	inst.pid = u.pid()
	inst.container = u.container()
	f.mu.Lock()
	closed := f.closed
	if closed {
		// Close took its snapshot before this instance existed.
		inst.stopping = true
	}
	f.instances[inst.id] = inst
	f.metrics.transition(poolName, "", inst.state)
	snap := f.snapshotLocked(inst)
	f.mu.Unlock()
	f.state.record(f)
	if f.hookSpawned != nil {
		f.hookSpawned(snap)
	}
	spawned <- nil
	f.log.Debug("instance spawned", "instance", inst.id, "pool", poolName, inst.unitAttr(), "addr", inst.addr)
	if closed {
		u.kill()
	}

	exitErr := u.wait()
	u.cleanup()

	f.mu.Lock()
	delete(f.instances, inst.id)
	delete(f.ports, inst.port)
	crashed := inst.owned && !inst.stopping
	if inst.owned {
		f.used--
		f.dropSlotLocked(inst.slot)
	}
	if inst.cause != nil {
		exitErr = fmt.Errorf("%w: %w", inst.cause, exitErr)
	}
	inst.exitErr = exitErr
	inst.stderrTail = u.stderrTail()
	f.metrics.transition(poolName, inst.state, "") // exited instances are not counted
	inst.state = StateExited
	snap = f.snapshotLocked(inst)
	sessionDir := inst.sessionDir
	f.mu.Unlock()
	f.state.record(f)
	if sessionDir {
		f.removeSessionDir(inst.modelDir)
	}
	close(inst.exited)
	f.detach(inst)

	if !crashed {
		f.log.Info("instance exited", "instance", inst.id, "pool", poolName, inst.unitAttr(), "status", exitErr)
		return
	}
	f.metrics.exit(poolName)
	f.log.Warn("instance exited unexpectedly", "instance", inst.id, "pool", poolName, inst.unitAttr(), "err", exitErr)
	if f.onExit != nil {
		f.onExit(snap, fmt.Errorf("farm: instance %s exited: %w", inst.id, exitErr))
	}
}
