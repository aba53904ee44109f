package farm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

const waitFor = 15 * time.Second // generous: -race children start slowly on a busy box

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestFarm(t testing.TB, cfg Config) *Farm {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	f, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, f.Close(ctx))
	})
	return f
}

func startCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ask sends one command line to an instance and returns its one-line answer.
func ask(t testing.TB, addr, line string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = fmt.Fprintln(c, line)
	require.NoError(t, err)
	reply, err := bufio.NewReader(c).ReadString('\n')
	if line == "exit" || strings.HasPrefix(line, "exit ") {
		return "" // the child is gone; no reply
	}
	require.NoError(t, err)
	return strings.TrimSpace(reply)
}

// procStat returns the state letter and process group of pid, ok=false if
// there is no such process.
func procStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	fields := statFields(b)
	pgrp, _ = strconv.Atoi(fields[2])
	return fields[0][0], pgrp, true
}

// statFields splits a /proc stat line after the command name: "pid (comm)
// state ppid pgrp ..." gives [state ppid pgrp ...], field 3 of proc(5)
// first. comm may hold spaces and parens.
func statFields(b []byte) []string {
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// gone reports whether pid is dead: no such process, or a zombie nobody
// reaped yet (a reparented grandchild in a container without an init).
func gone(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == 'Z' || state == 'X'
}

func requireGone(t testing.TB, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		require.Eventually(t, func() bool { return gone(pid) }, waitFor, 5*time.Millisecond, "pid %d still alive", pid)
	}
}

// killOnCleanup makes sure a failing test leaves no process behind.
func killOnCleanup(t testing.TB, pid int) {
	t.Cleanup(func() {
		if !gone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

type startResultT struct {
	inst Instance
	err  error
}

// startWatched starts an instance of pool in the background. It returns the
// start's result channel and the instance as soon as its process is spawned;
// it fails the test if the start ends before a process exists.
func startWatched(ctx context.Context, t testing.TB, f *Farm, pool string) (<-chan startResultT, Instance) {
	t.Helper()
	spawned := make(chan Instance, 1)
	f.hookSpawned = func(inst Instance) {
		select {
		case spawned <- inst:
		default:
		}
	}
	res := make(chan startResultT, 1)
	go func() {
		inst, err := f.StartInstance(ctx, pool)
		res <- startResultT{inst, err}
	}()
	select {
	case inst := <-spawned:
		killOnCleanup(t, inst.PID)
		require.Equal(t, StateStarting, inst.State)
		require.Positive(t, inst.PID)
		return res, inst
	case r := <-res:
		t.Fatalf("start of %s ended before its process was spawned: %v", pool, r.err)
	case <-time.After(waitFor):
		t.Fatalf("start of %s: no process spawned", pool)
	}
	panic("unreachable")
}

func TestNew(t *testing.T) {
	t.Parallel()
	ok := childPool("p", "listen")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative slots", Config{Slots: -1}, "slots"},
		{"port range reversed", Config{PortMin: 9001, PortMax: 9000}, "port range"},
		{"port range half", Config{PortMin: 9000}, "port range"},
		{"port range too high", Config{PortMin: 9000, PortMax: 70000}, "port range"},
		{"pool without name", Config{Pools: []PoolSpec{{Command: "x"}}}, "without a name"},
		{"pool without command", Config{Pools: []PoolSpec{{Name: "p"}}}, "no command"},
		{"duplicate pool", Config{Pools: []PoolSpec{ok, ok}}, "twice"},
		{"unknown protocol", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: "carrier-pigeon"}}}, "unsupported protocol"},
		{"bad template", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Args: []string{"{{.Port"}}}}, "args[0]"},
		{"negative start timeout", Config{Pools: []PoolSpec{{Name: "p", Command: "x", StartTimeout: -1}}}, "start timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}

	t.Run("defaults", func(t *testing.T) {
		f, err := New(Config{Pools: []PoolSpec{childPool("b", "listen"), childPool("a", "listen")}})
		require.NoError(t, err)
		require.Regexp(t, regexp.MustCompile(`^[a-z0-9-]+-[0-9a-f]{6}$`), f.ID())
		require.Equal(t, runtime.NumCPU(), f.Slots())
		require.Equal(t, []string{"b", "a"}, f.Pools())
		require.NoError(t, f.Close(context.Background()))
	})
}

func TestStartReady(t *testing.T) {
	t.Parallel()
	p := childPool("echo", "listen", "ECHO_ADDR={{.Addr}}", "ECHO_POOL={{.Pool}}/{{.Host}}", "DROVER_PORT=1")
	f := newTestFarm(t, Config{ID: "farm-1", Slots: 2, Pools: []PoolSpec{p}})

	inst, err := f.StartInstance(startCtx(t), "echo")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	require.Equal(t, StateReady, inst.State)
	require.Equal(t, "echo", inst.Pool)
	require.Equal(t, "farm-1", inst.Farm)
	require.Regexp(t, `^echo-[0-9a-f]{8}$`, inst.ID)
	require.Positive(t, inst.PID)
	host, port, err := net.SplitHostPort(inst.Addr)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	require.NotEqual(t, "0", port)
	require.WithinDuration(t, time.Now(), inst.Started, time.Minute)

	require.Equal(t, "pong "+inst.ID, ask(t, inst.Addr, "ping"))
	require.Equal(t, port, ask(t, inst.Addr, "env DROVER_PORT"), "DROVER_PORT wins over the pool's env")
	require.Equal(t, inst.ID, ask(t, inst.Addr, "env DROVER_INSTANCE_ID"))
	require.Equal(t, inst.Addr+" "+inst.ID, ask(t, inst.Addr, "args"))
	require.Equal(t, inst.Addr, ask(t, inst.Addr, "env ECHO_ADDR"))
	require.Equal(t, "echo/127.0.0.1", ask(t, inst.Addr, "env ECHO_POOL"))
	require.Equal(t, os.Getenv("PATH"), ask(t, inst.Addr, "env PATH"), "the farm's environment is inherited")

	_, pgrp, ok := procStat(inst.PID)
	require.True(t, ok)
	require.Equal(t, inst.PID, pgrp, "the instance leads its own process group")

	require.Equal(t, []Instance{inst}, f.Instances())
}

func TestInstancesSortedByStart(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 2, Pools: []PoolSpec{childPool("p", "listen")}})
	a, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	b, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	got := f.Instances()
	require.Len(t, got, 2)
	require.Equal(t, a.ID, got[0].ID)
	require.Equal(t, b.ID, got[1].ID)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	bad := childPool("bad", "listen")
	bad.Args = []string{"{{.Nope}}"}
	missing := PoolSpec{Name: "missing", Command: "/nonexistent/drover-instance"}
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen"), bad, missing}})

	_, err := f.StartInstance(startCtx(t), "nope")
	require.ErrorIs(t, err, ErrUnknownPool)

	_, err = f.StartInstance(startCtx(t), "bad")
	require.ErrorContains(t, err, "render args[0]")

	_, err = f.StartInstance(startCtx(t), "missing")
	require.ErrorIs(t, err, os.ErrNotExist)

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.StartInstance(canceled, "p")
	require.ErrorIs(t, err, context.Canceled)

	// None of the failures kept the slot or a port.
	_, err = f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	f.mu.Lock()
	ports := len(f.ports)
	f.mu.Unlock()
	require.Equal(t, 1, ports)
}

func TestNoSlot(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	first, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)

	_, err = f.StartInstance(startCtx(t), "p")
	require.ErrorIs(t, err, ErrNoSlot)

	require.NoError(t, f.StopInstance(startCtx(t), first.ID))
	second, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	require.NotEqual(t, first.ID, second.ID)
}

func TestStartTimeoutKillsChild(t *testing.T) {
	t.Parallel()
	p := childPool("never", "never")
	p.StartTimeout = time.Second
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{p}})

	begin := time.Now()
	res, starting := startWatched(startCtx(t), t, f, "never")
	r := <-res
	require.ErrorIs(t, r.err, ErrStartTimeout)
	require.GreaterOrEqual(t, time.Since(begin), time.Second)
	require.True(t, gone(starting.PID), "the child is reaped when StartInstance returns")
	require.Empty(t, f.Instances())
	f.mu.Lock()
	used := f.used
	f.mu.Unlock()
	require.Zero(t, used, "slot freed")
}

func TestStartContextCanceled(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("never", "never")}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, starting := startWatched(ctx, t, f, "never")
	require.Equal(t, []Instance{starting}, f.Instances(), "a starting instance is listed")
	cancel()
	r := <-res
	require.ErrorIs(t, r.err, context.Canceled)
	require.NotErrorIs(t, r.err, ErrStartTimeout)
	require.True(t, gone(starting.PID))
}

func TestEarlyExitFailsFast(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("crash", "crash"), childPool("p", "listen")}})

	begin := time.Now()
	_, err := f.StartInstance(startCtx(t), "crash")
	require.Less(t, time.Since(begin), 10*time.Second, "does not wait for the 20 s start timeout")
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 7, exitErr.ExitCode())
	require.ErrorContains(t, err, "exit status 7")
	require.ErrorContains(t, err, "bad configuration", "the last stderr line explains it")
	require.NotErrorIs(t, err, errPortTaken)

	_, err = f.StartInstance(startCtx(t), "p")
	require.NoError(t, err, "the slot is free again")
}

func TestCrashCallsOnExit(t *testing.T) {
	t.Parallel()
	type exit struct {
		inst Instance
		err  error
		live int
	}
	exits := make(chan exit, 4)
	var f *Farm
	f = newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")},
		OnExit: func(inst Instance, err error) {
			// Instances takes the farm lock: this would hang if OnExit ran under it.
			exits <- exit{inst, err, len(f.Instances())}
		},
	})

	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	ask(t, inst.Addr, "exit 3")

	var got exit
	select {
	case got = <-exits:
	case <-time.After(waitFor):
		t.Fatal("OnExit not called")
	}
	require.Equal(t, inst.ID, got.inst.ID)
	require.Equal(t, inst.PID, got.inst.PID)
	require.Equal(t, StateExited, got.inst.State)
	require.Zero(t, got.live)
	var exitErr *exec.ExitError
	require.ErrorAs(t, got.err, &exitErr)
	require.Equal(t, 3, exitErr.ExitCode())
	require.Empty(t, f.Instances())

	// The slot is free; an instance that is stopped is no crash.
	next, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	require.NoError(t, f.StopInstance(startCtx(t), next.ID))
	require.ErrorIs(t, f.StopInstance(startCtx(t), inst.ID), ErrNotFound)
	require.NoError(t, f.Close(startCtx(t)))
	require.Empty(t, exits, "OnExit is called once, and only for crashes")
}

func TestStopKillsProcessGroup(t *testing.T) {
	t.Parallel()
	var crashes int
	var mu sync.Mutex
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")},
		OnExit: func(Instance, error) { mu.Lock(); crashes++; mu.Unlock() },
	})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	grandchild, err := strconv.Atoi(ask(t, inst.Addr, "spawn"))
	require.NoError(t, err)
	killOnCleanup(t, grandchild)
	_, pgrp, ok := procStat(grandchild)
	require.True(t, ok)
	require.Equal(t, inst.PID, pgrp, "the grandchild is in the instance's group")

	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
	require.True(t, gone(inst.PID), "the instance is reaped when StopInstance returns")
	requireGone(t, grandchild)
	require.Empty(t, f.Instances())

	require.ErrorIs(t, f.StopInstance(startCtx(t), inst.ID), ErrNotFound, "idempotent")
	mu.Lock()
	require.Zero(t, crashes)
	mu.Unlock()
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	t.Parallel()
	t.Run("after grace", func(t *testing.T) {
		t.Parallel()
		f := newTestFarm(t, Config{Slots: 1, StopGrace: 300 * time.Millisecond, Pools: []PoolSpec{childPool("p", "stubborn")}})
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)

		begin := time.Now()
		require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
		require.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond)
		require.True(t, gone(inst.PID))
	})
	t.Run("at context deadline", func(t *testing.T) {
		t.Parallel()
		f := newTestFarm(t, Config{Slots: 1, StopGrace: time.Minute, Pools: []PoolSpec{childPool("p", "stubborn")}})
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		begin := time.Now()
		require.NoError(t, f.StopInstance(ctx, inst.ID))
		require.Less(t, time.Since(begin), 10*time.Second)
		require.True(t, gone(inst.PID))
	})
	t.Run("concurrent stops", func(t *testing.T) {
		t.Parallel()
		f := newTestFarm(t, Config{Slots: 1, StopGrace: 500 * time.Millisecond, Pools: []PoolSpec{childPool("p", "stubborn")}})
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)

		first := make(chan error, 1)
		go func() { first <- f.StopInstance(startCtx(t), inst.ID) }()
		require.Eventually(t, func() bool {
			insts := f.Instances()
			return len(insts) == 1 && insts[0].State == StateStopping
		}, waitFor, time.Millisecond)
		require.NoError(t, f.StopInstance(startCtx(t), inst.ID), "a second stop waits for the same exit")
		require.NoError(t, <-first)
		require.True(t, gone(inst.PID))
	})
}

func TestStopWhileStarting(t *testing.T) {
	t.Parallel()
	var crashes int
	var mu sync.Mutex
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("slow", "slow", delayEnv+"=1h")},
		OnExit: func(Instance, error) { mu.Lock(); crashes++; mu.Unlock() },
	})
	res, starting := startWatched(startCtx(t), t, f, "slow")

	require.NoError(t, f.StopInstance(startCtx(t), starting.ID))
	r := <-res
	require.ErrorIs(t, r.err, errStoppedEarly)
	require.True(t, gone(starting.PID))
	mu.Lock()
	require.Zero(t, crashes)
	mu.Unlock()
}

func TestClose(t *testing.T) {
	t.Parallel()
	f, err := New(Config{Slots: 4, Logger: testLogger(t), Pools: []PoolSpec{
		childPool("p", "listen"),
		childPool("slow", "slow", delayEnv+"=1h"),
	}})
	require.NoError(t, err)

	var pids []int
	for range 3 {
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)
		pids = append(pids, inst.PID)
	}
	res, starting := startWatched(startCtx(t), t, f, "slow")

	require.NoError(t, f.Close(startCtx(t)))
	for _, pid := range append(pids, starting.PID) {
		require.True(t, gone(pid), "pid %d", pid)
	}
	require.ErrorIs(t, (<-res).err, ErrClosed, "a start in flight fails with ErrClosed")
	require.Empty(t, f.Instances())

	_, err = f.StartInstance(startCtx(t), "p")
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, f.Close(startCtx(t)), "idempotent")
}

// TestFarmKilledLeavesNoInstance runs a farm in another process, kills that
// process with SIGKILL and checks that its instances die with it.
func TestFarmKilledLeavesNoInstance(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	helper := exec.Command(exe)
	helper.Env = append(os.Environ(), childEnv+"=farm")
	helper.Stderr = t.Output()
	out, err := helper.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, helper.Start())
	killOnCleanup(t, helper.Process.Pid)

	// StdoutPipe hands out the *os.File, so reads can have a deadline.
	require.NoError(t, out.(*os.File).SetReadDeadline(time.Now().Add(2*waitFor)))
	lines := bufio.NewScanner(out)
	var pids []int
	for len(pids) < 2 && lines.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(lines.Text()))
		require.NoError(t, err, "helper said %q", lines.Text())
		killOnCleanup(t, pid)
		pids = append(pids, pid)
	}
	require.NoError(t, lines.Err())
	require.Len(t, pids, 2)
	for _, pid := range pids {
		require.False(t, gone(pid), "instance %d runs before the farm is killed", pid)
	}

	require.NoError(t, helper.Process.Signal(syscall.SIGKILL))
	_ = helper.Wait()
	requireGone(t, pids...)
}

// freePortRange finds n consecutive free ports below the kernel's ephemeral
// range, so no test that asks the kernel for a port lands in it meanwhile.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if fields := strings.Fields(string(b)); len(fields) == 2 {
			low, _ = strconv.Atoi(fields[0])
		}
	}
	require.Greater(t, low, 10000+n, "ephemeral range starts too low")
	for range 100 {
		base := 10000 + mrand.IntN(low-10000-n)
		free := true
		for p := base; p < base+n && free; p++ {
			free = portFree("127.0.0.1", p)
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestPortRange(t *testing.T) {
	t.Parallel()
	base := freePortRange(t, 2)
	f := newTestFarm(t, Config{Slots: 3, PortMin: base, PortMax: base + 1, Pools: []PoolSpec{childPool("p", "listen")}})

	a, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	b, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	ports := map[string]bool{a.Addr: true, b.Addr: true}
	require.Equal(t, map[string]bool{
		net.JoinHostPort("127.0.0.1", strconv.Itoa(base)):   true,
		net.JoinHostPort("127.0.0.1", strconv.Itoa(base+1)): true,
	}, ports, "each live instance has its own port from the range")

	_, err = f.StartInstance(startCtx(t), "p")
	require.ErrorContains(t, err, "no free port")
	require.NotErrorIs(t, err, ErrNoSlot)

	// A port comes back when its instance goes.
	require.NoError(t, f.StopInstance(startCtx(t), a.ID))
	c, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	require.Equal(t, a.Addr, c.Addr)
}

// TestPortTakenRetries: between the farm's check and the child's bind,
// another process takes the instance's port. The start must retry once on
// another port, and must never report ready because a stranger answered.
func TestPortTakenRetries(t *testing.T) {
	t.Parallel()
	// bound takes the port with a socket that is bound without SO_REUSEADDR
	// but does not listen: probes are refused and the child's bind fails.
	bound := func(t *testing.T, port int) {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		require.NoError(t, err)
		t.Cleanup(func() { _ = syscall.Close(fd) })
		require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}))
	}
	// listening takes the port with a listener that accepts: probes succeed,
	// which is what another farm's instance on the same port looks like.
	listening := func(t *testing.T, port int) {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
	}
	tests := []struct {
		name    string
		mode    string // child mode
		take    func(t *testing.T, port int)
		wantErr error // nil: ready on another port
	}{
		{"bound", "listen", bound, nil},
		{"listening", "listen", listening, nil},
		{"listening, child never ready", "never", listening, ErrStartTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := freePortRange(t, 3)
			p := childPool("p", tt.mode)
			p.StartTimeout = 3 * time.Second
			f := newTestFarm(t, Config{Slots: 1, PortMin: base, PortMax: base + 2, Pools: []PoolSpec{p}})
			var taken []int
			f.hookBeforeSpawn = func(port int) {
				if len(taken) == 0 {
					tt.take(t, port)
				}
				taken = append(taken, port)
			}

			inst, err := f.StartInstance(startCtx(t), "p")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Len(t, taken, 2, "one retry on another port")
				require.NotEqual(t, taken[0], taken[1])
				return
			}
			require.NoError(t, err)
			require.Len(t, taken, 2)
			require.NotEqual(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(taken[0])), inst.Addr)
			require.Equal(t, "pong "+inst.ID, ask(t, inst.Addr, "ping"), "the instance itself answers")
		})
	}
}

func TestParseListeners(t *testing.T) {
	t.Parallel()
	tcp := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
`)
	tcp6 := []byte(`  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
`)
	got, err := appendListeners(nil, bytes.NewReader(tcp), 8080)
	require.NoError(t, err)
	got, err = appendListeners(got, bytes.NewReader(tcp6), 8080)
	require.NoError(t, err)
	require.Equal(t, []uint64{1111, 2222, 5555}, got,
		"listeners on 8080 only: not the established connection, not port 8081")
}

// TestListenInodes checks that sock_diag and /proc/net/tcp agree on a real
// listener, IPv4 and IPv6.
func TestListenInodes(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := map[string]string{"tcp4": "127.0.0.1", "tcp6": "::1"}[network]
			l, err := net.Listen(network, net.JoinHostPort(host, "0"))
			if err != nil && network == "tcp6" {
				t.Skipf("no IPv6: %v", err)
			}
			require.NoError(t, err)
			defer l.Close()
			port := l.Addr().(*net.TCPAddr).Port

			diag, err := diagListeners(port)
			if err != nil {
				t.Skipf("no sock_diag here: %v", err)
			}
			proc, err := procListeners(port)
			require.NoError(t, err)
			require.Len(t, diag, 1)
			require.Equal(t, proc, diag)

			held, err := holdsSocket(os.Getpid(), diag)
			require.NoError(t, err)
			require.True(t, held)
		})
	}
}

func TestListenerInGroup(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	in, ok := listenerInGroup(port, syscall.Getpgrp())
	require.True(t, ok)
	require.True(t, in, "the test process's own group holds the listener")

	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	in, ok = listenerInGroup(port, inst.PID)
	require.True(t, ok)
	require.False(t, in, "an instance's group does not hold the test's listener")
}

// lockedBuffer is an io.Writer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) records() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(b.buf.Bytes()))
	for {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			panic(err)
		}
		out = append(out, rec)
	}
}

func TestOutputLogged(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)

	find := func(match func(rec map[string]any) bool) map[string]any {
		var got map[string]any
		require.Eventually(t, func() bool {
			for _, rec := range logs.records() {
				if rec["instance"] == inst.ID && match(rec) {
					got = rec
					return true
				}
			}
			return false
		}, waitFor, 5*time.Millisecond)
		return got
	}

	rec := find(func(rec map[string]any) bool { return strings.HasPrefix(rec["msg"].(string), "child: listening on") })
	require.Equal(t, "INFO", rec["level"])
	require.Equal(t, "p", rec["pool"])
	require.Equal(t, "stdout", rec["stream"])

	ask(t, inst.Addr, "warn something odd")
	rec = find(func(rec map[string]any) bool { return rec["msg"] == "something odd" })
	require.Equal(t, "WARN", rec["level"])
	require.Equal(t, "stderr", rec["stream"])

	ask(t, inst.Addr, "say 10000")
	rec = find(func(rec map[string]any) bool { return rec["truncated"] == true })
	require.Equal(t, strings.Repeat("x", maxLineBytes), rec["msg"])

	// The rest of the long line is dropped, not logged as a line of its own.
	ask(t, inst.Addr, "warn after")
	find(func(rec map[string]any) bool { return rec["msg"] == "after" })
	for _, rec := range logs.records() {
		if rec["stream"] == "stdout" && strings.HasPrefix(rec["msg"].(string), "x") {
			require.Equal(t, true, rec["truncated"])
		}
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	w := &lineWriter{log: slog.New(slog.NewJSONHandler(&logs, nil)), level: slog.LevelInfo, keepTail: true}
	for _, chunk := range []string{"one\ntw", "o\r\n\n", strings.Repeat("y", maxLineBytes+10), "z\nlast"} {
		n, err := w.Write([]byte(chunk))
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
	w.flush()
	var msgs []string
	for _, rec := range logs.records() {
		msgs = append(msgs, rec["msg"].(string))
	}
	require.Equal(t, []string{"one", "two", strings.Repeat("y", maxLineBytes), "last"}, msgs)
	require.Equal(t, "last", w.lastLine())
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	exited := make(chan struct{}, 1)
	f := newTestFarm(t, Config{Slots: 2, Registerer: reg, Pools: []PoolSpec{childPool("p", "listen"), childPool("crash", "crash")},
		OnExit: func(Instance, error) { exited <- struct{}{} }})

	// A second farm on the same registerer shares the collectors.
	_, err := New(Config{Registerer: reg, Pools: []PoolSpec{childPool("p", "listen")}})
	require.NoError(t, err)

	a, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	b, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	_, err = f.StartInstance(startCtx(t), "p")
	require.ErrorIs(t, err, ErrNoSlot)
	require.Equal(t, 2.0, metricValue(t, reg, "drover_farm_instances", "pool", "p", "state", "ready"))

	require.NoError(t, f.StopInstance(startCtx(t), a.ID))
	ask(t, b.Addr, "exit 1")
	<-exited
	_, err = f.StartInstance(startCtx(t), "crash")
	require.Error(t, err)

	require.Equal(t, 0.0, metricValue(t, reg, "drover_farm_instances", "pool", "p", "state", "ready"))
	require.Equal(t, 0.0, metricValue(t, reg, "drover_farm_instances", "pool", "p", "state", "stopping"))
	require.Equal(t, 0.0, metricValue(t, reg, "drover_farm_instances", "pool", "p", "state", "starting"))
	require.Equal(t, 2.0, metricValue(t, reg, "drover_farm_instance_starts_total", "pool", "p", "result", "ready"))
	require.Equal(t, 1.0, metricValue(t, reg, "drover_farm_instance_starts_total", "pool", "p", "result", "no_slot"))
	require.Equal(t, 1.0, metricValue(t, reg, "drover_farm_instance_starts_total", "pool", "crash", "result", "exited"))
	require.Equal(t, 1.0, metricValue(t, reg, "drover_farm_instance_exits_total", "pool", "p"))
	require.Equal(t, 2.0, metricValue(t, reg, "drover_farm_instance_start_seconds", "pool", "p"))
}

// metricValue returns a gauge's or counter's value, or a histogram's count,
// for the series with the given label pairs.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// BenchmarkStartStopProcess starts and stops instance processes: one that
// says when it listens (ReadyFDEnv, as drover's worker does) and one found
// by probing its port.
func BenchmarkStartStopProcess(b *testing.B) {
	for _, mode := range []string{"notify", "listen"} {
		b.Run(mode, func(b *testing.B) {
			f := newTestFarm(b, Config{Slots: 1, Logger: slog.New(slog.DiscardHandler), Pools: []PoolSpec{childPool("p", mode)}})
			benchStartStop(b, f, "p")
		})
	}
}

// benchStartStop starts and stops an instance of pool on f, b.N times.
func benchStartStop(b *testing.B, f *Farm, pool string) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		inst, err := f.StartInstance(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.StopInstance(ctx, inst.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListenerInGroup is the readiness check's cost on top of a probe:
// when the instance process holds the listener itself, and when a process
// deeper in its group does (a wrapper script), which scans /proc.
func BenchmarkListenerInGroup(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	// Under go test, this process is in the go command's group, not its leader.
	for name, pgid := range map[string]int{"leader": os.Getpid(), "group": syscall.Getpgrp()} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if in, ok := listenerInGroup(port, pgid); !in || !ok {
					b.Fatal("own listener not found")
				}
			}
		})
	}
}

// A process whose port is probed gets a descriptor to say that it listens:
// the reference worker writes to it, a program that knows nothing of it
// is found by the probe as before. Stdio instances get none.
func TestReadyNotification(t *testing.T) {
	stdio := childPool("stdio", "listen")
	stdio.Protocol = ProtocolStdio
	f := newTestFarm(t, Config{Slots: 3, Pools: []PoolSpec{workerPool("worker"), childPool("plain", "listen"), stdio}})
	for _, c := range []struct {
		pool        string
		asked, said bool
	}{{"worker", true, true}, {"plain", true, false}, {"stdio", false, false}} {
		inst, err := f.StartInstance(startCtx(t), c.pool)
		require.NoError(t, err, c.pool)
		killOnCleanup(t, inst.PID)
		f.mu.Lock()
		note := f.instances[inst.ID].unit.notified()
		f.mu.Unlock()
		require.Equal(t, c.asked, note != nil, "%s: given the descriptor", c.pool)
		if !c.asked {
			continue
		}
		// The worker writes right after it listens, so the probe may find
		// it first: wait for the note.
		select {
		case <-note:
			require.True(t, c.said, "%s wrote to the descriptor", c.pool)
		case <-time.After(2 * time.Second):
			require.False(t, c.said, "%s did not write to the descriptor", c.pool)
		}
	}
}

// A process that says it listens is taken at its word: it is not probed
// again, only checked to hold its port. One that says so but does not
// listen on its port is therefore refused at once, and the start says why
// (probed, it would never answer and time out); one that says so and
// listens is ready. TestReadyNotification has the program that says
// nothing, found by probes.
func TestReadyNotificationIsTrusted(t *testing.T) {
	liar := childPool("liar", "liar")
	liar.StartTimeout = time.Minute
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("notify", "notify"), liar}})

	start := time.Now()
	_, err := f.StartInstance(startCtx(t), "liar")
	require.ErrorContains(t, err, "said it listens, but not on")
	require.ErrorIs(t, err, errPortTaken)
	require.Less(t, time.Since(start), 20*time.Second, "refused on its word, not at the start timeout")

	inst, err := f.StartInstance(startCtx(t), "notify")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Equal(t, "pong "+inst.ID, ask(t, inst.Addr, "ping"))
}

// TestStopLowersPriority: an instance being stopped, with whatever it
// started in its process group, runs at stopNice from the SIGTERM on, every
// thread of it.
func TestStopLowersPriority(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 1, StopGrace: 300 * time.Millisecond, Pools: []PoolSpec{childPool("p", "stubborn")}})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	grandchild, err := strconv.Atoi(ask(t, inst.Addr, "spawn"))
	require.NoError(t, err)
	killOnCleanup(t, grandchild)
	require.Equal(t, []int{0}, niceValues(t, inst.PID, grandchild), "a running instance keeps the farm's priority")

	_, err = f.beginStop(inst.ID) // the stubborn child ignores the SIGTERM: it is still there to look at
	require.NoError(t, err)
	require.Equal(t, []int{stopNice}, niceValues(t, inst.PID, grandchild))
	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
}

// niceValues returns the distinct nice values of every thread of the
// processes pids, read from /proc.
func niceValues(t *testing.T, pids ...int) []int {
	t.Helper()
	seen := map[int]bool{}
	var vals []int
	for _, pid := range pids {
		stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		require.NoError(t, err)
		require.NotEmpty(t, stats, "process %d is gone", pid)
		for _, p := range stats {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			fields := statFields(b) // nice is field 19 of proc(5)
			require.Greater(t, len(fields), 16, p)
			n, err := strconv.Atoi(fields[16])
			require.NoError(t, err)
			if !seen[n] {
				seen[n] = true
				vals = append(vals, n)
			}
		}
	}
	return vals
}
