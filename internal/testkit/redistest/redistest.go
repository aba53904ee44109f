// Package redistest runs real redis-server processes for tests: one per
// Start, on a free loopback port, without persistence (StartPersistent:
// with it), stopped when the test ends. Tests can stop, kill and restart a
// server to see how their code lives through an outage.
//
// redis-server comes from the Debian package of that name
// (scripts/setup.sh installs it). Without it a test is skipped, or fails
// when CI=true.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

const (
	readyWithin = 10 * time.Second // a started server answers by then
	stopWithin  = 5 * time.Second  // SIGTERM, then SIGKILL
)

// Server is one redis-server process.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	out  testutil.SyncBuffer // the server's log, for failure messages
	// persist: an append-only file, synced on every write
	persist bool

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed once cmd has been waited for
}

// Start launches redis-server on a free 127.0.0.1 port and returns once it
// answers. The server is stopped when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, false)
}

// StartPersistent is Start with an append-only file that the server syncs
// on every write: after Kill and Restart the server has every write it
// acknowledged.
func StartPersistent(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, true)
}

func start(tb testing.TB, persist bool) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: testutil.Program(tb, "redis-server", "redis-server"), dir: tb.TempDir(), persist: persist}
	tb.Cleanup(s.Stop)
	// Another process may take the free port before the server binds it:
	// try a few.
	for attempt := 0; ; attempt++ {
		var err error
		s.port, err = freePort()
		if err == nil {
			err = s.start()
		}
		if err == nil {
			return s
		}
		if attempt == 2 {
			tb.Fatalf("redistest: %v", err)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a go-redis client of the server, closed when tb ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// start runs the server on s.port and polls it until it answers, or fails
// if it exits (the port is taken) or does not answer in time.
func (s *Server) start() error {
	aof := []string{"--appendonly", "no"}
	if s.persist {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	cmd := exec.Command(s.bin, append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--dir", s.dir, "--loglevel", "warning"}, aof...)...)
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(readyWithin)
	for {
		if answers(s.Addr(), cmd.Process.Pid) == nil {
			return nil
		}
		select {
		case <-exited:
			s.Stop()
			return fmt.Errorf("redis-server on port %d exited: %s; log:\n%s", s.port, cmd.ProcessState, s.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server on port %d did not answer within %v; log:\n%s", s.port, readyWithin, s.out.String())
		}
	}
}

// answers reports whether the server at addr answers and is process pid:
// after a restart, another test's server may hold the port.
func answers(addr string, pid int) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	rd := bufio.NewReader(c)
	head, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil {
		return fmt.Errorf("INFO answered %q", head)
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(rd, info); err != nil {
		return err
	}
	if !strings.Contains(string(info), "\nprocess_id:"+strconv.Itoa(pid)+"\r") {
		return fmt.Errorf("another process answers on %s", addr)
	}
	return nil
}

// Stop terminates the server (SIGTERM, SIGKILL after 5 s) and waits for
// it. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopWithin):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart stops the server if it runs and starts it again on the same
// port, retrying while the port is not yet free: empty, or for
// StartPersistent with what its append-only file holds.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	deadline := time.Now().Add(readyWithin)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // back off; the port frees on its own
	}
}
