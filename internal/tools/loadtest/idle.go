package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// The idle scenario measures what a server keeps per idle client
// connection: the growth of this process's live heap and goroutine stacks
// while N connections are open, divided by N.
//
// Both servers run in this process, so the client side must not: its
// connections would be counted with the server's. It runs in a child
// process (Config.ClientCommand, by default `drover load
// --role=idle-client`), which dials N connections, prints "ready" and holds
// them until its stdin closes. Subtracting an in-process client measured
// separately would work too, but it would make the figure the difference of
// two noisy measurements; a child process keeps it one.
//
// drover cannot bind N sessions without N instances, and the idle figure is
// about connections, not instances: the drover side runs against a stack of
// one instance, taken by one session before the measurement, so that every
// idle connection is a session waiting in the queue (what a client of a busy
// drover holds while it waits). The direct side holds N idle connections to
// the reference worker.
//
// Only Go memory is counted: /memory/classes/heap/objects (live objects
// after a GC) and /memory/classes/heap/stacks (goroutine stacks), read
// after two GCs so that sync.Pool contents (dropped over two cycles) and
// garbage do not count. Kernel socket buffers are not counted on either
// side.

var memSamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/stacks:bytes",
}

// retainedBytes returns the bytes of live heap objects and goroutine
// stacks.
func retainedBytes() int64 {
	runtime.GC()
	runtime.GC()
	s := make([]metrics.Sample, len(memSamples))
	for i, name := range memSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	var total int64
	for _, v := range s {
		total += int64(v.Value.Uint64())
	}
	return total
}

// idleLimit bounds one side of the idle scenario, from starting the client
// process to its exit.
const idleLimit = 3 * time.Minute

func (r *run) idle(ctx context.Context) ([]Row, error) {
	n := r.cfg.Idle
	if r.stack != nil {
		// The main stack must be quiet: no instance coming or going.
		if err := r.stack.waitWarm(ctx); err != nil {
			return nil, err
		}
	}
	direct, err := r.idleKiB(ctx, "direct", r.direct, nil)
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}

	r.progress("idle: starting a drover stack with one instance")
	st, err := startStack(r.cfg, 1)
	if err != nil {
		return nil, err
	}
	defer st.close()
	if err := st.waitWarm(ctx); err != nil {
		return nil, err
	}
	hold, err := dial(ctx, st.url(), echoFrame)
	if err != nil {
		return nil, err
	}
	defer hold.close()
	hold.deadline(time.Now().Add(readyLimit))
	if _, err := hold.roundTrip(hold.task); err != nil {
		return nil, fmt.Errorf("drover: take the only instance: %w", failure(ctx, err))
	}
	queued := func() bool { return st.up.Manager.Capacity().Queued >= n }
	drover, err := r.idleKiB(ctx, "drover", st.url()+"?wait=true", queued)
	if err != nil {
		return nil, fmt.Errorf("drover: %w", err)
	}
	return []Row{newRow(ScenarioIdle, "KiB/conn", direct, drover,
		fmt.Sprintf("%d conns; drover's wait in its queue", n))}, nil
}

// idleKiB holds r.cfg.Idle connections to url from a child process and
// returns how many KiB each costs this process. ready, when not nil, says
// the server has taken every connection in.
func (r *run) idleKiB(ctx context.Context, target, url string, ready func() bool) (float64, error) {
	n := r.cfg.Idle
	argv := r.cfg.ClientCommand
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return 0, fmt.Errorf("find own executable: %w", err)
		}
		argv = []string{exe, "load", "--role=" + RoleIdleClient}
	}
	r.progress("idle: %s, %d connections", target, n)

	before := retainedBytes()
	ctx, cancel := context.WithTimeout(ctx, idleLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:len(argv):len(argv)],
		"--target="+url, "--idle="+strconv.Itoa(n))...)
	cmd.Env = append(os.Environ(), r.cfg.ClientEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the idle client: %w", err)
	}
	// Closing stdin tells the client to close its connections and exit;
	// ctx's timeout kills it otherwise.
	finish := func() error {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("idle client: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		return 0, errors.Join(fmt.Errorf("idle client did not get ready: %q", line), err, finish())
	}
	if err := settle(ctx, ready); err != nil {
		return 0, errors.Join(err, finish())
	}
	after := retainedBytes()
	if err := finish(); err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n) / 1024, nil
}

// settle waits until ready (when given) and then until the number of
// goroutines has not changed for a while: the server has finished setting
// up the connections the client has dialled.
func settle(ctx context.Context, ready func() bool) error {
	const poll = 20 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for ready != nil && !ready() {
		if time.Now().After(deadline) {
			return errors.New("the server did not take every connection in")
		}
		if err := sleep(ctx, poll); err != nil {
			return err
		}
	}
	last, same := runtime.NumGoroutine(), 0
	for same < 5 && time.Now().Before(deadline) {
		if err := sleep(ctx, poll); err != nil {
			return err
		}
		if g := runtime.NumGoroutine(); g == last {
			same++
		} else {
			last, same = g, 0
		}
	}
	return nil
}

// idleClient is the child process of the idle scenario: it holds n
// connections to url, writes "ready" to out and waits until in ends (the
// parent closed it, or died) or ctx ends.
func idleClient(ctx context.Context, url string, n int, in io.Reader, out io.Writer) error {
	if url == "" {
		return errors.New("loadtest: the idle client needs a target URL")
	}
	d := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: 10 * time.Second}
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		for _, ws := range conns {
			_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			_ = ws.Close()
		}
	}()
	for range n {
		ws, _, err := d.DialContext(ctx, url, nil)
		if err != nil {
			return fmt.Errorf("loadtest: idle connection %d: %w", len(conns)+1, err)
		}
		conns = append(conns, ws)
	}
	if _, err := io.WriteString(out, "ready\n"); err != nil {
		return err
	}
	eof := make(chan struct{})
	// When ctx ends first this goroutine stays blocked on stdin; the
	// process exits right after.
	go func() {
		_, _ = io.Copy(io.Discard, in)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return nil
}
