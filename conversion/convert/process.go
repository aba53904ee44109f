package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/lib/forkthread"
)

// outputTail is how much of a converter's output is kept: the end, where
// the errors are.
const outputTail = 16 << 10

// killGrace is how long a canceled converter's process group has between
// SIGTERM and SIGKILL; waitDelay how long its pipes may stay open after
// that, held by a grandchild, before Wait gives up on them.
const (
	killGrace = time.Second
	waitDelay = killGrace + time.Second
)

func killGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// ProcessRunner runs converters as processes of the farm. Each runs in its
// own process group, killed as a whole when its context ends (SIGTERM, then
// SIGKILL a second later), so that xvfb-run's X server does not outlive a
// timeout, and gets SIGKILL if drover dies.
//
// Memory and CPUTime limit each process of a converter, through util-linux's
// prlimit: it sets the limits on itself and then executes the converter,
// whose children inherit them. Go's fork cannot set resource limits between
// fork and exec, and limits set on drover itself would apply to all of it.
// A converter killed for its CPU time is known by the signal; one that ran
// out of its address space fails as it can, so it is recognised by what it
// printed ("out of memory", "bad_alloc", …). A container (DockerRunner) is
// the surer limit of memory.
type ProcessRunner struct {
	// Memory limits each process's address space (RLIMIT_AS), in bytes; 0
	// for no limit. Address space is more than memory used: programs
	// reserve much they never touch (a Go program a gigabyte, llvmpipe's
	// threads their stacks), so leave room.
	Memory int64
	// CPUTime limits each process's CPU time (RLIMIT_CPU), rounded up to
	// whole seconds; 0 for no limit. At the limit the kernel sends
	// SIGXCPU, and SIGKILL a second later.
	CPUTime time.Duration
	// Prlimit is util-linux's prlimit program; "" for "prlimit" on PATH.
	Prlimit string
}

var _ Runner = (*ProcessRunner)(nil)

// Check reports whether the runner can apply its limits: prlimit is
// there when they are set.
func (r *ProcessRunner) Check() error {
	if r.Memory < 0 || r.CPUTime < 0 {
		return errors.New("convert: negative converter limits")
	}
	if r.Memory == 0 && r.CPUTime == 0 {
		return nil
	}
	if _, err := exec.LookPath(r.prlimit()); err != nil {
		return fmt.Errorf("convert: converter limits need prlimit (Debian package util-linux): %w", err)
	}
	return nil
}

func (r *ProcessRunner) prlimit() string {
	if r.Prlimit == "" {
		return "prlimit"
	}
	return r.Prlimit
}

// cpuSeconds is the CPU time limit in whole seconds, rounded up.
func (r *ProcessRunner) cpuSeconds() int64 {
	return int64((r.CPUTime + time.Second - 1) / time.Second)
}

// Run implements Runner.
func (r *ProcessRunner) Run(ctx context.Context, inv Invocation) ([]byte, error) {
	argv := inv.Argv
	if r.Memory > 0 || r.CPUTime > 0 {
		// The converter is found here, so a missing one is reported as
		// exec reports it, not as prlimit's failure.
		prog, err := exec.LookPath(argv[0])
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrToolFailed, argv[0], err)
		}
		argv = []string{r.prlimit(), "--core=0"}
		if r.Memory > 0 {
			argv = append(argv, fmt.Sprintf("--as=%d", r.Memory))
		}
		if s := r.cpuSeconds(); s > 0 {
			argv = append(argv, fmt.Sprintf("--cpu=%d:%d", s, s+1))
		}
		argv = append(append(argv, "--", prog), inv.Argv[1:]...)
	}
	var out tailBuffer
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Dir = inv.Dir
	c.Stdout = &out
	c.Stderr = &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// On cancel, SIGTERM the whole group first, so Xvfb removes its lock
	// file and socket, then SIGKILL what is left. The group's id is the
	// leader's pid.
	var killTimer *time.Timer
	c.Cancel = func() error {
		pgid := c.Process.Pid
		killTimer = time.AfterFunc(killGrace, func() { _ = killGroup(pgid, syscall.SIGKILL) })
		return killGroup(pgid, syscall.SIGTERM)
	}
	c.WaitDelay = waitDelay
	// Pdeathsig fires when the thread that forked the child exits, not the
	// process: the child is forked on a thread that lives as long as the
	// process (forkthread explains).
	err := forkthread.Start(c)
	if err == nil {
		err = c.Wait()
	}
	if killTimer != nil {
		// Canceled: the leader is gone; sweep the rest of its group.
		killTimer.Stop()
		_ = killGroup(c.Process.Pid, syscall.SIGKILL)
	}
	output := out.Bytes()
	if err != nil {
		if le := r.limitHit(c.ProcessState, output); le != nil && ctx.Err() == nil {
			return output, fmt.Errorf("%w: %s: %w", ErrToolFailed, inv.Argv[0], le)
		}
		return output, fmt.Errorf("%w: %s: %w", ErrToolFailed, inv.Argv[0], err)
	}
	return output, nil
}

// limitHit tells whether a converter that failed was killed for a limit:
// SIGXCPU, or SIGKILL after its CPU time, for the CPU time limit; words
// of running out of memory in its output, under a memory limit.
func (r *ProcessRunner) limitHit(ps *os.ProcessState, output []byte) *LimitError {
	if ps == nil {
		return nil
	}
	if r.CPUTime > 0 {
		ws, _ := ps.Sys().(syscall.WaitStatus)
		used := ps.UserTime() + ps.SystemTime()
		if ws.Signaled() && (ws.Signal() == syscall.SIGXCPU || ws.Signal() == syscall.SIGKILL && used >= time.Duration(r.cpuSeconds())*time.Second) {
			return &LimitError{Kind: LimitCPUTime, Value: formatDuration(time.Duration(r.cpuSeconds()) * time.Second)}
		}
	}
	if r.Memory > 0 && outOfMemory(output) {
		return &LimitError{Kind: LimitMemory, Value: FormatBytes(r.Memory)}
	}
	return nil
}

// outOfMemory reports whether a converter's output says it could not get
// memory, as C, C++, Go, Python and Tcl programs say it.
func outOfMemory(output []byte) bool {
	s := strings.ToLower(string(output))
	for _, p := range []string{"out of memory", "cannot allocate memory", "bad_alloc", "memory exhausted",
		"failed to reserve", "unable to allocate", "memoryerror", "allocation failed", "not enough memory"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// tailBuffer keeps the last outputTail bytes written to it. Both of a
// process's output streams write to it, from exec's copying goroutines.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= outputTail {
		t.buf = append(t.buf[:0], p[len(p)-outputTail:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - outputTail; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
