package worker

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/session"
)

// messageWriter is the write side of a connection. It is an interface only so
// that tests can measure the task path without gorilla's own allocations.
type messageWriter interface {
	WriteMessage(messageType int, data []byte) error
}

var _ messageWriter = (*websocket.Conn)(nil)

// keepBuf is the largest buffer a connection keeps between tasks: one big
// task should not pin megabytes for the life of the connection.
const keepBuf = 1 << 20

// errCrashed ends a connection whose crash command returned from an injected
// Exit, so that the manager sees it drop as it would with a real crash.
var errCrashed = errors.New("worker: crash requested")

// conn is one connection. A single goroutine runs it: it reads a frame, runs
// the task to its end, and only then reads the next one, which is what keeps
// the tasks of a connection in order.
type conn struct {
	w   *Worker
	ws  *websocket.Conn
	out messageWriter
	ctx context.Context

	rbuf    []byte // the message being served; decoded frames alias it
	wbuf    []byte // the frame being written
	scratch []byte // result data built before it is framed

	// A look-ahead read runs only while a task sleeps, to notice that the
	// manager has gone. Its result is handed back through pending (or kept
	// in ahead when it is a message) and served after the current task.
	pending  chan readResult
	reading  bool
	ahead    readResult
	hasAhead bool
	spare    []byte

	readFailed bool
}

type readResult struct {
	typ int
	buf []byte
	err error
}

func (w *Worker) serveConn(ctx context.Context, ws *websocket.Conn) {
	ws.SetReadLimit(maxMessageSize)
	c := &conn{
		w:       w,
		ws:      ws,
		out:     ws,
		ctx:     ctx,
		rbuf:    make([]byte, 0, bufSize),
		wbuf:    make([]byte, 0, bufSize),
		scratch: make([]byte, 0, 64),
	}
	remote := ws.RemoteAddr().String()
	w.log.Debug("connection opened", "remote", remote)

	connDone := make(chan struct{})
	goingAway := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(goingAway)
		deadline := time.Now().Add(closeGrace)
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "worker shutting down")
		_ = ws.WriteControl(websocket.CloseMessage, msg, deadline)
		// The read loop now waits for the peer's close reply, but not for
		// longer than the grace; net.Conn deadlines are safe to set from
		// here, gorilla's own setters are not.
		_ = ws.NetConn().SetReadDeadline(deadline)
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-connDone:
		case <-t.C:
			// A task blocked writing to a peer that does not read.
			_ = ws.Close()
		}
	})

	err := c.loop()
	if ctx.Err() != nil {
		c.drain()
	}
	close(connDone)
	if !stop() {
		// Let the close frame go out before the socket closes.
		<-goingAway
	}
	_ = ws.Close()
	if c.reading {
		<-c.pending
	}
	w.log.Debug("connection closed", "remote", remote, "err", err)
}

// loop serves frames until the connection fails.
func (c *conn) loop() error {
	for {
		typ, msg, err := c.read()
		if err != nil {
			c.readFailed = true
			return err
		}
		if err := c.serve(typ, msg); err != nil {
			return err
		}
		c.trim()
	}
}

// drain reads until the peer answers the close frame or the grace runs out,
// so that the closing handshake completes before the socket closes.
func (c *conn) drain() {
	for !c.readFailed {
		if _, _, err := c.read(); err != nil {
			c.readFailed = true
		}
	}
}

// serve answers one message. It returns an error only when the connection is
// no longer usable; protocol errors are answered with error frames.
func (c *conn) serve(typ int, msg []byte) error {
	if typ != websocket.TextMessage {
		return c.fail(nil, session.CodeBadRequest, "binary frames are not accepted")
	}
	var f session.Frame
	if err := session.Decode(msg, &f); err != nil {
		return c.fail(nil, session.CodeBadRequest, err.Error())
	}
	if f.Type != session.FrameTask {
		return c.fail(f.ID, session.CodeBadRequest, "unexpected frame type "+frameName(&f))
	}
	if f.ID == nil {
		return c.fail(nil, session.CodeBadRequest, `task has no "id"`)
	}
	return c.task(f.ID, f.Data)
}

func frameName(f *session.Frame) string {
	if f.Type == session.FrameUnknown {
		return string(f.TypeName)
	}
	return f.Type.String()
}

// read returns the next message: one a look-ahead read already has, or a
// fresh one read into rbuf.
func (c *conn) read() (int, []byte, error) {
	var r readResult
	switch {
	case c.hasAhead:
		r, c.ahead, c.hasAhead = c.ahead, readResult{}, false
	case c.reading:
		r = <-c.pending
		c.reading = false
	default:
		typ, buf, err := readMessage(c.ws, c.rbuf)
		c.rbuf = buf
		return typ, buf, err
	}
	// The look-ahead read used the spare buffer; the old message is served.
	c.spare, c.rbuf = c.rbuf, r.buf
	return r.typ, r.buf, r.err
}

// readMessage reads one message into buf, growing it as needed. Unlike
// ReadMessage it reuses the caller's buffer.
func readMessage(ws *websocket.Conn, buf []byte) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return 0, buf, err
	}
	buf = buf[:0]
	if cap(buf) == 0 {
		buf = make([]byte, 0, bufSize)
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
			return typ, buf, err
		}
	}
}

// lookAhead starts reading the next message in the background. Only one
// read may run on a gorilla connection, so read waits for this one.
func (c *conn) lookAhead() {
	if c.reading || c.hasAhead {
		return
	}
	if c.pending == nil {
		c.pending = make(chan readResult, 1)
	}
	c.reading = true
	buf := c.spare
	c.spare = nil
	go func() {
		typ, b, err := readMessage(c.ws, buf)
		c.pending <- readResult{typ: typ, buf: b, err: err}
	}()
}

// wait sleeps for d, returning early with an error when the connection is
// closed or its context is done.
func (c *conn) wait(d time.Duration) error {
	c.lookAhead()
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		var pending <-chan readResult
		if c.reading {
			pending = c.pending
		}
		select {
		case <-t.C:
			return nil
		case <-c.ctx.Done():
			return c.ctx.Err()
		case r := <-pending:
			c.reading = false
			if r.err != nil {
				c.readFailed = true
				return r.err
			}
			// A pipelined task: it waits its turn. The peer going away is
			// no longer noticed before the timer, which is fine for a test
			// worker.
			c.ahead, c.hasAhead = r, true
		}
	}
}

// trim drops buffers that one large message grew.
func (c *conn) trim() {
	if cap(c.rbuf) > keepBuf {
		c.rbuf = make([]byte, 0, bufSize)
	}
	if cap(c.spare) > keepBuf {
		c.spare = nil
	}
	if cap(c.wbuf) > keepBuf {
		c.wbuf = make([]byte, 0, bufSize)
	}
	if cap(c.scratch) > keepBuf {
		c.scratch = make([]byte, 0, 64)
	}
}

func (c *conn) result(id, data []byte) error {
	c.wbuf = session.AppendResult(c.wbuf[:0], id, data)
	return c.out.WriteMessage(websocket.TextMessage, c.wbuf)
}

func (c *conn) done(id []byte) error {
	c.wbuf = session.AppendDone(c.wbuf[:0], id)
	return c.out.WriteMessage(websocket.TextMessage, c.wbuf)
}

func (c *conn) fail(id []byte, code, message string) error {
	c.wbuf = session.AppendError(c.wbuf[:0], id, code, message)
	return c.out.WriteMessage(websocket.TextMessage, c.wbuf)
}
