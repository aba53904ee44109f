package farm

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/drover-dev/drover/internal/lib/forkthread"
)

// The instance program of these tests is the test binary itself: with
// childEnv set, TestMain behaves as the child instead of running tests.
const (
	childEnv = "DROVER_FARM_TEST_CHILD"
	delayEnv = "DROVER_FARM_TEST_DELAY"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(forkthread.Goroutine))
}

// runChild is the instance program. Modes:
//
//	listen    listen on DROVER_PORT and answer commands until SIGTERM
//	notify    listen, then say so on DROVER_READY_FD
//	liar      say it listens on DROVER_READY_FD, never listen
//	slow      sleep DROVER_FARM_TEST_DELAY, then listen
//	stubborn  listen, ignoring SIGTERM
//	linger    listen; on SIGTERM, take DROVER_FARM_TEST_DELAY to exit 0
//	crash     write to stderr and exit 7 at once
//	never     never listen
//	sleep     sleep (a grandchild)
//	farm      run a Farm with two instances, print their pids, block
func runChild(mode string) int {
	switch mode {
	case "listen":
		return serve(true)
	case "notify":
		notifyListening = true
		return serve(true)
	case "liar":
		if !sayReady() {
			return 1
		}
		time.Sleep(time.Hour)
		return 0
	case "slow":
		d, err := time.ParseDuration(os.Getenv(delayEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		time.Sleep(d)
		return serve(true)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		return serve(false)
	case "linger":
		d, err := time.ParseDuration(os.Getenv(delayEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		code := serve(true)
		time.Sleep(d) // a graceful stop that takes a while: saving state
		return code
	case "crash":
		fmt.Println("child: starting")
		fmt.Fprintln(os.Stderr, "child: bad configuration")
		return 7
	case "never", "sleep":
		fmt.Println("child: not listening")
		time.Sleep(time.Hour)
		return 0
	case "farm":
		return runFarmHelper()
	}
	if code, ok := runAdapterChild(mode); ok {
		return code
	}
	fmt.Fprintf(os.Stderr, "child: unknown mode %q\n", mode)
	return 2
}

// serve listens on DROVER_PORT and answers line commands: ping, env KEY,
// args, say N (N bytes on stdout), warn TEXT (on stderr), spawn (start a
// grandchild in the same process group, answer its pid), exit CODE.
func serve(onTerm bool) int {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("DROVER_PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Println("child: listening on", ln.Addr())
	if notifyListening && !sayReady() {
		return 1
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answer(c)
		}
	}()
	if !onTerm {
		time.Sleep(time.Hour)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Println("child: terminated")
	return 0
}

// notifyListening: serve writes to DROVER_READY_FD once it listens.
var notifyListening bool

// sayReady writes the readiness byte to DROVER_READY_FD.
func sayReady() bool {
	fd, err := strconv.Atoi(os.Getenv(ReadyFDEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: no", ReadyFDEnv)
		return false
	}
	f := os.NewFile(uintptr(fd), "ready")
	_, err = f.Write([]byte{1})
	_ = f.Close()
	return err == nil
}

func answer(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "ping":
			fmt.Fprintf(c, "pong %s\n", os.Getenv("DROVER_INSTANCE_ID"))
		case "env":
			fmt.Fprintf(c, "%s\n", os.Getenv(arg))
		case "args":
			fmt.Fprintf(c, "%s\n", strings.Join(os.Args[1:], " "))
		case "say":
			n, _ := strconv.Atoi(arg)
			fmt.Println(strings.Repeat("x", n))
			fmt.Fprintln(c, "ok")
		case "warn":
			fmt.Fprintln(os.Stderr, arg)
			fmt.Fprintln(c, "ok")
		case "spawn":
			exe, _ := os.Executable()
			gc := exec.Command(exe)
			gc.Env = append(os.Environ(), childEnv+"=sleep")
			gc.Stdout = os.Stdout // holds the instance's output pipe open
			if err := gc.Start(); err != nil {
				fmt.Fprintf(c, "error %v\n", err)
				continue
			}
			fmt.Fprintf(c, "%d\n", gc.Process.Pid)
		case "exit":
			code, _ := strconv.Atoi(arg)
			_ = c.Close()
			os.Exit(code) //nolint:gocritic // a child process exiting on command; c is closed above
		}
	}
}

// runFarmHelper is a farm process for TestFarmKilledLeavesNoInstance.
func runFarmHelper() int {
	f, err := New(Config{
		Slots:  2,
		Pools:  []PoolSpec{childPool("p", "listen")},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	for range 2 {
		inst, err := f.StartInstance(context.Background(), "p")
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Println(inst.PID)
	}
	time.Sleep(time.Hour) // until the test kills us
	return 0
}

// childPool is a pool whose instances are this test binary in mode.
func childPool(name, mode string, env ...string) PoolSpec {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	// A -race binary sleeps a second in exit unless told otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return PoolSpec{
		Name:         name,
		Command:      exe,
		Args:         []string{"{{.Addr}}", "{{.ID}}"},
		Env:          append([]string{childEnv + "=" + mode, "GORACE=" + gorace}, env...),
		StartTimeout: 20 * time.Second,
	}
}
