package manager

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/rawio"
	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/store"
)

// clientConn is one client WebSocket. gorilla answers the handshake; the
// frames are drover's own (wsframe): reads allocate nothing per message,
// and writes from the session's task loop, the instance reader (results)
// and the manager (events) are gathered by one Writer, which is also the
// only thing that writes to the connection.
//
// A connection that has been silent for readLinger holds no goroutine and
// no read buffer: it waits in the manager's readPoller, which starts a
// reader again when input comes or the peer goes (quiet.go).
type clientConn struct {
	conn net.Conn
	rd   wsframe.Reader // rd.R is set only while a reader runs
	w    wsframe.Writer
	// s is the connection's session, set before its first reader starts.
	s *Session
	// poll is the manager's poller when the connection may go quiet;
	// pollKey is its key there (guarded by the poller).
	poll    *readPoller
	pollKey uint64
	// reading is readOwned while a goroutine reads (or is about to),
	// readQuiet while the connection waits in the poller.
	reading atomic.Int32
	// lingerUntil is the read deadline waitInput set on conn, zero when
	// none is set; only the reader uses it.
	lingerUntil time.Time
}

// clientReadBuffer buffers a client's input while a reader runs: one read
// holds a task frame of common size, and larger messages are read straight
// into their buffer.
const clientReadBuffer = 512

// closeTimeout bounds the write of a close frame.
const closeTimeout = time.Second

func newClientConn(m *Manager, conn net.Conn) *clientConn {
	c := &clientConn{conn: rawio.Wrap(conn)}
	c.rd = wsframe.Reader{FromClient: true, Limit: m.cfg.MaxMessageSize, Ping: c.pong, Controls: true}
	c.w.Reset(c.conn, m.cfg.WriteTimeout)
	return c
}

// writeResult writes a result; it waits while the instance reader holds
// the connection.
func (c *clientConn) writeResult(id, data []byte) error {
	return c.w.Text(false, func(b []byte) []byte { return session.AppendResult(b, id, data) })
}

func (c *clientConn) writeDone(id []byte) error {
	return c.w.Text(true, func(b []byte) []byte { return session.AppendDone(b, id) })
}

func (c *clientConn) writeError(id []byte, code, msg string) error {
	return c.w.Text(true, func(b []byte) []byte { return session.AppendError(b, id, code, msg) })
}

func (c *clientConn) writeEvent(name string, kv ...string) {
	_ = c.w.Text(true, func(b []byte) []byte { return session.AppendEvent(b, name, kv...) })
}

func (c *clientConn) writeFrame(fn func([]byte) []byte) error {
	return c.w.Text(true, fn)
}

func (c *clientConn) pong(payload []byte) { _ = c.w.Pong(payload) }

// close sends d's close frame and closes the connection; the reader then
// ends.
func (c *clientConn) close(d session.Disconnect) {
	c.closeWith(d.Code, d.CloseReason())
}

// closeWith sends a close frame with any code (the echo of a client's
// close) and closes the connection.
func (c *clientConn) closeWith(code int, reason string) {
	_ = c.w.Close(code, reason, closeTimeout)
	c.drop()
}

// drop closes the connection. A quiet one gets a reader again, which
// finds it closed and ends as a reader of an open one would.
func (c *clientConn) drop() {
	_ = c.conn.Close()
	c.wake()
}

// refuse answers a connection the manager will not serve: an error frame
// with code and msg, then d's close.
func (c *clientConn) refuse(code, msg string, d session.Disconnect) {
	_ = c.writeError(nil, code, msg)
	c.close(d)
}

// clientTask is one task read from a client, and the ResultWriter for it.
// It lives in a pooled buffer for the duration of the task.
type clientTask struct {
	s   *Session
	buf []byte
	f   session.Frame
	t   session.Task
}

var taskPool = sync.Pool{New: func() any { return &clientTask{buf: make([]byte, 0, 1024)} }}

// WriteResult sends a result to whichever connection the session has now.
func (ct *clientTask) WriteResult(data []byte) error {
	if c := ct.s.currentClient(); c != nil {
		return c.writeResult(ct.t.ID, data)
	}
	return nil // detached: results are dropped, the task goes on
}

// WriteBinary sends a binary result.
func (ct *clientTask) WriteBinary(data []byte) error {
	if c := ct.s.currentClient(); c != nil {
		return c.w.Binary(false, data)
	}
	return nil
}

// holdClient makes the session's client connection gather the frames
// written to it until the returned connection is released; nil when the
// session has no client.
func (s *Session) holdClient() *clientConn {
	c := s.currentClient()
	if c != nil {
		c.w.Hold()
	}
	return c
}

// upgrader answers the handshake only: no buffer sizes, so that gorilla
// reuses the ones net/http hijacked and allocates none of its own. The
// origin was checked before (checkOrigin).
func (m *Manager) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
}

// upgradeHeader is the header of a handshake's answer: a client that sent
// its token as a bearer.<token> subprotocol gets the other protocol it
// offered echoed, without which browsers fail the handshake; the bearer
// entry is never echoed.
func upgradeHeader(r *http.Request) http.Header {
	if p := auth.Subprotocol(r); p != "" {
		return http.Header{"Sec-Websocket-Protocol": {p}}
	}
	return nil
}

// serveWS is the client endpoint: GET /ws?pool=P&wait=false&resume=TOKEN.
// The handler returns once the session is set up and the connection's
// read loop runs in a goroutine of its own: net/http and gin then drop
// their buffers and state for the connection, which an idle client would
// otherwise keep alive.
func (m *Manager) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := m.upgrade.Upgrade(w, r, upgradeHeader(r))
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	// gorilla refuses clients that sent frames before the handshake was
	// answered, so nothing is left in its buffers: the connection is ours.
	c := newClientConn(m, ws.NetConn())
	if !m.trackConn(c) {
		c.close(session.DisconnectShutdown)
		return
	}
	s := m.startWS(c, r)
	if s == nil {
		m.untrackConn(c)
		return
	}
	c.s = s
	if pollable(c.conn) {
		c.poll = m.readPoller()
	}
	if c.poll == nil || !c.startQuiet() {
		go m.readLoop(c)
	}
}

// startWS resumes or opens the session of a new client connection. It
// returns nil when it refused the client and closed the connection.
func (m *Manager) startWS(c *clientConn, r *http.Request) *Session {
	q := r.URL.Query()
	opts, err := session.ParseConnectOptions(q, m.connectDefaults(true))
	if err != nil {
		code, msg := m.clientError(err)
		c.refuse(code, msg, session.DisconnectBadOptions)
		return nil
	}
	if opts.Resume != "" {
		return m.resumeWS(c, r, opts.Resume)
	}
	s, err := m.admit(r.Context(), openRequest{opts: opts, remote: m.clientAddr(r), http: r, query: q, client: c})
	if err != nil {
		code, msg := m.clientError(err)
		c.refuse(code, msg, refusal(err))
		return nil
	}
	go m.placeWS(s, c, opts.Wait)
	return s
}

// resumeWS gives a new connection the session of a resume token: one of
// this manager's, or one another manager placed.
func (m *Manager) resumeWS(c *clientConn, r *http.Request, tok string) *Session {
	s := m.sessionByToken(tok)
	if s == nil {
		if !c.probeAlive(resumeProbe) {
			// A request left from before a freeze, its client gone: do not
			// take the session from the manager that serves it now.
			m.log.Info("resume not taken: the client did not answer a ping", "remote", m.clientAddr(r))
			c.drop()
			return nil
		}
		s = m.claimShared(r.Context(), tok, "", m.clientAddr(r))
	}
	if s != nil && !samePrincipal(s.owner, auth.FromContext(r.Context())) {
		// Someone else's: as unknown as a token that matches nothing.
		s = nil
	}
	if s == nil || !s.attach(c) {
		d := session.DisconnectUnknownToken
		c.refuse(d.Task.Code, d.Task.Message, d)
		return nil
	}
	_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
	m.log.Info("session resumed", "session", s.info.ID, "instance", s.info.Instance)
	return s
}

// placeWS places a WebSocket session and greets it. The client learns its
// place in the queue while it waits, once per change: a placement retried
// after a farm failed does not repeat the same position. A session that
// waits in the queue holds no goroutine: its client connection is quiet
// in the poller, and placement goes on with it when its turn comes.
func (m *Manager) placeWS(s *Session, c *clientConn, wait bool) {
	last := 0
	m.placeSessionFunc(s.ctx, s, wait, func(pos int) {
		if pos == last {
			return
		}
		last = pos
		_ = c.writeFrame(func(b []byte) []byte { return session.AppendQueued(b, pos) })
	}, func(err error) {
		if err != nil {
			if s.ctx.Err() == nil {
				code, msg := m.clientError(err)
				_ = c.writeError(nil, code, msg)
				s.end(placementFailure(code))
			}
			return
		}
		// Recorded before the welcome: once the client holds the token, any
		// manager can resume the session.
		m.shareSession(s)
		_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
	})
}

// claimShared resumes a session another manager placed, by its secret: a
// resume token, or (restKey set) the REST id whose secret it is. It claims
// the session in the store, connects to its instance and puts both on this
// manager's books. nil means there is nothing to resume.
func (m *Manager) claimShared(ctx context.Context, tok, restKey, remote string) *Session {
	rec, err := m.shared.claim(ctx, boundSecret(tok, auth.FromContext(ctx)))
	if rec.Slot != "" {
		defer m.place.Unpend(rec.Slot)
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			m.log.Warn("resume through the shared state failed", "err", err)
		}
		return nil
	}
	if m.sessionByID(rec.ID) != nil {
		return nil // still here: the token did not match it
	}
	fail := func(why string, err error) *Session {
		m.log.Warn("cannot resume session", "session", rec.ID, "reason", why, "err", err)
		m.shared.deleteSession(rec.TokenHash)
		return nil
	}
	p, err := m.pool(rec.Pool)
	if err != nil {
		return fail("unknown pool", err)
	}
	var info farmapi.Instance
	if err := json.Unmarshal(rec.Instance, &info); err != nil {
		return fail("bad record", err)
	}
	s := m.newSession(p, remote)
	s.info.ID = rec.ID
	s.info.Created = rec.Created
	// The store does not know who opened the session: whoever proves
	// they hold its secret now owns it here.
	if who := auth.FromContext(ctx); who != nil {
		s.owner, s.info.User = who, who.User
		auth.SetSession(&s.info, who)
	}
	s.limitResumed() // before anything can end it; released below if it never begins here
	if restKey != "" {
		s.restKey = restKey
	} else {
		s.token = tok
	}
	inst, err := m.place.Adopt(ctx, s.holder(), rec.Farm, rec.Slot, info)
	if err != nil {
		s.cancel(nil)
		s.releaseLimits()
		return fail("cannot take over its instance", err)
	}
	s.bind(inst) // a session nobody else holds yet: it binds
	m.addSession(s)
	m.shareSession(s)
	m.log.Info("session resumed from another manager", "session", rec.ID, "instance", info.ID, "from", rec.Owner)
	return s
}

// readLoop reads client frames and runs their tasks, one at a time, in the
// connection's reader goroutine: no goroutine per message, and a slow
// instance slows only its own client. It returns when the connection ends,
// or when it has been silent for readLinger and waits in the poller.
func (m *Manager) readLoop(c *clientConn) {
	s := c.s
	c.rd.R = getReadBuffer(c.conn)
	c.watchEnd()
	for {
		// Wait for input before taking a task buffer: a connection
		// between tasks holds none.
		if err := c.waitInput(); err != nil {
			if c.lingered(err) {
				if c.goQuiet() {
					return
				}
				continue
			}
			m.readerDone(s, c, err)
			return
		}
		ct := taskPool.Get().(*clientTask)
		op, buf, err := c.rd.Next(ct.buf[:0])
		ct.buf = buf
		switch {
		case err != nil:
			putTask(ct)
			m.readerDone(s, c, err)
			return
		case op == wsframe.OpPing || op == wsframe.OpPong:
			putTask(ct) // answered by the reader: back to waiting
			continue
		case op == wsframe.OpBinary:
			putTask(ct)
			m.violation(s, c, session.DisconnectBinaryFrame)
			m.readerEnds(c)
			return
		}
		if !m.handleFrame(s, c, ct) {
			m.readerEnds(c)
			return
		}
	}
}

// readerDone handles the read error that ends a reader, and lets the
// connection go.
func (m *Manager) readerDone(s *Session, c *clientConn, err error) {
	m.clientGone(s, c, err)
	m.readerEnds(c)
}

func putTask(ct *clientTask) {
	ct.s = nil
	ct.t = session.Task{}
	ct.f = session.Frame{}
	if cap(ct.buf) > 64<<10 {
		ct.buf = make([]byte, 0, 1024)
	}
	taskPool.Put(ct)
}

// handleFrame acts on one client frame; false ends the read loop.
func (m *Manager) handleFrame(s *Session, c *clientConn, ct *clientTask) bool {
	defer putTask(ct)
	if err := session.Decode(ct.buf, &ct.f); err != nil {
		if errors.Is(err, session.ErrInvalidUTF8) {
			m.violation(s, c, session.DisconnectInvalidUTF8)
			return false
		}
		m.metrics.badFrames.Inc()
		_ = c.writeError(nil, session.CodeBadRequest, err.Error())
		return true
	}
	switch ct.f.Type {
	case session.FrameTask:
		if ct.f.ID == nil {
			m.metrics.badFrames.Inc()
			_ = c.writeError(nil, session.CodeBadRequest, `a task needs an "id"`)
			return true
		}
		if err := s.admitTask(); err != nil {
			code, msg := errorOf(err)
			_ = c.writeError(ct.f.ID, code, msg)
			return true
		}
		defer s.taskDone()
		ct.s = s
		ct.t = session.Task{ID: ct.f.ID, Data: ct.f.Data, Session: &s.info}
		if ct.t.Data == nil {
			ct.t.Data = nullJSON
		}
		detached := false
		_ = s.run(&ct.t, ct, func(err error) {
			// The instance reader may be the one that wrote the last
			// result; the done frame goes to the connection the session
			// has now.
			out := s.currentClient()
			switch {
			case out == nil:
				detached = true
			case err != nil:
				code, msg := m.clientError(err)
				_ = out.writeError(ct.t.ID, code, msg)
			default:
				_ = out.writeDone(ct.t.ID)
			}
		})
		if detached {
			return !s.ended()
		}
	case session.FrameLogout:
		s.end(session.DisconnectLogout)
		return false
	case session.FramePing:
		_ = c.writeFrame(func(b []byte) []byte { return append(b, `{"type":"pong"}`...) })
	default:
		m.metrics.badFrames.Inc()
		name := ct.f.Type.String()
		if ct.f.TypeName != nil {
			name = string(ct.f.TypeName[:min(len(ct.f.TypeName), maxEcho)])
		}
		_ = c.writeError(ct.f.ID, session.CodeBadRequest, "unknown frame type "+strconv.Quote(name))
	}
	return true
}

var nullJSON = []byte("null")

// maxEcho bounds the part of a bad frame that an error message echoes.
const maxEcho = 64

// clientGone handles a read error: a close frame ends the session, a broken
// connection detaches it for the resume window. Close frames are answered
// as gorilla does.
func (m *Manager) clientGone(s *Session, c *clientConn, err error) {
	var (
		ce *wsframe.CloseError
		pe *wsframe.ProtocolError
	)
	switch {
	case errors.Is(err, wsframe.ErrReadLimit):
		m.violation(s, c, session.DisconnectMessageTooBig)
	case errors.As(err, &ce):
		c.closeWith(ce.Code, "") // the reply echoes the code
		if cur := s.currentClient(); cur == c || cur == nil {
			s.end(session.DisconnectClientClosed)
		}
	case errors.As(err, &pe):
		d := session.DisconnectProtocolError
		if pe.Reason != "" {
			d.Reason = pe.Reason
		}
		c.close(d)
		s.detach(c)
	default:
		c.drop()
		s.detach(c)
	}
}

// violation closes c for a frame the protocol does not allow, as d says.
// The session ends if c is its connection; a connection the session has
// left behind (a resume took over) is only closed.
func (m *Manager) violation(s *Session, c *clientConn, d session.Disconnect) {
	c.close(d) // a second close frame from end is not sent
	if cur := s.currentClient(); cur == c || cur == nil {
		s.end(d)
	}
}

// connect runs the connect hooks in order.
func (m *Manager) connect(ctx context.Context, r *middleware.ConnectRequest) error {
	for _, h := range m.connectHooks {
		if err := h.OnConnect(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

var _ session.ResultWriter = (*clientTask)(nil)
