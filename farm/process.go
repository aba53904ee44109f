package farm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

const (
	probeInterval = 20 * time.Millisecond
	probeTimeout  = time.Second
	// ioDrain bounds how long output is still read after a process exited;
	// a descendant that escaped the process group may hold the pipes open.
	ioDrain = time.Second
	// maxLineBytes caps one logged line of instance output; the rest of a
	// longer line is dropped.
	maxLineBytes = 4 << 10
	// maxTailBytes caps the last stderr line kept for error messages.
	maxTailBytes = 256
)

// command renders the pool's templates for inst and builds its command.
func (f *Farm) command(inst *instance) (*exec.Cmd, *lineWriter, *lineWriter, error) {
	p := inst.pool
	data := templateData{
		Port: inst.port,
		ID:   inst.id,
		Addr: inst.addr,
		Host: f.host,
		Pool: p.spec.Name,
	}
	f.templateFields(inst, &data)
	var sb strings.Builder
	render := func(t *template.Template) (string, error) {
		sb.Reset()
		if err := t.Execute(&sb, data); err != nil {
			return "", fmt.Errorf("render %s: %w", t.Name(), err)
		}
		return sb.String(), nil
	}
	name, err := render(p.command)
	if err != nil {
		return nil, nil, nil, err
	}
	args := make([]string, len(p.args))
	for i, t := range p.args {
		if args[i], err = render(t); err != nil {
			return nil, nil, nil, err
		}
	}
	env := make([]string, 0, len(f.environ)+len(p.env)+2)
	env = append(env, f.environ...)
	for _, t := range p.env {
		kv, err := render(t)
		if err != nil {
			return nil, nil, nil, err
		}
		env = append(env, kv)
	}
	// Last wins: exec.Cmd drops earlier duplicates of a key.
	env = append(env, "DROVER_INSTANCE_ID="+inst.id)
	if inst.port != 0 {
		env = append(env, "DROVER_PORT="+strconv.Itoa(inst.port))
	}

	name, dir := resolveCommand(p, name, p.spec.Dir)
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Dir = dir
	// Own process group: a stop signals the whole tree the instance started.
	// Pdeathsig: a farm killed with SIGKILL takes its instances with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	log := f.log.With("instance", inst.id, "pool", p.spec.Name)
	stdout := &lineWriter{log: log.With("stream", "stdout"), level: slog.LevelInfo}
	stderr := &lineWriter{log: log.With("stream", "stderr"), level: slog.LevelWarn, keepTail: true}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = ioDrain
	return cmd, stdout, stderr, nil
}

// supervise spawns cmd, reports the spawn on spawned, publishes inst, and
// waits until the process exits; then it takes inst off the farm's books and
// reports a crash to OnExit.
//
// The goroutine stays locked to its OS thread from spawn to reap. Pdeathsig
// fires when the thread that forked the child exits, not the process, and
// the Go runtime ends threads whose goroutine exits while locked and may
// otherwise retire idle threads. Holding the lock for the child's lifetime
// means that thread lives exactly as long as the child, so the signal fires
// only when the farm process itself dies. It costs no extra thread: Wait
// blocks in waitid, which occupies a thread for the child's lifetime anyway.
// A dedicated spawner thread would serialize every fork through one
// goroutine and still need a waiter per child.
func (f *Farm) supervise(inst *instance, cmd *exec.Cmd, stdout, stderr *lineWriter, spawned chan<- error) {
	defer func() {
		f.mu.Lock()
		f.running--
		f.maybeDoneLocked()
		f.mu.Unlock()
	}()
	poolName := inst.pool.spec.Name

	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		runtime.UnlockOSThread()
		f.releasePort(inst.port)
		spawned <- err
		return
	}
	inst.pid = cmd.Process.Pid
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
	f.log.Debug("instance spawned", "instance", inst.id, "pool", poolName, "pid", inst.pid, "addr", inst.addr)
	if closed {
		signalGroup(inst.pid, syscall.SIGKILL)
	}

	waitErr := cmd.Wait()
	runtime.UnlockOSThread()
	// Take down what the instance left behind in its group. While any
	// member lives the kernel keeps the group id reserved; an empty group's
	// id could in theory be recycled, but pids are handed out cyclically, so
	// not within these microseconds.
	signalGroup(inst.pid, syscall.SIGKILL)
	stdout.flush()
	stderr.flush()
	exitErr := describeExit(waitErr, cmd)

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
	inst.stderrTail = stderr.lastLine()
	f.metrics.transition(poolName, inst.state, "") // exited instances are not counted
	inst.state = StateExited
	snap = f.snapshotLocked(inst)
	f.mu.Unlock()
	f.state.record(f)
	close(inst.exited)
	f.detach(inst)

	if !crashed {
		f.log.Info("instance exited", "instance", inst.id, "pool", poolName, "pid", inst.pid, "status", exitErr)
		return
	}
	f.metrics.exit(poolName)
	f.log.Warn("instance exited unexpectedly", "instance", inst.id, "pool", poolName, "pid", inst.pid, "err", exitErr)
	if f.onExit != nil {
		f.onExit(snap, fmt.Errorf("farm: instance %s exited: %w", inst.id, exitErr))
	}
}

// describeExit turns the result of cmd.Wait into an error that names the
// exit status; it is never nil, since an exit is news to somebody.
func describeExit(waitErr error, cmd *exec.Cmd) error {
	if waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay) {
		return waitErr // an *exec.ExitError: "exit status 3", "signal: killed"
	}
	if ps := cmd.ProcessState; ps != nil {
		return errors.New(ps.String())
	}
	return errors.New("exited")
}

// signalGroup sends sig to the process group led by pid. A group that is
// already gone is no error.
func signalGroup(pid int, sig syscall.Signal) {
	if pid <= 0 {
		return // -0 and -(-1) would hit the farm's own group or everyone
	}
	_ = syscall.Kill(-pid, sig)
}

// probe reports whether addr accepts a TCP connection.
func probe(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// portTaken guesses whether an instance that exited early failed to bind its
// port because another process holds it.
func portTaken(host string, port int, stderrTail string) bool {
	if strings.Contains(strings.ToLower(stderrTail), "address already in use") {
		return true
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	_ = l.Close()
	return false
}

// lineWriter logs what a process writes, one record per line, lines capped
// at maxLineBytes. exec.Cmd calls Write from one goroutine; flush and
// lastLine run after Wait returned, when that goroutine is done.
type lineWriter struct {
	log      *slog.Logger
	level    slog.Level
	keepTail bool

	buf      []byte
	cut      bool // the current line passed maxLineBytes: drop the rest
	mu       sync.Mutex
	lastSeen string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.add(p)
			break
		}
		w.add(p[:i])
		w.endLine()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) add(b []byte) {
	if w.cut {
		return
	}
	if room := maxLineBytes - len(w.buf); len(b) > room {
		w.buf = append(w.buf, b[:room]...)
		w.emit(true)
		w.cut = true
		return
	}
	w.buf = append(w.buf, b...)
}

func (w *lineWriter) endLine() {
	if !w.cut {
		w.emit(false)
	}
	w.cut = false
}

// flush logs a last line that had no newline.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 && !w.cut {
		w.emit(false)
	}
	w.cut = false
}

func (w *lineWriter) emit(truncated bool) {
	line := bytes.TrimRight(w.buf, "\r")
	w.buf = w.buf[:0]
	if len(line) == 0 {
		return
	}
	if w.keepTail {
		tail := line
		if len(tail) > maxTailBytes {
			tail = tail[:maxTailBytes]
		}
		w.mu.Lock()
		w.lastSeen = string(tail)
		w.mu.Unlock()
	}
	ctx := context.Background()
	if !w.log.Enabled(ctx, w.level) {
		return
	}
	if truncated {
		w.log.Log(ctx, w.level, string(line), "truncated", true)
		return
	}
	w.log.Log(ctx, w.level, string(line))
}

// lastLine returns the last non-empty line seen, capped at maxTailBytes.
func (w *lineWriter) lastLine() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSeen
}
