package farm

import (
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

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
)

var hostUpgrader = websocket.Upgrader{
	ReadBufferSize:  16 << 10,
	WriteBufferSize: 16 << 10,
}

// taskRunner runs native tasks on an adapted instance.
type taskRunner interface {
	// runTask runs one task to its end: it writes the task's results and
	// then exactly one done or error frame to c (writes to a broken c are
	// dropped), and returns after that. id and data are valid until it
	// returns.
	runTask(c *hostConn, id, data []byte)
}

// hostConn is one manager WebSocket to an adapted instance. Writes are
// serialised: the adapter's reader and the task's caller both write.
type hostConn struct {
	ws *websocket.Conn

	mu     sync.Mutex
	buf    []byte
	broken bool // a write failed; later frames are dropped
}

func (c *hostConn) write(typ int, b []byte) {
	if c.broken {
		return
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(hostWriteTimeout))
	if err := c.ws.WriteMessage(typ, b); err != nil {
		c.broken = true
		_ = c.ws.Close() // the read loop ends too
	}
}

func (c *hostConn) result(id, data []byte) {
	c.mu.Lock()
	c.buf = session.AppendResult(c.buf[:0], id, data)
	c.write(websocket.TextMessage, c.buf)
	c.trimLocked()
	c.mu.Unlock()
}

func (c *hostConn) binary(b []byte) {
	c.mu.Lock()
	c.write(websocket.BinaryMessage, b)
	c.mu.Unlock()
}

func (c *hostConn) done(id []byte) {
	c.mu.Lock()
	c.buf = session.AppendDone(c.buf[:0], id)
	c.write(websocket.TextMessage, c.buf)
	c.mu.Unlock()
}

func (c *hostConn) fail(id []byte, code, msg string) {
	c.mu.Lock()
	c.buf = session.AppendError(c.buf[:0], id, code, msg)
	c.write(websocket.TextMessage, c.buf)
	c.mu.Unlock()
}

func (c *hostConn) trimLocked() {
	if cap(c.buf) > keepBuffer {
		c.buf = nil
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
		// Close only the socket: a writer may hold c.mu, and its write
		// fails at once now.
		_ = c.ws.Close()
	}
}

// ServeHTTP upgrades the manager's request and serves native-protocol tasks
// on it until the connection or the instance goes.
func (h *hostSet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := hostUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the request
	}
	ws.SetReadLimit(maxHostMessage)
	c := &hostConn{ws: ws}
	if !h.add(c) {
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "the instance is gone")
		_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	defer func() {
		h.remove(c)
		_ = ws.Close()
	}()
	var (
		buf []byte
		fr  session.Frame
	)
	for {
		typ, msg, err := readInto(ws, buf)
		if err != nil {
			h.log.Debug("manager connection closed", "err", err)
			return
		}
		buf = msg
		if typ != websocket.TextMessage {
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
			h.run.runTask(c, fr.ID, fr.Data)
			h.task.Unlock()
		case session.FramePing:
			c.mu.Lock()
			c.write(websocket.TextMessage, []byte(`{"type":"pong"}`))
			c.mu.Unlock()
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
