package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Errors returned by ServeWebSocket and reported in Stats.Err. They are
// wrapped with their cause; test them with errors.Is.
var (
	ErrNotWebSocket        = errors.New("not a websocket upgrade request")
	ErrBadUpstream         = errors.New("invalid upstream url")
	ErrUpstreamUnreachable = errors.New("upstream unreachable")
	ErrBadHandshake        = errors.New("upstream websocket handshake failed")
	ErrRefused             = errors.New("upstream refused the websocket upgrade")
	ErrIdleTimeout         = errors.New("websocket relay idle for too long")
	ErrMaxLifetime         = errors.New("websocket relay reached its maximum lifetime")
	ErrClosed              = errors.New("websocket relay shut down")
)

// RefusedError is what ServeWebSocket returns when the upstream answered the
// upgrade request with a status other than 101. The client has been sent that
// answer. It matches ErrRefused.
type RefusedError struct {
	StatusCode int
}

func (e *RefusedError) Error() string {
	return "upstream refused the websocket upgrade with status " + strconv.Itoa(e.StatusCode)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// CloseGoingAway is the WebSocket close code (RFC 6455 §7.4.1) the relay sends
// to both ends when it ends a connection itself.
const CloseGoingAway = 1001

const (
	defaultDialTimeout = 10 * time.Second
	// maxResponseHead bounds the upstream's answer to the upgrade request,
	// status line and headers.
	maxResponseHead = 64 << 10
	// maxRefusalBody bounds the body of a refusal passed on to the client.
	maxRefusalBody = 64 << 10
	// maxInformational bounds the 1xx responses (other than 101) skipped
	// before the real answer.
	maxInformational = 5
	// closeLinger is how long the other direction may go on after one side
	// closed its half cleanly. WebSocket peers close both halves at once, so
	// this only cuts off peers that never close.
	closeLinger = 5 * time.Second
	// closeFrameTimeout bounds each close frame write, so a peer that does
	// not read cannot hold up Shutdown.
	closeFrameTimeout = 2 * time.Second
)

// Options configure a Relay. The zero value is usable.
type Options struct {
	// DialTimeout bounds connecting to the upstream and its answer to the
	// upgrade request. Default 10s.
	DialTimeout time.Duration
	// IdleTimeout closes both sides, with a 1001 close frame, after this long
	// without a byte moving in either direction; 0 means never. The check
	// runs four times per IdleTimeout, so a connection ends up to a quarter
	// of IdleTimeout late. On Linux it reads the kernel's byte counters of
	// the two sockets and costs the copy loops nothing; elsewhere (or for a
	// client connection that is not TCP) the loops count bytes themselves and
	// cannot splice.
	IdleTimeout time.Duration
	// MaxLifetime closes both sides, with a 1001 close frame, this long after
	// the upgrade; 0 means never.
	MaxLifetime time.Duration
	// Header holds extra headers sent upstream, such as Authorization. They
	// replace the client's headers of the same name. Host and hop-by-hop
	// headers are ignored.
	Header http.Header
	// TLS configures the connections to wss:// and https:// upstreams;
	// nil: the system's roots. Its ServerName defaults to the upstream's
	// host.
	TLS *tls.Config
	// Logger receives debug records of relayed connections. Default: none.
	Logger *slog.Logger
	// OnClose, if set, is called once for every connection that was relayed
	// (the upstream answered 101), after both sides have been closed and
	// before ServeWebSocket returns. Failures before that point are reported
	// only by ServeWebSocket's error.
	OnClose func(stats Stats)
}

// Stats describe one relayed connection.
type Stats struct {
	// Up and Down count the bytes relayed after the handshake, from the
	// client to the upstream and back.
	Up, Down int64
	// Duration runs from the upgrade to the close of both sides.
	Duration time.Duration
	// Err says why the relay ended: nil when a side closed its connection,
	// ErrIdleTimeout, ErrMaxLifetime, ErrClosed, the request context's error,
	// or the I/O error that broke a direction.
	Err error
}

// Relay relays WebSocket connections and tracks the ones it hijacked. It is
// safe for concurrent use; one Relay serves any number of connections.
type Relay struct {
	opts   Options
	dialer net.Dialer
	log    *slog.Logger

	// tcpInfo lets the idle check read the kernel's byte counters; tests
	// turn it off to exercise the portable fallback.
	tcpInfo bool

	mu      sync.Mutex
	closing bool
	pairs   map[*pair]struct{}
	wg      sync.WaitGroup // one per registered pair
}

// New returns a Relay. opts.Header is copied; later changes to it have no
// effect.
func New(opts Options) *Relay {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Header = extraHeader(opts.Header)
	return &Relay{
		opts:    opts,
		log:     opts.Logger,
		tcpInfo: true,
		pairs:   make(map[*pair]struct{}),
	}
}

// ServeWebSocket relays req, a WebSocket upgrade request, to upstream, a ws://
// or http:// URL (wss:// or https:// over TLS, see Options.TLS) whose path
// and query replace the request's.
//
// It dials the upstream over TCP and forwards the upgrade request with Host,
// path and query rewritten to the upstream's, the client's end-to-end headers
// (Origin, Cookie, Sec-WebSocket-* …) kept, Options.Header applied and the
// client's address appended to X-Forwarded-For. If the upstream answers with
// anything but 101, that answer goes to the client as a normal HTTP response
// (status, headers and at most 64 KiB of body) and the error is a
// *RefusedError. Otherwise it hijacks the client connection, writes the 101
// and relays bytes both ways, unchanged, until a side closes, a limit of
// Options fires, req's context ends or Shutdown is called; the error is then
// Stats.Err.
//
// Failures before the upgrade get a 400 (not an upgrade request), 500, 502
// (upstream unreachable or broken handshake), 503 (after Shutdown) or 504
// (the upstream timed out) response.
func (r *Relay) ServeWebSocket(w http.ResponseWriter, req *http.Request, upstream string) error {
	if err := checkUpgrade(req); err != nil {
		http.Error(w, "expected a websocket upgrade request", http.StatusBadRequest)
		return err
	}
	u, addr, err := parseUpstream(upstream)
	if err != nil {
		httpError(w, http.StatusInternalServerError)
		return err
	}
	if r.shuttingDown() {
		httpError(w, http.StatusServiceUnavailable)
		return ErrClosed
	}

	ctx, cancel := context.WithTimeout(req.Context(), r.opts.DialTimeout)
	defer cancel()
	c, err := r.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		httpError(w, gatewayStatus(err))
		return fmt.Errorf("%w: %w", ErrUpstreamUnreachable, err)
	}
	var up net.Conn = c

	// The deadline of ctx covers the whole handshake; the same timer also
	// aborts it when the client goes away.
	abort := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	if u.Scheme == "wss" || u.Scheme == "https" {
		var tc net.Conn
		if tc, err = r.tlsClient(ctx, c, u); err == nil {
			up = tc
		}
	}
	var resp *http.Response
	var br *bufio.Reader
	if err == nil {
		resp, br, err = handshake(up, buildUpgradeRequest(req, u, r.opts.Header))
	}
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
		err = forwardRefusal(w, resp)
		abort()
		_ = up.Close()
		return err
	}
	if !abort() && err == nil {
		// The deadline may have been moved into the past just now.
		err = context.Cause(ctx)
	}
	if err != nil {
		_ = up.Close()
		httpError(w, gatewayStatus(err))
		return fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	_ = up.SetDeadline(time.Time{})

	p := r.register(up, upstream)
	if p == nil {
		_ = up.Close()
		httpError(w, http.StatusServiceUnavailable)
		return ErrClosed
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.unregister(p)
		_ = up.Close()
		httpError(w, http.StatusInternalServerError)
		return fmt.Errorf("hijack the client connection: %w", err)
	}
	r.setClient(p, client)

	// Bytes that arrived early belong to the stream and go first: frames the
	// upstream sent right behind its 101, and frames the client sent before
	// it saw the 101.
	downEarly, _ := br.Peek(br.Buffered())
	head := appendSwitchingResponse(make([]byte, 0, 512+len(downEarly)), resp.Header)
	head = append(head, downEarly...)
	upEarly, _ := brw.Peek(brw.Reader.Buffered())

	st := p.run(req.Context(), r, head, len(downEarly), upEarly)
	if st.Err != nil {
		r.log.Debug("websocket relay ended", "upstream", upstream, "up", st.Up, "down", st.Down, "duration", st.Duration, "err", st.Err)
	} else {
		r.log.Debug("websocket relay ended", "upstream", upstream, "up", st.Up, "down", st.Down, "duration", st.Duration)
	}
	if r.opts.OnClose != nil {
		r.opts.OnClose(st)
	}
	r.unregister(p)
	return st.Err
}

// Active reports how many connections are being relayed: upgraded and not yet
// closed.
func (r *Relay) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pairs)
}

// Shutdown stops the relay: new requests get a 503, and every relayed
// connection is stopped, sent a close frame with code 1001 ("going away") on
// both sides (masked towards the upstream, as a client must) and closed.
// Shutdown waits for them, including their OnClose calls, until ctx ends; then
// it closes whatever is left without close frames and returns ctx's error
// without waiting further. It may be called more than once.
//
// The relay does not parse the stream, so a close frame can land in the middle
// of a WebSocket frame it had only partly passed on; the peer then sees a
// protocol error instead of a clean close. Like Caddy, the relay accepts that:
// the connection is ending either way, and most connections are idle between
// messages when a server shuts down.
func (r *Relay) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	for p := range r.pairs {
		p.signalStop()
	}
	r.mu.Unlock()

	// With no time left, do not wait at all: a select on two ready
	// channels picks one at random.
	if ctx.Err() == nil {
		done := make(chan struct{})
		go func() {
			r.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
		}
	}
	r.mu.Lock()
	for p := range r.pairs {
		p.forceClose()
	}
	r.mu.Unlock()
	return ctx.Err()
}

func (r *Relay) shuttingDown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

// tlsClient runs the TLS handshake with a wss:// or https:// upstream on
// c; ctx bounds it.
func (r *Relay) tlsClient(ctx context.Context, c net.Conn, u *url.URL) (net.Conn, error) {
	cfg := &tls.Config{}
	if r.opts.TLS != nil {
		cfg = r.opts.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	cfg.NextProtos = []string{"http/1.1"} // a WebSocket upgrade is HTTP/1.1
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}

// register tracks a connection pair from its 101 on; it returns nil once
// Shutdown has begun.
func (r *Relay) register(up net.Conn, upstream string) *pair {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil
	}
	p := &pair{up: up, upstream: upstream, stop: make(chan struct{})}
	r.pairs[p] = struct{}{}
	r.wg.Add(1)
	return p
}

func (r *Relay) setClient(p *pair, c net.Conn) {
	r.mu.Lock()
	p.client = c
	r.mu.Unlock()
}

func (r *Relay) unregister(p *pair) {
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
	r.wg.Done()
}

// handshake writes the upgrade request to up and reads the answer, skipping
// informational responses other than 101. The returned reader holds any bytes
// read past the answer's head.
func handshake(up net.Conn, request []byte) (*http.Response, *bufio.Reader, error) {
	if _, err := up.Write(request); err != nil {
		return nil, nil, err
	}
	lr := &io.LimitedReader{R: up, N: maxResponseHead}
	br := bufio.NewReaderSize(lr, 4096)
	for range maxInformational {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if lr.N == 0 {
				return nil, nil, errors.New("upstream response head too large")
			}
			return nil, nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			if !hasToken(resp.Header["Upgrade"], "websocket") {
				return nil, nil, errors.New("upstream switched protocols without Upgrade: websocket")
			}
			return resp, br, nil
		case resp.StatusCode >= 200:
			// The body of a refusal gets a budget of its own, with room
			// for chunked framing.
			lr.N = 2*maxRefusalBody + int64(br.Size())
			return resp, br, nil
		case resp.StatusCode < 100:
			return nil, nil, fmt.Errorf("upstream answered with status %d", resp.StatusCode)
		}
	}
	return nil, nil, errors.New("upstream sent too many informational responses")
}

// forwardRefusal copies the upstream's non-101 answer to the client.
func forwardRefusal(w http.ResponseWriter, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
	// A body cut short by a broken upstream still goes out: it is what the
	// client would have seen without the relay.
	h := w.Header()
	copyEndToEnd(h, resp.Header)
	if bodyAllowed(resp.StatusCode) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(resp.StatusCode)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
	return &RefusedError{StatusCode: resp.StatusCode}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// parseUpstream returns the upstream URL and the address to dial.
func parseUpstream(s string) (*url.URL, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrBadUpstream, err)
	}
	switch u.Scheme {
	case "ws", "http", "wss", "https":
	default:
		return nil, "", fmt.Errorf("%w: scheme %q (want ws, wss, http or https)", ErrBadUpstream, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, "", fmt.Errorf("%w: %q has no host", ErrBadUpstream, s)
	}
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "wss" || u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	return u, net.JoinHostPort(u.Hostname(), port), nil
}

// gatewayStatus picks the status for a failed upstream exchange.
func gatewayStatus(err error) int {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// httpError answers with the bare status text: details of the upstream stay
// out of the client's view and go to the caller as the returned error.
func httpError(w http.ResponseWriter, status int) {
	http.Error(w, http.StatusText(status), status)
}

// aLongTimeAgo is a deadline that has passed: setting it makes blocked reads
// and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)
