package manager

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/farmapi"
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
type clientConn struct {
	conn net.Conn
	rd   wsframe.Reader
	w    wsframe.Writer
}

// clientReadBuffer buffers a client's input: one read holds a task frame
// of common size, larger messages are read straight into their buffer, and
// an idle connection keeps no more than this.
const clientReadBuffer = 512

// closeTimeout bounds the write of a close frame.
const closeTimeout = time.Second

func newClientConn(m *Manager, conn net.Conn) *clientConn {
	c := &clientConn{conn: conn}
	c.rd = wsframe.Reader{R: bufio.NewReaderSize(conn, clientReadBuffer), FromClient: true,
		Limit: m.cfg.MaxMessageSize, Ping: c.pong}
	c.w.Reset(conn, m.cfg.WriteTimeout)
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

// closeWith sends a close frame and closes the connection; the reader then
// ends.
func (c *clientConn) closeWith(code int, reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = c.w.Close(code, reason, closeTimeout)
	_ = c.conn.Close()
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
// reuses the ones net/http hijacked and allocates none of its own.
func (m *Manager) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{CheckOrigin: m.cfg.CheckOrigin}
}

// serveWS is the client endpoint: GET /ws?pool=P&wait=false&resume=TOKEN.
// The handler returns once the session is set up and the connection's
// read loop runs in a goroutine of its own: net/http and gin then drop
// their buffers and state for the connection, which an idle client would
// otherwise keep alive.
func (m *Manager) serveWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ws, err := m.upgrade.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	// gorilla refuses clients that sent frames before the handshake was
	// answered, so nothing is left in its buffers: the connection is ours.
	c := newClientConn(m, ws.NetConn())
	if !m.trackConn(c) {
		c.closeWith(websocket.CloseGoingAway, "shutting down")
		return
	}
	s := m.startWS(c, r, q)
	if s == nil {
		m.untrackConn(c)
		return
	}
	go func() {
		defer m.untrackConn(c)
		m.readLoop(s, c)
	}()
}

// startWS resumes or opens the session of a new client connection. It
// returns nil when it refused the client and closed the connection.
func (m *Manager) startWS(c *clientConn, r *http.Request, q url.Values) *Session {
	if tok := q.Get("resume"); tok != "" {
		s := m.sessionByToken(tok)
		if s == nil {
			s = m.claimShared(r.Context(), tok, "", r.RemoteAddr)
		}
		if s == nil || !s.attach(c) {
			_ = c.writeError(nil, session.CodeNotFound, "no resumable session for this token")
			c.closeWith(websocket.ClosePolicyViolation, "unknown resume token")
			return nil
		}
		_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
		m.log.Info("session resumed", "session", s.info.ID, "instance", s.info.Instance)
		return s
	}

	poolName := q.Get("pool")
	if poolName == "" {
		poolName = m.cfg.DefaultPool
	}
	p, err := m.pool(poolName)
	if err != nil {
		_ = c.writeError(nil, session.CodeNotFound, err.Error())
		c.closeWith(websocket.ClosePolicyViolation, "unknown pool")
		return nil
	}
	s := m.newSession(p, r.RemoteAddr)
	s.client = c
	s.labels = parseLabels(q)
	if err := m.connect(s.ctx, &middleware.ConnectRequest{Info: &s.info, HTTP: r, Query: q}); err != nil {
		code, msg := errorOf(err)
		_ = c.writeError(nil, code, msg)
		c.closeWith(websocket.ClosePolicyViolation, "rejected")
		s.cancel()
		return nil
	}
	m.addSession(s)
	wait := q.Get("wait") != "false" && q.Get("wait") != "0"
	go m.placeWS(s, c, wait)
	return s
}

// placeWS places a WebSocket session and greets it.
func (m *Manager) placeWS(s *Session, c *clientConn, wait bool) {
	inst, err := m.acquire(s.ctx, s, wait, func(pos int) {
		_ = c.writeFrame(func(b []byte) []byte { return session.AppendQueued(b, pos) })
	})
	if err != nil {
		if s.ctx.Err() == nil {
			code, msg := errorOf(err)
			_ = c.writeError(nil, code, msg)
			closeCode := websocket.CloseTryAgainLater
			if code == session.CodeNotFound || code == session.CodeInternal {
				closeCode = websocket.CloseInternalServerErr
			}
			s.end(msg, closeCode, false)
		}
		return
	}
	s.bind(inst)
	if s.ended() {
		m.place.Release(inst, true)
		return
	}
	m.metrics.sessionsOpened.WithLabelValues(s.pool.cfg.Name).Inc()
	// Recorded before the welcome: once the client holds the token, any
	// manager can resume the session.
	m.shareSession(s)
	_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
}

// claimShared resumes a session another manager placed, by its secret: a
// resume token, or (restKey set) the REST id whose secret it is. It claims
// the session in the store, connects to its instance and puts both on this
// manager's books. nil means there is nothing to resume.
func (m *Manager) claimShared(ctx context.Context, tok, restKey, remote string) *Session {
	rec, err := m.shared.claim(ctx, tok)
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
	if restKey != "" {
		s.restKey = restKey
	} else {
		s.token = tok
	}
	inst, err := m.place.Adopt(ctx, s.holder(), rec.Farm, rec.Slot, info)
	if err != nil {
		s.cancel()
		return fail("cannot take over its instance", err)
	}
	s.bind(inst)
	m.addSession(s)
	m.shareSession(s)
	m.log.Info("session resumed from another manager", "session", rec.ID, "instance", info.ID, "from", rec.Owner)
	return s
}

// readLoop reads client frames and runs their tasks, one at a time, in the
// connection's own goroutine: no goroutine per message, and a slow instance
// slows only its own client.
func (m *Manager) readLoop(s *Session, c *clientConn) {
	for {
		// Wait for input before taking a task buffer: an idle connection
		// holds none.
		if _, err := c.rd.R.Peek(1); err != nil {
			m.clientGone(s, c, err)
			return
		}
		ct := taskPool.Get().(*clientTask)
		op, buf, err := c.rd.Next(ct.buf[:0])
		ct.buf = buf
		if err != nil {
			putTask(ct)
			m.clientGone(s, c, err)
			return
		}
		if op == wsframe.OpBinary {
			putTask(ct)
			c.closeWith(websocket.CloseUnsupportedData, "binary frames are not accepted")
			s.end("protocol violation", 0, true)
			return
		}
		if !m.handleFrame(s, c, ct) {
			return
		}
	}
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
			c.closeWith(websocket.CloseInvalidFramePayloadData, "invalid UTF-8")
			s.end("protocol violation", 0, true)
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
		// Tasks sent before the welcome wait for the placement.
		select {
		case <-s.bound:
		case <-s.ctx.Done():
		}
		if s.inst == nil {
			return false
		}
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
				code, msg := errorOf(err)
				_ = out.writeError(ct.t.ID, code, msg)
			default:
				_ = out.writeDone(ct.t.ID)
			}
		})
		if detached {
			return !s.ended()
		}
	case session.FrameLogout:
		s.end("logout", websocket.CloseNormalClosure, true)
		return false
	case session.FramePing:
		_ = c.writeFrame(func(b []byte) []byte { return append(b, `{"type":"pong"}`...) })
	default:
		m.metrics.badFrames.Inc()
		name := ct.f.Type.String()
		if ct.f.TypeName != nil {
			name = string(ct.f.TypeName)
		}
		_ = c.writeError(ct.f.ID, session.CodeBadRequest, "unknown frame type "+strconv.Quote(name))
	}
	return true
}

var nullJSON = []byte("null")

// parseLabels reads the farm labels a client asks for: labels=k=v,k2=v2
// and label.k=v.
func parseLabels(q url.Values) map[string]string {
	var out map[string]string
	set := func(k, v string) {
		if k = strings.TrimSpace(k); k == "" {
			return
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = strings.TrimSpace(v)
	}
	for _, l := range q["labels"] {
		for _, kv := range strings.Split(l, ",") {
			k, v, _ := strings.Cut(kv, "=")
			set(k, v)
		}
	}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, "label."); ok && len(vs) > 0 {
			set(name, vs[0])
		}
	}
	return out
}

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
		c.closeWith(websocket.CloseMessageTooBig, "")
		s.end("message too big", 0, true)
	case errors.As(err, &ce):
		c.closeWith(ce.Code, "") // the reply echoes the code
		if s.currentClient() == c || s.currentClient() == nil {
			s.end("client closed", 0, true)
		}
	case errors.As(err, &pe):
		c.closeWith(websocket.CloseProtocolError, pe.Reason)
		s.detach(c)
	default:
		_ = c.conn.Close()
		s.detach(c)
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
