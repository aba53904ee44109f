package manager

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// clientConn is one client WebSocket. Writes come from the session's task
// loop, the instance reader (results) and the manager (events), so they are
// serialised by wmu; each encodes into a pooled buffer.
type clientConn struct {
	ws      *websocket.Conn
	m       *Manager
	wmu     sync.Mutex
	timeout time.Duration
}

type byteBuf struct{ b []byte }

var bufPool = sync.Pool{New: func() any { return &byteBuf{b: make([]byte, 0, 512)} }}

func getBuf() *byteBuf { return bufPool.Get().(*byteBuf) }

func putBuf(b *byteBuf) {
	if cap(b.b) > 64<<10 {
		return // do not let one big message pin memory in the pool
	}
	b.b = b.b[:0]
	bufPool.Put(b)
}

// writePool lends gorilla its write buffers only while a write is under way,
// so an idle connection holds none.
type writePool struct{ p sync.Pool }

func (w *writePool) Get() any  { return w.p.Get() }
func (w *writePool) Put(v any) { w.p.Put(v) }

var clientWritePool = &writePool{}

func (c *clientConn) write(mt int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.ws.WriteMessage(mt, b)
}

func (c *clientConn) writeResult(id, data []byte) error {
	b := getBuf()
	b.b = session.AppendResult(b.b, id, data)
	err := c.write(websocket.TextMessage, b.b)
	putBuf(b)
	return err
}

func (c *clientConn) writeDone(id []byte) error {
	b := getBuf()
	b.b = session.AppendDone(b.b, id)
	err := c.write(websocket.TextMessage, b.b)
	putBuf(b)
	return err
}

func (c *clientConn) writeError(id []byte, code, msg string) error {
	b := getBuf()
	b.b = session.AppendError(b.b, id, code, msg)
	err := c.write(websocket.TextMessage, b.b)
	putBuf(b)
	return err
}

func (c *clientConn) writeEvent(name string, kv ...string) {
	b := getBuf()
	b.b = session.AppendEvent(b.b, name, kv...)
	_ = c.write(websocket.TextMessage, b.b)
	putBuf(b)
}

func (c *clientConn) writeFrame(fn func([]byte) []byte) error {
	b := getBuf()
	b.b = fn(b.b)
	err := c.write(websocket.TextMessage, b.b)
	putBuf(b)
	return err
}

// closeWith sends a close frame and closes the connection; the reader then
// ends.
func (c *clientConn) closeWith(code int, reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = c.ws.Close()
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
		return c.write(websocket.BinaryMessage, data)
	}
	return nil
}

func (m *Manager) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		WriteBufferPool: clientWritePool,
		CheckOrigin:     m.cfg.CheckOrigin,
	}
}

// serveWS is the client endpoint: GET /ws?pool=P&wait=false&resume=TOKEN.
func (m *Manager) serveWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ws, err := m.upgrade.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	ws.SetReadLimit(m.cfg.MaxMessageSize)
	c := &clientConn{ws: ws, m: m, timeout: m.cfg.WriteTimeout}
	if !m.trackConn(c) {
		c.closeWith(websocket.CloseGoingAway, "shutting down")
		return
	}
	defer m.untrackConn(c)

	if tok := q.Get("resume"); tok != "" {
		s := m.sessionByToken(tok)
		if s == nil || !s.attach(c) {
			_ = c.writeError(nil, session.CodeNotFound, "no resumable session for this token")
			c.closeWith(websocket.ClosePolicyViolation, "unknown resume token")
			return
		}
		_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
		m.log.Info("session resumed", "session", s.info.ID, "instance", s.info.Instance)
		m.readLoop(s, c)
		return
	}

	poolName := q.Get("pool")
	if poolName == "" {
		poolName = m.cfg.DefaultPool
	}
	p, err := m.sched.pool(poolName)
	if err != nil {
		_ = c.writeError(nil, session.CodeNotFound, err.Error())
		c.closeWith(websocket.ClosePolicyViolation, "unknown pool")
		return
	}
	s := m.newSession(p, r.RemoteAddr)
	s.client = c
	s.labels = parseLabels(q)
	if err := m.connect(s.ctx, &middleware.ConnectRequest{Info: &s.info, HTTP: r, Query: q}); err != nil {
		code, msg := errorOf(err)
		_ = c.writeError(nil, code, msg)
		c.closeWith(websocket.ClosePolicyViolation, "rejected")
		s.cancel()
		return
	}
	m.addSession(s)
	wait := q.Get("wait") != "false" && q.Get("wait") != "0"
	go m.placeWS(s, c, wait)
	m.readLoop(s, c)
}

// placeWS places a WebSocket session and greets it.
func (m *Manager) placeWS(s *Session, c *clientConn, wait bool) {
	inst, err := m.sched.acquire(s.ctx, s, s.pool, wait, func(pos int) {
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
		m.sched.release(inst, true)
		return
	}
	m.metrics.sessionsOpened.WithLabelValues(s.pool.cfg.Name).Inc()
	_ = c.writeFrame(func(b []byte) []byte { return session.AppendWelcome(b, s.info.ID, s.info.Instance, s.token) })
}

// readLoop reads client frames and runs their tasks, one at a time, in the
// connection's own goroutine: no goroutine per message, and a slow instance
// slows only its own client.
func (m *Manager) readLoop(s *Session, c *clientConn) {
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			m.clientGone(s, c, err)
			return
		}
		if mt == websocket.BinaryMessage {
			c.closeWith(websocket.CloseUnsupportedData, "binary frames are not accepted")
			s.end("protocol violation", 0, true)
			return
		}
		ct := taskPool.Get().(*clientTask)
		ct.buf, err = readInto(ct.buf[:0], r)
		if err != nil {
			putTask(ct)
			m.clientGone(s, c, err)
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

// readInto appends everything from r to b.
func readInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
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
		err := s.run(&ct.t, ct)
		// The instance reader may be the one that wrote the last result; the
		// done frame goes to the connection the session has now.
		out := s.currentClient()
		if out == nil {
			return !s.ended()
		}
		if err != nil {
			code, msg := errorOf(err)
			_ = out.writeError(ct.t.ID, code, msg)
		} else {
			_ = out.writeDone(ct.t.ID)
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
// connection detaches it for the resume window.
func (m *Manager) clientGone(s *Session, c *clientConn, err error) {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		_ = c.ws.Close()
		s.end("message too big", 0, true)
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
		_ = c.ws.Close()
		if s.currentClient() == c || s.currentClient() == nil {
			s.end("client closed", 0, true)
		}
	default:
		_ = c.ws.Close()
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
