package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// upstream is a gorilla/websocket server standing in for an instance.
type upstream struct {
	srv  *httptest.Server
	wg   sync.WaitGroup // running handlers, upgraded ones included
	ends chan error     // why each upgraded connection ended

	mu  sync.Mutex
	req *http.Request // the last upgrade request seen
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{ends: make(chan error, 64)}
	upgrader := websocket.Upgrader{
		Subprotocols:    []string{"chat.v1"},
		CheckOrigin:     func(*http.Request) bool { return true },
		WriteBufferSize: 64 << 10,
	}
	upgrade := func(w http.ResponseWriter, r *http.Request) *websocket.Conn {
		u.mu.Lock()
		u.req = r.Clone(context.Background())
		u.mu.Unlock()
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return nil
		}
		return c
	}
	// drain reads until the connection ends and records why.
	drain := func(c *websocket.Conn) {
		for {
			if _, _, err := c.NextReader(); err != nil {
				u.ended(err)
				return
			}
		}
	}
	echo := func(c *websocket.Conn) {
		for {
			mt, r, err := c.NextReader()
			if err != nil {
				u.ended(err)
				return
			}
			w, err := c.NextWriter(mt)
			if err != nil {
				u.ended(err)
				return
			}
			_, _ = io.Copy(w, r)
			if err := w.Close(); err != nil {
				u.ended(err)
				return
			}
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			echo(c)
		}
	})
	mux.HandleFunc("/greet", func(w http.ResponseWriter, r *http.Request) {
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			_ = c.WriteMessage(websocket.TextMessage, []byte("welcome"))
			echo(c)
		}
	})
	// /ticks sends n messages, one every `every`, then only reads.
	mux.HandleFunc("/ticks", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		every, _ := time.ParseDuration(r.URL.Query().Get("every"))
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			for i := range n {
				time.Sleep(every)
				if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
					u.ended(err)
					return
				}
			}
			drain(c)
		}
	})
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			drain(c)
		}
	})
	mux.HandleFunc("/bye", func(w http.ResponseWriter, r *http.Request) {
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
			_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			drain(c)
		}
	})
	// /stream answers a text message "n" with n binary messages of 64 KiB.
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		if c := upgrade(w, r); c != nil {
			defer c.Close()
			block := make([]byte, 64<<10)
			for {
				_, p, err := c.ReadMessage()
				if err != nil {
					u.ended(err)
					return
				}
				n, _ := strconv.Atoi(string(p))
				for range n {
					if err := c.WriteMessage(websocket.BinaryMessage, block); err != nil {
						u.ended(err)
						return
					}
				}
			}
		}
	})
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Reason", "denied")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "forbidden: bad token")
	})
	mux.HandleFunc("/refuse-big", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 100<<10))
	})

	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.wg.Add(1)
		defer u.wg.Done()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		u.srv.Close()
		waitGroup(t, &u.wg, 5*time.Second, "upstream handlers")
	})
	return u
}

func (u *upstream) ended(err error) {
	select {
	case u.ends <- err:
	default:
	}
}

func (u *upstream) lastRequest() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.req
}

func (u *upstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// env is a relay in front of an upstream.
type env struct {
	relay *Relay
	up    *upstream
	front *httptest.Server
	errs  chan error // what ServeWebSocket returned
	stats chan Stats // what OnClose got
}

type envOption func(*envConfig)

type envConfig struct {
	noTCPInfo bool
	tls       bool
	target    func(e *env, r *http.Request) string
}

// withTLS serves the relay's clients over TLS.
func withTLS(c *envConfig) { c.tls = true }

// withoutTCPInfo makes the relay use the portable idle meter.
func withoutTCPInfo(c *envConfig) { c.noTCPInfo = true }

// withTarget picks the upstream URL for each request.
func withTarget(f func(e *env, r *http.Request) string) envOption {
	return func(c *envConfig) { c.target = f }
}

func newEnv(t testing.TB, opts Options, options ...envOption) *env {
	cfg := envConfig{target: func(e *env, r *http.Request) string {
		return "ws://" + e.up.host() + r.URL.RequestURI()
	}}
	for _, o := range options {
		o(&cfg)
	}
	e := &env{up: newUpstream(t), errs: make(chan error, 64), stats: make(chan Stats, 64)}
	if opts.OnClose == nil {
		opts.OnClose = func(s Stats) {
			select {
			case e.stats <- s:
			default:
			}
		}
	}
	e.relay = New(opts)
	e.relay.tcpInfo = !cfg.noTCPInfo
	e.front = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := e.relay.ServeWebSocket(w, r, cfg.target(e, r))
		select {
		case e.errs <- err:
		default:
		}
	}))
	if cfg.tls {
		e.front.StartTLS()
	} else {
		e.front.Start()
	}
	t.Cleanup(func() {
		e.front.Close()
		require.Eventually(t, func() bool { return e.relay.Active() == 0 }, 5*time.Second, 5*time.Millisecond,
			"relayed connections left open")
	})
	return e
}

func (e *env) url(path string) string {
	if e.front.TLS != nil {
		return "wss://" + e.addr() + path
	}
	return "ws://" + e.addr() + path
}

func (e *env) addr() string { return e.front.Listener.Addr().String() }

// dial opens a WebSocket through the relay; the test's cleanup closes it.
func (e *env) dial(t testing.TB, path string) *websocket.Conn {
	t.Helper()
	d := *websocket.DefaultDialer
	if e.front.TLS != nil {
		d.TLSClientConfig = e.front.Client().Transport.(*http.Transport).TLSClientConfig
	}
	c, resp, err := d.Dial(e.url(path), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (e *env) nextErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-e.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("ServeWebSocket did not return")
		return nil
	}
}

func (e *env) nextStats(t testing.TB) Stats {
	t.Helper()
	select {
	case s := <-e.stats:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose was not called")
		return Stats{}
	}
}

func (u *upstream) nextEnd(t testing.TB) error {
	t.Helper()
	select {
	case err := <-u.ends:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection did not end")
		return nil
	}
}

func waitGroup(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("%s still running after %v", what, d)
	}
}

func requireCloseCode(t testing.TB, err error, code int) {
	t.Helper()
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, code, ce.Code, "close error %v", ce)
}

func TestRelayMessages(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.dial(t, "/echo")

	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	tests := []struct {
		name string
		typ  int
		data []byte
	}{
		{"text", websocket.TextMessage, []byte("hello, instance")},
		{"unicode text", websocket.TextMessage, []byte("größe ≤ 64 KiB ✓")},
		{"empty text", websocket.TextMessage, []byte{}},
		{"binary", websocket.BinaryMessage, []byte{0, 1, 2, 0x88, 0xff, '\r', '\n'}},
		{"binary 300 KiB", websocket.BinaryMessage, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, c.WriteMessage(tt.typ, tt.data))
			typ, got, err := c.ReadMessage()
			require.NoError(t, err)
			require.Equal(t, tt.typ, typ)
			require.True(t, bytes.Equal(tt.data, got), "message changed on its way")
		})
	}

	// The close handshake, and the client closes its connection when the
	// upstream has closed its own, as RFC 6455 §7.1.1 has it.
	require.NoError(t, c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
	_, _, err := c.ReadMessage()
	requireCloseCode(t, err, websocket.CloseNormalClosure)
	require.NoError(t, c.Close())
	require.NoError(t, e.nextErr(t))
	st := e.nextStats(t)
	require.NoError(t, st.Err)
	require.Greater(t, st.Up, int64(len(big)))
	require.Greater(t, st.Down, int64(len(big)))
	require.Positive(t, st.Duration)
}

// The upstream speaks first, right behind its 101.
func TestRelayUpstreamSpeaksFirst(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.dial(t, "/greet")
	_, p, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "welcome", string(p))
}

func TestRelayBulk64MiB(t *testing.T) {
	const frame, total = 64 << 10, 64 << 20
	e := newEnv(t, Options{})
	c := e.dial(t, "/echo")

	block := make([]byte, frame)
	for i := range block {
		block[i] = byte(rand.IntN(256))
	}
	writeErr := make(chan error, 1)
	go func() {
		msg := make([]byte, frame)
		for i := range total / frame {
			copy(msg, block)
			binary.BigEndian.PutUint64(msg, uint64(i))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()

	want := make([]byte, frame)
	got := make([]byte, frame)
	for i := range total / frame {
		typ, r, err := c.NextReader()
		require.NoError(t, err)
		require.Equal(t, websocket.BinaryMessage, typ)
		n, err := io.ReadFull(r, got)
		require.NoError(t, err)
		require.Equal(t, frame, n)
		_, err = r.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF, "frame %d longer than sent", i)
		copy(want, block)
		binary.BigEndian.PutUint64(want, uint64(i))
		if !bytes.Equal(want, got) {
			t.Fatalf("frame %d arrived changed", i)
		}
	}
	require.NoError(t, <-writeErr)
}

func TestRelaySubprotocol(t *testing.T) {
	e := newEnv(t, Options{})
	d := websocket.Dialer{Subprotocols: []string{"chat.v2", "chat.v1"}}
	c, resp, err := d.Dial(e.url("/echo"), nil)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, "chat.v1", c.Subprotocol())
	require.Equal(t, "chat.v1", resp.Header.Get("Sec-WebSocket-Protocol"))
	require.Equal(t, []string{"chat.v2, chat.v1"}, e.up.lastRequest().Header["Sec-Websocket-Protocol"])
}

func TestRelayRefused(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		status   int
		body     string
		bodySize int
		header   string
	}{
		{name: "403 with a body", path: "/refuse", status: http.StatusForbidden, body: "forbidden: bad token", header: "denied"},
		{name: "404", path: "/nothing-here", status: http.StatusNotFound, body: "404 page not found\n"},
		{name: "body cut at 64 KiB", path: "/refuse-big", status: http.StatusForbidden, bodySize: 64 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			resp, body := rawUpgrade(t, e.addr(), tt.path)
			require.Equal(t, tt.status, resp.StatusCode)
			if tt.bodySize > 0 {
				require.Len(t, body, tt.bodySize)
			} else {
				require.Equal(t, tt.body, string(body))
			}
			require.Equal(t, strconv.Itoa(len(body)), resp.Header.Get("Content-Length"))
			require.Equal(t, tt.header, resp.Header.Get("X-Reason"))

			err := e.nextErr(t)
			require.ErrorIs(t, err, ErrRefused)
			var re *RefusedError
			require.ErrorAs(t, err, &re)
			require.Equal(t, tt.status, re.StatusCode)
			require.Zero(t, e.relay.Active())
		})
	}
}

func TestRelayUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())

	e := newEnv(t, Options{}, withTarget(func(*env, *http.Request) string { return "ws://" + dead + "/x" }))
	_, resp, err := websocket.DefaultDialer.Dial(e.url("/x"), nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	err = e.nextErr(t)
	require.ErrorIs(t, err, ErrUpstreamUnreachable)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// rawUpstream serves each connection with fn on a plain TCP listener.
func rawUpstream(t testing.TB, fn func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				fn(c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		waitGroup(t, &wg, 5*time.Second, "raw upstream")
	})
	return ln.Addr().String()
}

func TestRelayBadHandshake(t *testing.T) {
	tests := []struct {
		name   string
		answer func(c net.Conn)
		status int
	}{
		{"garbage", func(c net.Conn) {
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = io.WriteString(c, "SSH-2.0-OpenSSH\r\n\r\n")
		}, http.StatusBadGateway},
		{"hangs up", func(c net.Conn) {
			_, _ = http.ReadRequest(bufio.NewReader(c))
		}, http.StatusBadGateway},
		{"101 without upgrade", func(c net.Conn) {
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
		}, http.StatusBadGateway},
		{"silent", func(c net.Conn) {
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = c.Read(make([]byte, 1)) // until the relay gives up
		}, http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawUpstream(t, tt.answer)
			e := newEnv(t, Options{DialTimeout: 300 * time.Millisecond},
				withTarget(func(*env, *http.Request) string { return "ws://" + addr + "/" }))
			_, resp, err := websocket.DefaultDialer.Dial(e.url("/"), nil)
			require.ErrorIs(t, err, websocket.ErrBadHandshake)
			require.Equal(t, tt.status, resp.StatusCode)
			require.ErrorIs(t, e.nextErr(t), ErrBadHandshake)
		})
	}
}

func TestRelayRejects(t *testing.T) {
	tests := []struct {
		name     string
		upstream string
		request  string
		status   int
		err      error
	}{
		{
			name:     "not an upgrade",
			upstream: "ws://127.0.0.1:1/",
			request:  "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			status:   http.StatusBadRequest,
			err:      ErrNotWebSocket,
		},
		{
			name:     "upgrade with a body",
			upstream: "ws://127.0.0.1:1/",
			request:  "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi",
			status:   http.StatusBadRequest,
			err:      ErrNotWebSocket,
		},
		{
			name:     "other scheme",
			upstream: "ftp://127.0.0.1:1/",
			request:  upgradeRequest("/", ""),
			status:   http.StatusInternalServerError,
			err:      ErrBadUpstream,
		},
		{
			name:     "no host",
			upstream: "ws:///path",
			request:  upgradeRequest("/", ""),
			status:   http.StatusInternalServerError,
			err:      ErrBadUpstream,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{}, withTarget(func(*env, *http.Request) string { return tt.upstream }))
			c, err := net.Dial("tcp", e.addr())
			require.NoError(t, err)
			defer c.Close()
			_, err = io.WriteString(c, tt.request)
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			require.Equal(t, tt.status, resp.StatusCode)
			require.ErrorIs(t, e.nextErr(t), tt.err)
		})
	}
}

// upgradeRequest is a client's upgrade request with the key of RFC 6455's
// example, so the accept value is known.
func upgradeRequest(path, extra string) string {
	return "GET " + path + " HTTP/1.1\r\n" +
		"Host: front.test\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		extra + "\r\n"
}

const exampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

// rawUpgrade sends an upgrade request on a fresh connection and returns the
// response and its whole body.
func rawUpgrade(t testing.TB, addr, path string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, upgradeRequest(path, ""))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

func TestRelayForwardsHeaders(t *testing.T) {
	e := newEnv(t, Options{Header: http.Header{
		"Authorization": {"Bearer relay-token"},
		"x-drover":      {"yes"},
		"Connection":    {"close"},     // hop-by-hop: ignored
		"Host":          {"evil.test"}, // the relay writes Host itself
	}}, withTarget(func(e *env, _ *http.Request) string {
		return "ws://" + e.up.host() + "/echo?instance=7"
	}))

	c, err := net.Dial("tcp", e.addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, strings.Replace(upgradeRequest("/stream/abc?token=t1",
		"Origin: http://viewer.test\r\n"+
			"Cookie: a=b\r\n"+
			"Authorization: client-token\r\n"+
			"X-Forwarded-For: 10.0.0.1\r\n"+
			"Proxy-Authorization: Basic c2VjcmV0\r\n"+
			"Keep-Alive: timeout=5\r\n"+
			"X-Hop: named in Connection\r\n"+
			"Sec-WebSocket-Protocol: chat.v1\r\n"),
		"Connection: Upgrade", "Connection: keep-alive, Upgrade, X-Hop", 1))
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	require.Equal(t, exampleAccept, resp.Header.Get("Sec-WebSocket-Accept"))
	require.Equal(t, "chat.v1", resp.Header.Get("Sec-WebSocket-Protocol"))
	require.Equal(t, "websocket", resp.Header.Get("Upgrade"))

	got := e.up.lastRequest()
	require.Equal(t, e.up.host(), got.Host)
	require.Equal(t, "/echo?instance=7", got.URL.RequestURI())
	h := got.Header
	require.Equal(t, "http://viewer.test", h.Get("Origin"))
	require.Equal(t, "a=b", h.Get("Cookie"))
	require.Equal(t, "dGhlIHNhbXBsZSBub25jZQ==", h.Get("Sec-WebSocket-Key"))
	require.Equal(t, "13", h.Get("Sec-WebSocket-Version"))
	require.Equal(t, []string{"Bearer relay-token"}, h["Authorization"])
	require.Equal(t, "yes", h.Get("X-Drover"))
	require.Equal(t, []string{"10.0.0.1, 127.0.0.1"}, h["X-Forwarded-For"])
	require.Equal(t, []string{"Upgrade"}, h["Connection"])
	require.Equal(t, []string{"websocket"}, h["Upgrade"])
	for _, k := range []string{"Proxy-Authorization", "Keep-Alive", "X-Hop"} {
		require.NotContains(t, h, k)
	}

	// The connection works after all that.
	_, err = c.Write(maskedFrame(0x1, []byte("ping")))
	require.NoError(t, err)
	op, payload := readTestFrame(t, br)
	require.Equal(t, byte(0x1), op)
	require.Equal(t, "ping", string(payload))
}

// A client that sends a frame together with its upgrade request.
func TestRelayClientSpeaksFirst(t *testing.T) {
	e := newEnv(t, Options{})
	c, err := net.Dial("tcp", e.addr())
	require.NoError(t, err)
	defer c.Close()
	req := []byte(upgradeRequest("/echo", ""))
	req = append(req, maskedFrame(0x2, []byte{0xde, 0xad, 0xbe, 0xef})...)
	req = append(req, maskedFrame(0x1, []byte("second"))...)
	_, err = c.Write(req)
	require.NoError(t, err)

	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	op, payload := readTestFrame(t, br)
	require.Equal(t, byte(0x2), op)
	require.Equal(t, []byte{0xde, 0xad, 0xbe, 0xef}, payload)
	op, payload = readTestFrame(t, br)
	require.Equal(t, byte(0x1), op)
	require.Equal(t, "second", string(payload))
}

// An upstream whose first frame arrives in the same segment as its 101.
func TestRelayUpstreamFrameWithHandshake(t *testing.T) {
	addr := rawUpstream(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		out := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		out = append(out, 0x81, 7)
		out = append(out, "welcome"...)
		if _, err := c.Write(out); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c) // until the relay closes
	})
	e := newEnv(t, Options{}, withTarget(func(*env, *http.Request) string { return "ws://" + addr + "/" }))
	c := e.dial(t, "/")
	typ, p, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, websocket.TextMessage, typ)
	require.Equal(t, "welcome", string(p))
	require.NoError(t, c.Close())
	st := e.nextStats(t)
	require.Equal(t, int64(9), st.Down)
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// maskedFrame is a single-frame client message.
func maskedFrame(op byte, payload []byte) []byte {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i&3])
	}
	return f
}

// parsedFrame is one WebSocket frame, unmasked.
type parsedFrame struct {
	fin, masked bool
	op          byte
	payload     []byte
}

// parseFrame reads one frame; it checks what RFC 6455 §5.2 requires of the
// header and nothing of the payload.
func parseFrame(r io.Reader) (parsedFrame, error) {
	var f parsedFrame
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return f, err
	}
	if h[0]&0x70 != 0 {
		return f, errors.New("reserved bits set")
	}
	f.fin, f.op, f.masked = h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if f.op >= 8 && (n > 125 || !f.fin) {
		return f, errors.New("bad control frame")
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return f, err
		}
	}
	if n > 1<<30 {
		return f, errors.New("frame too large")
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i&3]
		}
	}
	return f, nil
}

func readTestFrame(t testing.TB, r io.Reader) (byte, []byte) {
	t.Helper()
	f, err := parseFrame(r)
	require.NoError(t, err)
	require.True(t, f.fin)
	require.False(t, f.masked, "server frames are never masked")
	return f.op, f.payload
}

func TestRelayIdleTimeout(t *testing.T) {
	// A tick every 100 ms against a timeout ten times as long: a loaded CI
	// machine stalled a 60 ms ticker past a 300 ms timeout once.
	const idle = time.Second
	for _, meter := range []struct {
		name string
		opts []envOption
	}{
		{"kernel counters", nil},
		{"counting copy", []envOption{withoutTCPInfo}},
	} {
		t.Run(meter.name, func(t *testing.T) {
			t.Parallel()
			// Traffic in one direction only keeps the connection, longer
			// than the idle timeout; then silence ends it.
			t.Run("downstream traffic", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, Options{IdleTimeout: idle}, meter.opts...)
				c := e.dial(t, "/ticks?n=12&every=100ms")
				var last time.Time
				for i := range 12 {
					_, p, err := c.ReadMessage()
					require.NoError(t, err, "message %d", i)
					require.Equal(t, strconv.Itoa(i), string(p))
					last = time.Now()
				}
				_, _, err := c.ReadMessage()
				requireCloseCode(t, err, CloseGoingAway)
				requireIdleEnd(t, e, time.Since(last), idle)
			})
			t.Run("upstream traffic", func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, Options{IdleTimeout: idle}, meter.opts...)
				c := e.dial(t, "/sink")
				var last time.Time
				for range 12 {
					time.Sleep(100 * time.Millisecond)
					require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("still here")))
					last = time.Now()
				}
				_, _, err := c.ReadMessage()
				requireCloseCode(t, err, CloseGoingAway)
				requireIdleEnd(t, e, time.Since(last), idle)
			})
		})
	}
}

func requireIdleEnd(t testing.TB, e *env, quiet, idle time.Duration) {
	t.Helper()
	require.GreaterOrEqual(t, quiet, idle-20*time.Millisecond, "closed before the idle timeout")
	require.Less(t, quiet, idle*3, "closed long after the idle timeout")
	requireCloseCode(t, e.up.nextEnd(t), CloseGoingAway)
	st := e.nextStats(t)
	require.ErrorIs(t, st.Err, ErrIdleTimeout)
	require.ErrorIs(t, e.nextErr(t), ErrIdleTimeout)
}

// A TLS client connection cannot splice, but relays all the same, and the idle
// check still reads the kernel's counters of the TCP connection under it.
func TestRelayTLSClient(t *testing.T) {
	e := newEnv(t, Options{IdleTimeout: 200 * time.Millisecond}, withTLS)
	c := e.dial(t, "/echo")
	for _, msg := range []string{"over", "tls"} {
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(msg)))
		_, p, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, msg, string(p))
	}
	_, _, err := c.ReadMessage()
	requireCloseCode(t, err, CloseGoingAway)
	require.ErrorIs(t, e.nextStats(t).Err, ErrIdleTimeout)
}

func TestRelayMaxLifetime(t *testing.T) {
	e := newEnv(t, Options{MaxLifetime: 300 * time.Millisecond, IdleTimeout: time.Minute})
	start := time.Now()
	c := e.dial(t, "/ticks?n=1000&every=10ms")
	var err error
	for err == nil {
		_, _, err = c.ReadMessage()
	}
	requireCloseCode(t, err, CloseGoingAway)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.ErrorIs(t, e.nextStats(t).Err, ErrMaxLifetime)
}

func TestRelayShutdown(t *testing.T) {
	e := newEnv(t, Options{})
	var clients []*websocket.Conn
	for i := range 3 {
		c := e.dial(t, "/echo")
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("hi")))
		_, _, err := c.ReadMessage()
		require.NoError(t, err)
		clients = append(clients, c)
		require.Equal(t, i+1, e.relay.Active())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.relay.Shutdown(ctx))
	require.Zero(t, e.relay.Active())

	for _, c := range clients {
		_, _, err := c.ReadMessage()
		requireCloseCode(t, err, CloseGoingAway)
	}
	// gorilla/websocket fails a server connection on an unmasked frame, so
	// a close error here is also proof of the mask.
	for range clients {
		requireCloseCode(t, e.up.nextEnd(t), CloseGoingAway)
	}
	for range clients {
		require.ErrorIs(t, e.nextStats(t).Err, ErrClosed)
	}

	// No new connections after Shutdown.
	_, resp, err := websocket.DefaultDialer.Dial(e.url("/echo"), nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.NoError(t, e.relay.Shutdown(ctx), "a second Shutdown is harmless")
}

// The close frames of Shutdown, byte for byte as the upstream receives them.
func TestRelayShutdownCloseFrameToUpstream(t *testing.T) {
	frames := make(chan parsedFrame, 1)
	addr := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, err = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		if err != nil {
			return
		}
		if f, err := parseFrame(br); err == nil {
			frames <- f
		}
	})
	e := newEnv(t, Options{}, withTarget(func(*env, *http.Request) string { return "ws://" + addr + "/" }))
	c := e.dial(t, "/")
	require.Eventually(t, func() bool { return e.relay.Active() == 1 }, time.Second, time.Millisecond)
	require.NoError(t, e.relay.Shutdown(context.Background()))

	f := <-frames
	require.True(t, f.fin)
	require.True(t, f.masked, "frames to the upstream must be masked")
	require.Equal(t, byte(0x8), f.op)
	require.Equal(t, uint16(CloseGoingAway), binary.BigEndian.Uint16(f.payload))
	require.Equal(t, "server shutting down", string(f.payload[2:]))

	_, _, err := c.ReadMessage()
	requireCloseCode(t, err, CloseGoingAway)
}

func TestRelayShutdownDeadline(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.dial(t, "/echo")
	require.Eventually(t, func() bool { return e.relay.Active() == 1 }, time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With no time left, Shutdown closes what is open and does not wait.
	require.ErrorIs(t, e.relay.Shutdown(ctx), context.Canceled)
	_, _, err := c.ReadMessage()
	require.Error(t, err)
}

func TestRelayClientDisconnects(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.dial(t, "/echo")
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("hi")))
	_, _, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, 1, e.relay.Active())

	// Gone without a close frame, like a killed browser tab.
	require.NoError(t, c.NetConn().Close())
	requireCloseCode(t, e.up.nextEnd(t), websocket.CloseAbnormalClosure)
	st := e.nextStats(t)
	require.NoError(t, st.Err)
	require.Equal(t, int64(len("hi")+6), st.Up)
	require.Equal(t, int64(len("hi")+2), st.Down)
	require.Eventually(t, func() bool { return e.relay.Active() == 0 }, time.Second, time.Millisecond)
}

func TestRelayUpstreamCloses(t *testing.T) {
	e := newEnv(t, Options{})
	c := e.dial(t, "/bye")
	_, _, err := c.ReadMessage()
	requireCloseCode(t, err, websocket.CloseNormalClosure)
	require.NoError(t, c.Close())
	require.NoError(t, e.nextErr(t))
}

func TestRelayRequestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t, Options{})
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.errs <- e.relay.ServeWebSocket(w, r.WithContext(ctx), "ws://"+e.up.host()+"/echo")
	}))
	front.Start()
	defer front.Close()

	c, _, err := websocket.DefaultDialer.Dial("ws://"+strings.TrimPrefix(front.URL, "http://")+"/", nil)
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { return e.relay.Active() == 1 }, time.Second, time.Millisecond)
	cancel()
	_, _, err = c.ReadMessage()
	requireCloseCode(t, err, CloseGoingAway)
	require.ErrorIs(t, e.nextErr(t), context.Canceled)
}

func TestAppendCloseFrame(t *testing.T) {
	long := strings.Repeat("é", 70) // 140 bytes: cut to 61 runes, 122 bytes
	tests := []struct {
		name   string
		code   uint16
		reason string
		masked bool
		want   []byte
		// wantReason is the reason received, if not reason
		wantReason string
	}{
		{name: "server, no reason", code: 1001, want: []byte{0x88, 0x02, 0x03, 0xe9}},
		{name: "server, reason", code: 1001, reason: "bye", want: []byte{0x88, 0x05, 0x03, 0xe9, 'b', 'y', 'e'}},
		{
			name: "client, masked", code: 1001, reason: "bye", masked: true,
			want: []byte{0x88, 0x85, 1, 2, 3, 4, 0x03 ^ 1, 0xe9 ^ 2, 'b' ^ 3, 'y' ^ 4, 'e' ^ 1},
		},
		{name: "long reason", code: 1000, reason: long, wantReason: strings.Repeat("é", 61)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendCloseFrame([]byte("prefix"), tt.code, tt.reason, tt.masked, [4]byte{1, 2, 3, 4})
			require.Equal(t, "prefix", string(got[:6]))
			got = got[6:]
			if tt.want != nil {
				require.Equal(t, tt.want, got)
			}
			f, err := parseFrame(bytes.NewReader(got))
			require.NoError(t, err)
			require.Equal(t, tt.masked, f.masked)
			require.Equal(t, tt.code, binary.BigEndian.Uint16(f.payload))
			want := tt.reason
			if tt.wantReason != "" {
				want = tt.wantReason
			}
			require.Equal(t, want, string(f.payload[2:]))
		})
	}
}

func ExampleRelay() {
	relay := New(Options{
		IdleTimeout: 5 * time.Minute,
		Header:      http.Header{"Authorization": {"Bearer instance-secret"}},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream/{id}", func(w http.ResponseWriter, r *http.Request) {
		// The caller authorizes the viewer and looks up the instance.
		upstream := "ws://10.0.0.7:9001/?session=" + r.PathValue("id")
		if err := relay.ServeWebSocket(w, r, upstream); err != nil {
			fmt.Println("stream relay:", err)
		}
	})
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ListenAndServe() }()

	// On shutdown: stop accepting, then end the relayed connections, which
	// http.Server.Shutdown does not track once hijacked.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	_ = relay.Shutdown(ctx)
}
