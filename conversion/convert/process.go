package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
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

// runCommand runs cmd in dir without a shell and returns the tail of its
// output, stdout and stderr interleaved. The process runs in its own
// process group, killed as a whole when ctx ends, so xvfb-run's X server
// does not outlive a timeout; it gets SIGKILL if drover dies.
func runCommand(ctx context.Context, dir string, cmd Command) ([]byte, error) {
	for _, f := range cmd.Files {
		if err := os.WriteFile(f.Path, f.Data, 0o600); err != nil {
			return nil, err
		}
	}
	var out tailBuffer
	c := exec.CommandContext(ctx, cmd.Argv[0], cmd.Argv[1:]...)
	c.Dir = dir
	c.Stdout = &out
	c.Stderr = &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// On cancel, SIGTERM the whole group first, so Xvfb removes its lock
	// file and socket, then SIGKILL what is left. The group's id is the
	// leader's pid.
	var killTimer *time.Timer
	c.Cancel = func() error {
		pgid := c.Process.Pid
		killTimer = time.AfterFunc(killGrace, func() { killGroup(pgid, syscall.SIGKILL) })
		return killGroup(pgid, syscall.SIGTERM)
	}
	c.WaitDelay = waitDelay
	// Pdeathsig fires when the thread that forked the child exits, not the
	// process: stay on this thread until the child is reaped (farm's
	// process.go explains).
	runtime.LockOSThread()
	err := c.Run()
	runtime.UnlockOSThread()
	if killTimer != nil {
		// Canceled: the leader is gone; sweep the rest of its group.
		killTimer.Stop()
		_ = killGroup(c.Process.Pid, syscall.SIGKILL)
	}
	output := out.Bytes()
	if err != nil {
		return output, fmt.Errorf("%w: %s: %w", ErrToolFailed, cmd.Argv[0], err)
	}
	if cmd.Check != nil {
		if err := cmd.Check(output); err != nil {
			return output, fmt.Errorf("%w: %w", ErrToolFailed, err)
		}
	}
	return output, nil
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
