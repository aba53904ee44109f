package manager_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// The tests of idle client connections run their clients in a child
// process (this test binary, TestIdleClientChild): the server's memory is
// then the server's alone, and killing the child (SIGKILL) makes the
// kernel end every connection at once, as a crashed client does.

const (
	childEnv   = "DROVER_IDLE_CHILD"    // set in the child: the server's host:port
	childSpecs = "DROVER_IDLE_SPECS"    // groups of connections: n|query|frame, one a line
	childDials = "DROVER_IDLE_PARALLEL" // dials at once
)

// idleGroup is n connections opened with query, each sending frame (a
// text message) after the handshake when it is set.
type idleGroup struct {
	n     int
	query string
	frame string
}

// TestIdleClientChild is the client process; it does nothing in a normal
// run. It opens the groups of connections, prints "ready" and holds them
// until its stdin closes or it is killed.
func TestIdleClientChild(t *testing.T) {
	addr := os.Getenv(childEnv)
	if addr == "" {
		t.Skip("the client process of the idle tests")
	}
	raiseNoFile(t, 0)
	var groups []idleGroup
	for line := range strings.Lines(os.Getenv(childSpecs)) {
		parts := strings.SplitN(strings.TrimRight(line, "\n"), "|", 3)
		n, err := strconv.Atoi(parts[0])
		require.NoError(t, err)
		groups = append(groups, idleGroup{n: n, query: parts[1], frame: parts[2]})
	}
	par, _ := strconv.Atoi(os.Getenv(childDials))
	par = max(par, 1)
	var (
		mu    sync.Mutex
		conns []net.Conn
		first error
	)
	for _, g := range groups {
		var wg sync.WaitGroup
		next := make(chan struct{}, g.n)
		for range g.n {
			next <- struct{}{}
		}
		close(next)
		for range min(par, g.n) {
			wg.Go(func() {
				for range next {
					c, err := rawDial(addr, g.query, g.frame)
					mu.Lock()
					if err != nil && first == nil {
						first = err
					}
					if c != nil {
						conns = append(conns, c)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	require.NoError(t, first)
	fmt.Printf("ready %d\n", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// rawConn is a client connection whose first bytes after the handshake
// may wait in br.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *rawConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// rawDial opens a client WebSocket with a hand-written handshake, and
// sends frame, masked, when it is set.
func rawDial(addr, query, frame string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	req := "GET /ws?" + query + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 256)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		c.Close()
		return nil, fmt.Errorf("handshake: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, err
		}
		if line == "\r\n" {
			break
		}
	}
	if frame != "" {
		if _, err := c.Write(maskedText([]byte(frame))); err != nil {
			c.Close()
			return nil, err
		}
	}
	_ = c.SetDeadline(time.Time{})
	return &rawConn{Conn: c, br: br}, nil
}

// maskedText is a client's text frame of p (under 64 KiB).
func maskedText(p []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x81}
	if len(p) < 126 {
		b = append(b, 0x80|byte(len(p)))
	} else {
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	}
	b = append(b, key[:]...)
	for i, c := range p {
		b = append(b, c^key[i%4])
	}
	return b
}

// idleChild is a running client process.
type idleChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startIdleChild starts the client process against st with groups and
// waits for its connections.
func startIdleChild(t testing.TB, st *stack, groups ...idleGroup) *idleChild {
	t.Helper()
	u, err := url.Parse(st.srv.URL)
	require.NoError(t, err)
	var specs strings.Builder
	total := 0
	for _, g := range groups {
		fmt.Fprintf(&specs, "%d|%s|%s\n", g.n, g.query, g.frame)
		total += g.n
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+u.Host, childSpecs+"="+specs.String(), childDials+"=8")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	ch := &idleChild{cmd: cmd, stdin: stdin}
	t.Cleanup(ch.kill)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "ready ") {
			require.Equal(t, "ready "+strconv.Itoa(total), line)
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return ch
		}
	}
	_ = cmd.Wait()
	t.Fatalf("the client process ended before its connections were ready: %s", stderr.String())
	return nil
}

// kill ends the client process with SIGKILL: the kernel ends its
// connections, as it does for a crashed client.
func (c *idleChild) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// raiseNoFile raises the soft limit of open files to the hard limit and
// returns it; with need set, it skips (or fails under CI) a test that
// needs more.
func raiseNoFile(t testing.TB, need uint64) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	}
	if lim.Max < need {
		msg := fmt.Sprintf("needs %d open files, the hard limit is %d (raise it with ulimit -Hn)", need, lim.Max)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return lim.Max
}

// serverSockets counts the TCP sockets of the server's port that the
// server has not closed: ESTABLISHED or CLOSE_WAIT (the peer is gone and
// nobody here noticed).
func serverSockets(t testing.TB, st *stack) int {
	u, err := url.Parse(st.srv.URL)
	require.NoError(t, err)
	_, p, err := net.SplitHostPort(u.Host)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	local := fmt.Sprintf(":%04X ", port)
	n := 0
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 4 || !strings.HasSuffix(f[1]+" ", local) {
				continue
			}
			if f[3] == "01" || f[3] == "08" { // ESTABLISHED, CLOSE_WAIT
				n++
			}
		}
	}
	return n
}

// openSockets counts this process's socket descriptors: a socket the peer
// reset leaves the kernel's table while its descriptor stays open.
func openSockets(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestKilledClientsConnectionsClose kills a client process holding
// connections in every state a session can be in (queued, placed and
// idle, running a task, resumed) and requires the manager to close every
// one of them within seconds, not when the queue moves or a write fails.
func TestKilledClientsConnectionsClose(t *testing.T) {
	raiseNoFile(t, 1024)
	st := newStack(t, stackOpts{slots: 3, grace: time.Minute,
		pools: []manager.Pool{{Name: "default", Warm: 3}}})
	// A session to resume: placed, then dropped without a close frame.
	ws, _, err := websocket.DefaultDialer.Dial(st.wsURL(""), nil)
	require.NoError(t, err)
	var welcome struct {
		Type   string `json:"type"`
		Resume string `json:"resume"`
	}
	for welcome.Type != "welcome" {
		_, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(msg, &welcome))
	}
	require.NoError(t, ws.NetConn().Close())
	eventually(t, "the session is detached", func() bool { return st.m.ClientConns() == 0 })

	task := `{"type":"task","id":1,"data":{"command":"sleep","ms":60000}}`
	child := startIdleChild(t, st,
		idleGroup{n: 1, query: "resume=" + url.QueryEscape(welcome.Resume)}, // resumed, idle
		idleGroup{n: 1, query: "", frame: task},                             // placed, mid-task
		idleGroup{n: 1, query: ""},                                          // placed, idle
		idleGroup{n: 200, query: "wait=true"},                               // queued
	)
	const total = 203
	eventually(t, "the manager holds every connection", func() bool { return st.m.ClientConns() == total })
	// Some connections go quiet, some keep their reader: both must see
	// the end.
	eventually(t, "idle connections go quiet", func() bool { return st.m.QuietConns() >= total-1 })
	fds := openSockets(t)

	child.kill()
	deadline := time.Now().Add(10 * time.Second)
	for st.m.ClientConns() > 0 || serverSockets(t, st) > 0 || openSockets(t) > fds-total {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the client died the manager still holds %d connections, %d sockets in the "+
				"table, %d descriptors of %d", st.m.ClientConns(), serverSockets(t, st), openSockets(t)-(fds-total), total)
		}
		time.Sleep(10 * time.Millisecond) // polling the kernel's table, not synchronising
	}
}

// idleBytes returns the live heap and the goroutine stacks, after the
// garbage and sync.Pool contents are gone.
func idleBytes() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

// idleCost opens n queued client connections from a client process
// against a manager whose only instance is taken, waits until they are
// all quiet, and returns what the manager holds for each: live heap and
// goroutine stacks, by the difference over the n connections.
func idleCost(t testing.TB, n int) (heap, stacks float64) {
	raiseNoFile(t, uint64(n)+512)
	st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default", Warm: 1}}})
	hold := st.dial("wait=true")
	for hold.read().Type != "welcome" {
	}
	// One connection through the whole path first: pools, the poller.
	warm := startIdleChild(t, st, idleGroup{n: 1, query: "wait=true"})
	waitFor(t, "the first connection to go quiet", time.Minute, func() bool { return st.m.QuietConns() == 2 })
	warm.kill()
	waitFor(t, "the first connection to go", time.Minute, func() bool { return st.m.ClientConns() == 1 })

	h0, s0 := idleBytes()
	child := startIdleChild(t, st, idleGroup{n: n, query: "wait=true"})
	waitFor(t, "every connection to go quiet", 2*time.Minute, func() bool {
		return st.m.QuietConns() == n+1 // and the holder's
	})
	h1, s1 := idleBytes()
	child.kill()
	return (float64(h1) - float64(h0)) / float64(n), (float64(s1) - float64(s0)) / float64(n)
}

// BenchmarkIdleConn reports what the manager holds per idle client
// connection (a session queued for an instance), heap and goroutine
// stacks, over 2,000 connections per round.
func BenchmarkIdleConn(b *testing.B) {
	const n = 2000
	b.ReportAllocs()
	var heap, stacks float64
	for range b.N {
		h, s := idleCost(b, n)
		heap += h
		stacks += s
	}
	b.ReportMetric((heap+stacks)/float64(b.N), "B/conn")
	b.ReportMetric(heap/float64(b.N), "heap-B/conn")
	b.ReportMetric(stacks/float64(b.N), "stack-B/conn")
}

// waitFor polls cond until it holds, for at most bound.
func waitFor(t testing.TB, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond) // polling state that has no event
	}
}

// TestIdleConnsFit holds 10,000 idle client connections (sessions queued
// for the only instance) and bounds what the manager keeps for each: live
// heap and goroutine stacks. A queued session holds no goroutine (placement
// goes on with it when its turn comes) and its connection none either (it
// waits in the poller from the start): about 3.7 KiB of heap each here.
// Before, a reader goroutine with its buffer and a placement goroutine
// took 9 KiB.
func TestIdleConnsFit(t *testing.T) {
	const (
		n     = 10000
		bound = 5 << 10
	)
	heap, stacks := idleCost(t, n)
	t.Logf("per idle connection: %.0f B heap, %.0f B stacks", heap, stacks)
	require.Less(t, heap+stacks, float64(bound), "bytes per idle connection")
}

// unreadBy returns the bytes of c (a client connection to this process)
// that the server's side has not read, from the kernel's socket table.
func unreadBy(t testing.TB, c *rawConn) int {
	peer := c.LocalAddr().(*net.TCPAddr).Port
	local := c.RemoteAddr().(*net.TCPAddr).Port
	b, err := os.ReadFile("/proc/self/net/tcp")
	require.NoError(t, err)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], fmt.Sprintf(":%04X", local)) || !strings.HasSuffix(f[2], fmt.Sprintf(":%04X", peer)) {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		require.NoError(t, err)
		return int(n)
	}
	t.Fatalf("no server socket for %s", c.LocalAddr())
	return 0
}

// TestClientGoneMidTask: a client that goes while its task runs is let go
// at once and its session detached, and the task goes on; one that sent a
// close frame before it went ends its session as it asked, once the task
// is answered.
func TestClientGoneMidTask(t *testing.T) {
	ended := make(chan session.Disconnect, 4)
	st := newStack(t, stackOpts{slots: 3, grace: time.Minute, pools: []manager.Pool{{Name: "default", Warm: 2}},
		setup: func(m *manager.Manager) {
			m.OnDisconnect(middleware.DisconnectFunc(func(_ *session.Info, d session.Disconnect) { ended <- d }))
		}})
	task := maskedText([]byte(`{"type":"task","id":1,"data":{"command":"sleep","ms":3000}}`))
	open := func() *rawConn {
		u, err := url.Parse(st.srv.URL)
		require.NoError(t, err)
		c, err := rawDial(u.Host, "", "")
		require.NoError(t, err)
		var got []byte
		buf := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for !bytes.Contains(got, []byte(`"welcome"`)) { // placed: the session is active
			n, err := c.Read(buf)
			require.NoError(t, err)
			got = append(got, buf[:n]...)
		}
		_, err = c.Write(task)
		require.NoError(t, err)
		waitFor(t, "the manager to read the task", 10*time.Second, func() bool { return unreadBy(t, c) == 0 })
		return c
	}

	// Without a close frame: detached within the task, long before its end.
	c := open()
	start := time.Now()
	require.NoError(t, c.Close())
	waitFor(t, "the connection to be let go", 10*time.Second, func() bool { return st.m.ClientConns() == 0 })
	require.Less(t, time.Since(start), 2*time.Second, "let go before the task's end")
	select {
	case d := <-ended:
		t.Fatalf("a dropped client's session ended (%s) instead of waiting for a resume", d.Reason)
	default:
	}

	// With a close frame: the session ends as the client asked.
	c = open()
	closeFrame := []byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2} // 1000, masked
	_, err := c.Write(closeFrame)
	require.NoError(t, err)
	require.NoError(t, c.Conn.(*net.TCPConn).CloseWrite())
	select {
	case d := <-ended:
		require.Equal(t, session.DisconnectClientClosed, d)
	case <-time.After(15 * time.Second):
		t.Fatal("the session did not end")
	}
	_ = c.Close()
}
