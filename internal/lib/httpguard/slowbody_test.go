package httpguard_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/httpguard"
)

// serve runs h on loopback behind a server with t's limits.
func serve(t *testing.T, tm httpguard.Timeouts, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := tm.Server(h)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

// trickle writes the head, then a piece every step until the connection
// fails or stop is closed.
func trickle(conn net.Conn, head, piece string, step time.Duration, stop <-chan struct{}) {
	if _, err := io.WriteString(conn, head); err != nil {
		return
	}
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := io.WriteString(conn, piece); err != nil {
				return
			}
		}
	}
}

// waitClosed reads conn until the server closes it, and returns how long
// that took; it fails the test if the server kept it open for bound.
func waitClosed(t *testing.T, conn net.Conn, bound time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(start.Add(bound)))
	got, err := io.ReadAll(conn)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open for %v", bound)
	return time.Since(start), string(got)
}

// A client that trickles its headers is cut off after ReadHeader.
func TestHeaderTrickle(t *testing.T) {
	addr := serve(t, httpguard.Timeouts{ReadHeader: 300 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { t.Error("no request should get through") }))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go trickle(conn, "GET / HTTP/1.1\r\nHost: x\r\n", "X-Slow: y\r\n", 20*time.Millisecond, stop)
	took, _ := waitClosed(t, conn, 10*time.Second)
	require.GreaterOrEqual(t, took, 250*time.Millisecond)
}

// A body that trickles below the pace is cut off: the handler's read
// fails with ErrBodyTooSlow and the connection is closed.
func TestBodyTrickle(t *testing.T) {
	readErr := make(chan error, 1)
	addr := serve(t, httpguard.Timeouts{Body: 300 * time.Millisecond, BodyMinBytes: 1024},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			http.Error(w, "too slow", http.StatusRequestTimeout)
		}))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go trickle(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", strings.Repeat("b", 10), 20*time.Millisecond, stop)
	waitClosed(t, conn, 10*time.Second)
	err = <-readErr
	require.ErrorIs(t, err, httpguard.ErrBodyTooSlow)
}

// A body the handler leaves unread is read by net/http to keep the
// connection; a trickle there is cut off too.
func TestUnreadBodyTrickle(t *testing.T) {
	addr := serve(t, httpguard.Timeouts{Body: 300 * time.Millisecond, BodyMinBytes: 1024},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	go trickle(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", "b", 20*time.Millisecond, stop)
	_, got := waitClosed(t, conn, 10*time.Second)
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 200"), got)
}

// A large body at a steady pace passes, over many periods: the deadline
// moves while data flows.
func TestBodyAtPace(t *testing.T) {
	const chunk, chunks = 4096, 40
	addr := serve(t, httpguard.Timeouts{Body: 200 * time.Millisecond, BodyMinBytes: 1024},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, "cut off", http.StatusRequestTimeout)
				return
			}
			_, _ = fmt.Fprint(w, n)
		}))
	pr, pw := io.Pipe()
	go func() {
		tick := time.NewTicker(25 * time.Millisecond) // 1 s in all: five periods
		defer tick.Stop()
		for range chunks {
			<-tick.C
			if _, err := pw.Write(make([]byte, chunk)); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	resp, err := http.Post("http://"+addr+"/", "application/octet-stream", pr)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.Equal(t, fmt.Sprint(chunk*chunks), string(b))
}

// A response without a request body (an event stream) runs past every
// timeout but Write: nothing here sets a deadline on it.
func TestStreamOutlivesBodyTimeout(t *testing.T) {
	addr := serve(t, httpguard.Timeouts{Body: 100 * time.Millisecond, ReadHeader: 100 * time.Millisecond, Idle: 100 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := range 10 {
				<-tick.C
				if _, err := fmt.Fprintf(w, "event %d\n", i); err != nil || r.Context().Err() != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}))
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for sc.Scan() {
		n++
	}
	require.NoError(t, sc.Err())
	require.Equal(t, 10, n)
}

// A WebSocket lives past the server's read, write and idle timeouts:
// net/http clears the deadlines it set when the upgrade hijacks the
// connection.
func TestWebSocketOutlivesTimeouts(t *testing.T) {
	const timeout = 150 * time.Millisecond
	up := websocket.Upgrader{}
	addr := serve(t, httpguard.Timeouts{Read: timeout, Write: timeout, Idle: timeout, Body: timeout, ReadHeader: timeout},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			for {
				mt, p, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if err := ws.WriteMessage(mt, p); err != nil {
					return
				}
			}
		}))
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	require.NoError(t, err)
	defer ws.Close()
	echo := func(msg string) {
		require.NoError(t, ws.SetReadDeadline(time.Now().Add(5*time.Second)))
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(msg)))
		_, p, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, msg, string(p))
	}
	echo("first")
	<-time.After(4 * timeout) // the condition under test: time past every timeout
	echo("after the timeouts")
}
