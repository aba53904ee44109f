package farm

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/session"
)

// The farm side of the native protocol, for instances that do not speak it
// themselves (dial, stdio): the farm accepts the manager's WebSocket, reads
// task frames, and has the instance's adapter answer them.

const (
	// maxHostMessage caps one message on the adapters' WebSockets, the
	// manager's and the dial instances'.
	maxHostMessage = 64 << 20
	// hostWriteTimeout bounds one write to the manager: a manager that does
	// not read must not stall an instance's output for ever.
	hostWriteTimeout = 30 * time.Second
	// keepBuffer is the largest buffer a connection keeps between messages.
	keepBuffer = 1 << 20
	// hostReadBuffer buffers the manager's frames: many small ones per
	// read; larger messages are read straight into the message buffer.
	hostReadBuffer = 16 << 10
)

// hostUpgrader answers the handshake only: frames are wsframe's, so
// gorilla needs no buffers of its own.
var hostUpgrader = websocket.Upgrader{}

// taskRunner runs native tasks on an adapted instance.
type taskRunner interface {
	// runTask runs one task to its end: it writes the task's results and
	// then exactly one done or error frame to c (writes to a broken c are
	// dropped), and returns after that. id and data are valid until it
	// returns.
	runTask(c *hostConn, id, data []byte)
}

// asyncRunner is a taskRunner that can also start a task and return before
// it ends, so that the connection's reader need not wait: startTask unlocks
// end once the task has ended (its done or error frame written). id and
// data are valid until startTask returns.
type asyncRunner interface {
	startTask(c *hostConn, id, data []byte, end *sync.Mutex)
}

// hostConn is one manager WebSocket to an adapted instance, after its
// handshake (gorilla answers it) or without one (Farm.Connect). Frames from
// the manager are read with wsframe; frames to it go out through a
// wsframe.Writer, which serialises the adapter's reader and the task's
// caller and can gather a task's results and its done frame into one write
// (hold).
type hostConn struct {
	conn net.Conn
	w    wsframe.Writer
}

func newHostConn(conn net.Conn) *hostConn {
	c := &hostConn{conn: conn}
	c.w.Reset(conn, hostWriteTimeout)
	return c
}

// sent handles the outcome of a write: after a failed one the stream is
// broken, later frames are dropped (the Writer keeps the error), and the
// connection closes, which ends the read loop too.
func (c *hostConn) sent(err error) {
	if err != nil && !errors.Is(err, wsframe.ErrCloseSent) {
		_ = c.conn.Close()
	}
}

// result writes a result; it waits while the connection is held.
func (c *hostConn) result(id, data []byte) {
	c.sent(c.w.Text(false, func(b []byte) []byte { return session.AppendResult(b, id, data) }))
}

func (c *hostConn) binary(b []byte) {
	c.sent(c.w.Binary(true, b))
}

// done writes the done frame, with whatever results are held.
func (c *hostConn) done(id []byte) {
	c.sent(c.w.Text(true, func(b []byte) []byte { return session.AppendDone(b, id) }))
}

func (c *hostConn) fail(id []byte, code, msg string) {
	c.sent(c.w.Text(true, func(b []byte) []byte { return session.AppendError(b, id, code, msg) }))
}

// hold makes results wait, to go out together with what follows them, until
// release.
func (c *hostConn) hold() { c.w.Hold() }

// release ends hold and writes what waits.
func (c *hostConn) release() { c.sent(c.w.Release(true)) }

// closeFor answers what ended the reading of the connection with a close
// frame where one is due, as gorilla would have: the echo of the manager's
// close, or the code of a broken rule.
func (c *hostConn) closeFor(err error) {
	var (
		ce *wsframe.CloseError
		pe *wsframe.ProtocolError
	)
	switch {
	case errors.As(err, &ce):
		_ = c.w.Close(ce.Code, "", time.Second)
	case errors.As(err, &pe):
		_ = c.w.Close(wsframe.CloseProtocolError, pe.Reason, time.Second)
	case errors.Is(err, wsframe.ErrReadLimit):
		_ = c.w.Close(wsframe.CloseMessageTooBig, "", time.Second)
	}
}

// hostSet holds the manager connections of one adapted instance. They are
// closed when the instance goes, as a native instance's connections would
// break, so the manager learns at once. It also serialises tasks: the
// instance runs one at a time, whichever connection sent it.
type hostSet struct {
	run taskRunner
	log *slog.Logger

	task sync.Mutex

	mu     sync.Mutex
	conns  map[*hostConn]struct{}
	closed bool
}

func (h *hostSet) add(c *hostConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if h.conns == nil {
		h.conns = make(map[*hostConn]struct{})
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *hostSet) remove(c *hostConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// closeAll closes every connection and refuses new ones.
func (h *hostSet) closeAll() {
	h.mu.Lock()
	h.closed = true
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	for c := range conns {
		// Close only the socket: a writer may hold c.w, and its write
		// fails at once now.
		_ = c.conn.Close()
	}
}

// ServeHTTP upgrades the manager's request and serves native-protocol tasks
// on it until the connection or the instance goes.
func (h *hostSet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := hostUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the request
	}
	// gorilla refuses a client that sent frames before the handshake was
	// answered: nothing is left in its buffers, and the frames are read
	// with wsframe, which allocates nothing per message.
	h.serve(ws.NetConn())
}

// serve serves native-protocol tasks on conn, a manager's WebSocket past
// its handshake, until the connection or the instance goes; conn is
// closed when it returns.
func (h *hostSet) serve(conn net.Conn) {
	c := newHostConn(conn)
	if !h.add(c) {
		_ = c.w.Close(wsframe.CloseGoingAway, "the instance is gone", time.Second)
		_ = conn.Close()
		return
	}
	defer func() {
		h.remove(c)
		_ = conn.Close()
	}()
	rd := wsframe.Reader{R: bufio.NewReaderSize(conn, hostReadBuffer), FromClient: true,
		Limit: maxHostMessage, Ping: func(p []byte) { c.sent(c.w.Pong(p)) }}
	var (
		buf []byte
		fr  session.Frame
	)
	for {
		op, msg, err := rd.Next(buf[:0])
		if err != nil {
			h.log.Debug("manager connection closed", "err", err)
			c.closeFor(err)
			return
		}
		buf = msg
		if op != wsframe.OpText {
			c.fail(nil, session.CodeBadRequest, "binary frames are not accepted")
			continue
		}
		if err := session.Decode(msg, &fr); err != nil {
			c.fail(nil, session.CodeBadRequest, err.Error())
			continue
		}
		switch fr.Type {
		case session.FrameTask:
			if fr.ID == nil {
				c.fail(nil, session.CodeBadRequest, `task has no "id"`)
				continue
			}
			h.task.Lock()
			if a, ok := h.run.(asyncRunner); ok {
				a.startTask(c, fr.ID, fr.Data, &h.task)
			} else {
				h.run.runTask(c, fr.ID, fr.Data)
				h.task.Unlock()
			}
		case session.FramePing:
			c.sent(c.w.Text(true, func(b []byte) []byte { return append(b, `{"type":"pong"}`...) }))
		default:
			name := fr.Type.String()
			if fr.Type == session.FrameUnknown {
				name = string(fr.TypeName)
			}
			c.fail(fr.ID, session.CodeBadRequest, "unexpected frame type "+name)
		}
		if cap(buf) > keepBuffer {
			buf = nil
		}
	}
}

// readInto reads one message into buf, reusing its storage.
func readInto(ws *websocket.Conn, buf []byte) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return 0, buf, err
	}
	buf = buf[:0]
	if cap(buf) == 0 {
		buf = make([]byte, 0, 4<<10)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return typ, buf, nil
		}
		if err != nil {
			return 0, buf, err
		}
	}
}
