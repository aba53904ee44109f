package forkthread_test

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/internal/lib/forkthread"
)

// The parent-death signal of a child started with Start does not fire when
// the thread of the goroutine that asked for it ends; that of a child the
// goroutine started itself does (the control: the kernel works as the
// package says).
func TestChildOutlivesTheStartersThread(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  func(*exec.Cmd) error
		killed bool
	}{
		{"started on the caller's thread", (*exec.Cmd).Start, true},
		{"started on the fork thread", forkthread.Start, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var err error
			tid := onThreadThatEnds(t, func() { err = tc.start(cmd) })
			require.NoError(t, err)
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

			// The thread is gone once its directory is; the kernel sent
			// the parent-death signal before that.
			task := "/proc/self/task/" + strconv.Itoa(tid)
			require.Eventually(t, func() bool {
				_, err := os.Stat(task)
				return errors.Is(err, os.ErrNotExist)
			}, 10*time.Second, time.Millisecond, "the starter's thread did not end")

			// A SIGTERM now ends the child unless a SIGKILL came first.
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			err = cmd.Wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			ws := ee.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled(), "the child exited by itself: %v", err)
			want := syscall.SIGTERM
			if tc.killed {
				want = syscall.SIGKILL
			}
			require.Equal(t, want, ws.Signal())
		})
	}
}

// onThreadThatEnds runs f in a goroutine locked to its thread, which the
// runtime ends when the goroutine exits, and returns the thread's id. The
// process's main thread never ends: a goroutine that lands there keeps it
// until the test is over, and the next one runs f.
func onThreadThatEnds(t *testing.T, f func()) int {
	for {
		tids := make(chan int)
		release := make(chan struct{})
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			tid := unix.Gettid()
			if tid == unix.Getpid() {
				tids <- 0
				<-release
				runtime.UnlockOSThread()
				return
			}
			f()
			tids <- tid
		}()
		if tid := <-tids; tid != 0 {
			return tid
		}
		t.Cleanup(func() { close(release) })
	}
}

// Start passes cmd.Start's error on.
func TestStartError(t *testing.T) {
	err := forkthread.Start(exec.Command("/nonexistent/program"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// Many goroutines starting at once each get their own child.
func TestConcurrentStarts(t *testing.T) {
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			cmd := exec.Command("true")
			if err := forkthread.Start(cmd); err != nil {
				errs <- err
				return
			}
			errs <- cmd.Wait()
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
}
