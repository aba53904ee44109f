package farm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/lib/forkthread"
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

// ReadyFDEnv names the descriptor a process instance whose readiness is
// probed at its port may write a byte to once it listens on it: the farm
// then takes it as ready without probing again, once it finds the
// listener in the instance's process group. A program that does not know
// of it loses nothing: it is probed (1 ms apart at first, backing off to
// 20 ms). A pool's Env may set it empty.
const ReadyFDEnv = "DROVER_READY_FD"

// processUnit is an instance process and its process group.
type processUnit struct {
	cmd            *exec.Cmd
	stdout, stderr *lineWriter
	pgid           int // the instance's pid, which leads its group; set by start
	// readyR is the farm's end of the readiness pipe, readyW the child's
	// (closed here once it is started); nil when readiness is not probed.
	readyR, readyW *os.File
	note           chan struct{} // closed when the child wrote to the pipe
}

// newProcessUnit renders the pool's templates for inst and builds its
// command. The instance gets the farm's environment plus the pool's Env.
func (f *Farm) newProcessUnit(inst *instance) (*processUnit, error) {
	p := inst.pool
	data := templateData{
		Port: inst.port,
		ID:   inst.id,
		Addr: inst.addr,
		Host: f.host,
		Pool: p.spec.Name,
	}
	f.templateFields(inst, &data)
	r, err := render(p, data)
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, len(f.environ)+len(r.env)+3)
	env = append(env, f.environ...)
	if probesPort(p) {
		// Before the pool's Env: a pool may turn it off with an empty value.
		env = append(env, ReadyFDEnv+"=3")
	}
	env = append(env, r.env...)
	// Last wins: exec.Cmd drops earlier duplicates of a key.
	env = append(env, "DROVER_INSTANCE_ID="+inst.id)
	if inst.port != 0 {
		env = append(env, "DROVER_PORT="+strconv.Itoa(inst.port))
	}

	name, dir := resolveCommand(p, r.command, r.dir)
	cmd := exec.Command(name, r.args...)
	cmd.Env = env
	cmd.Dir = dir
	// Own process group: a stop signals the whole tree the instance started.
	// Pdeathsig: a farm killed with SIGKILL takes its instances with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	u := &processUnit{cmd: cmd}
	if probesPort(p) {
		if u.readyR, u.readyW, err = os.Pipe(); err != nil {
			return nil, err
		}
		cmd.ExtraFiles = []*os.File{u.readyW} // descriptor 3 in the child
		u.note = make(chan struct{})
	}
	u.stdout, u.stderr = f.outputWriters(inst)
	cmd.Stdout = u.stdout
	cmd.Stderr = u.stderr
	cmd.WaitDelay = ioDrain
	return u, nil
}

// start spawns the process on the fork thread (forkthread): Pdeathsig fires
// when the thread that forked the child exits, not the process, and that
// thread lives as long as the farm process, so the signal fires only when
// the farm itself dies. The supervising goroutine is free to run on any
// thread meanwhile.
func (u *processUnit) start(context.Context) error {
	err := forkthread.Start(u.cmd)
	if u.readyW != nil {
		_ = u.readyW.Close() // the child has its copy
	}
	if err != nil {
		if u.readyR != nil {
			_ = u.readyR.Close()
		}
		return err
	}
	u.pgid = u.cmd.Process.Pid
	if u.readyR != nil {
		// Ends at the first byte, at EOF (the child closed its end or
		// exited) or when cleanup closes the pipe.
		go func() {
			var b [1]byte
			if n, _ := u.readyR.Read(b[:]); n == 1 {
				close(u.note)
			}
		}()
	}
	return nil
}

// notified is closed once the process said it listens; nil when it was
// not asked to.
func (u *processUnit) notified() <-chan struct{} { return u.note }

func (u *processUnit) wait() error {
	awaitExit(u.cmd.Process.Pid)
	waitErr := u.cmd.Wait()
	return describeExit(waitErr, u.cmd)
}

// awaitExit parks the caller in the Go netpoller until process pid has
// exited, so that the wait which then reaps it returns at once. Left to
// itself, os.Process.Wait blocks in waitid holding its P until the
// runtime's monitor takes it back (20 µs to 10 ms later): with GOMAXPROCS
// 1 (drover up's default on 2 CPUs) every instance start stalled the
// manager for that long. false means it could not wait so (no pidfds):
// it returns at once, and the wait blocks as before.
func awaitExit(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	// A pidfd is readable once its process has exited. The check comes
	// before each wait: an exit between them wakes the wait.
	err = rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil && err != unix.EINTR || n > 0
	})
	return err == nil
}

// cleanup takes down what the instance left behind in its group. While any
// member lives the kernel keeps the group id reserved; an empty group's id
// could in theory be recycled, but pids are handed out cyclically, so not
// within the microseconds since the reap.
func (u *processUnit) cleanup() {
	signalGroup(u.pgid, syscall.SIGKILL)
	if u.readyR != nil {
		_ = u.readyR.Close()
	}
	u.stdout.flush()
	u.stderr.flush()
}

// terminate lowers the group's CPU priority to stopNice, then sends it
// SIGTERM: what a stopped instance still does (its SIGTERM handler, the
// kernel's teardown of its memory) is for nobody, and yields the CPU to
// the live instances and to the sessions being opened at that moment.
func (u *processUnit) terminate() {
	lowerGroupPriority(u.pgid)
	signalGroup(u.pgid, syscall.SIGTERM)
}

func (u *processUnit) kill() { signalGroup(u.pgid, syscall.SIGKILL) }

func (u *processUnit) owns(port int) (bool, bool) { return listenerInGroup(port, u.pgid) }
func (u *processUnit) stderrTail() string         { return u.stderr.lastLine() }
func (u *processUnit) pid() int                   { return u.pgid }
func (u *processUnit) container() string          { return "" }
func (u *processUnit) String() string             { return "process " + strconv.Itoa(u.pgid) }

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

// stopNice is the nice value of an instance being stopped. Above 0, so
// that a stop does not compete with the instances that still serve
// sessions (a nice-10 task gets about a tenth of the CPU a nice-0 one
// does); not 19, so that a stop on a farm whose every CPU is busy still
// ends within moments and frees its slot. drover bench's cold opens, each
// of which ends the previous session and stops its process, took p50
// 14.4 ms with stops at 10 against 15.7 at 0 (means of five alternations;
// BENCHMARKS.md, stop 27); 19 gained nothing more than 10.
const stopNice = 10

// lowerGroupPriority sets every thread of every process in the group led by
// pid to stopNice: PRIO_PGRP reaches them all, where PRIO_PROCESS would
// reach one thread only. A group whose every thread already runs at
// stopNice or nicer is left alone; a group that is gone is no error.
func lowerGroupPriority(pid int) {
	if pid <= 0 {
		return
	}
	// getpriority's raw system call returns 20 - nice (1..40), not the nice
	// value itself.
	if prio, err := syscall.Getpriority(syscall.PRIO_PGRP, pid); err == nil && 20-prio >= stopNice {
		return
	}
	_ = syscall.Setpriority(syscall.PRIO_PGRP, pid, stopNice)
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
