// Package forkthread starts child processes from one OS thread that lives
// as long as the process.
//
// Linux sends a child its parent-death signal (SysProcAttr.Pdeathsig) when
// the thread that forked it exits, not when its process does, and the Go
// runtime ends the thread of a goroutine that exits while locked to it. A
// child forked from whatever thread a goroutine ran on could so be killed
// while its parent lives on. Locking the goroutine that starts a child to
// its thread until the child is reaped is safe too, but holds a thread for
// each live child (`drover up` with 80 instances ran 85 threads so), and
// every wake of that goroutine waits for its own thread to be scheduled.
//
// Start runs exec.Cmd.Start on the fork thread instead: a goroutine locked
// to its thread for the life of the process, which never exits. The child
// is then waited for and reaped from any goroutine (the same `drover up`
// runs 7 threads).
package forkthread

import (
	"os/exec"
	"runtime"
	"sync"
)

// Goroutine names the fork thread's goroutine, which lives as long as the
// process, for goroutine leak checks (goleak.IgnoreTopFunction).
const Goroutine = "github.com/drover-dev/drover/internal/lib/forkthread.serve"

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	once     sync.Once
	requests chan request
)

// Start starts cmd on the fork thread and returns Start's error. Starts
// are serialised: each takes the fork and exec of one child, which return
// once the child runs its program (os/exec forks with vfork).
func Start(cmd *exec.Cmd) error {
	once.Do(func() {
		requests = make(chan request)
		go serve()
	})
	r := request{cmd: cmd, done: make(chan error, 1)}
	requests <- r
	return <-r.done
}

// serve is the fork thread's goroutine. It never returns and never
// unlocks: its thread lives as long as the process.
func serve() {
	runtime.LockOSThread()
	for r := range requests {
		r.done <- r.cmd.Start()
	}
}
