package worker

import (
	"bufio"
	"context"
	"errors"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/rawio"
	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/session"
)

// keepBuf is the largest buffer a connection keeps between tasks: one big
// task should not pin megabytes for the life of the connection.
const keepBuf = 1 << 20

// errCrashed ends a connection whose crash command returned from an injected
// Exit, so that the manager sees it drop as it would with a real crash.
var errCrashed = errors.New("worker: crash requested")

// conn is one connection. A single goroutine runs it: it reads a frame, runs
// the task to its end, and only then reads the next one, which is what keeps
// the tasks of a connection in order.
//
// Frames are wsframe's after gorilla's handshake. out is held for the
// connection's life: results wait in its buffer and go out with the task's
// done or error frame in one write (or every wsframe.FlushSize bytes while
// a task streams).
type conn struct {
	w   *Worker
	nc  net.Conn
	rd  wsframe.Reader
	out wsframe.Writer
	ctx context.Context

	rbuf    []byte   // the message being served; decoded frames alias it
	scratch []byte   // result data built before it is framed
	parts   [][]byte // the slices of a large stream chunk

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
	op  byte
	buf []byte
	err error
}

func (w *Worker) newConn(ctx context.Context, nc net.Conn) *conn {
	nc = rawio.Wrap(nc)
	c := &conn{
		w:       w,
		nc:      nc,
		ctx:     ctx,
		rbuf:    make([]byte, 0, bufSize),
		scratch: make([]byte, 0, 64),
	}
	c.rd = wsframe.Reader{R: bufio.NewReaderSize(nc, bufSize), FromClient: true, Limit: maxMessageSize,
		Ping: func(p []byte) { _ = c.out.Pong(p) }}
	c.out.Reset(nc, 0)
	c.out.Hold()
	return c
}

// serveConn serves an upgraded connection; gorilla has buffered nothing
// of it, as it refuses clients that send before the handshake is answered.
func (w *Worker) serveConn(ctx context.Context, nc net.Conn) {
	c := w.newConn(ctx, nc)
	remote := nc.RemoteAddr().String()
	w.log.Debug("connection opened", "remote", remote)

	connDone := make(chan struct{})
	goingAway := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(goingAway)
		deadline := time.Now().Add(closeGrace)
		// A task blocked writing to a peer that does not read gives up the
		// writer at the deadline, so the close frame can follow.
		_ = nc.SetWriteDeadline(deadline)
		_ = c.out.Close(websocket.CloseGoingAway, "worker shutting down", closeGrace)
		// The read loop now waits for the peer's close reply, but not for
		// longer than the grace.
		_ = nc.SetReadDeadline(deadline)
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-connDone:
		case <-t.C:
			_ = nc.Close()
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
	_ = nc.Close()
	if c.reading {
		<-c.pending
	}
	w.log.Debug("connection closed", "remote", remote, "err", err)
}

// loop serves frames until the connection fails.
func (c *conn) loop() error {
	for {
		op, msg, err := c.read()
		if err != nil {
			c.readFailed = true
			c.answer(err)
			return err
		}
		if err := c.serve(op, msg); err != nil {
			return err
		}
		c.trim()
	}
}

// answer replies to what ended the peer's stream with the close frame due,
// as gorilla would: the peer's close code echoed, 1002 for a protocol error,
// 1009 for a message over the limit.
func (c *conn) answer(err error) {
	var (
		ce *wsframe.CloseError
		pe *wsframe.ProtocolError
	)
	switch {
	case errors.As(err, &ce):
		_ = c.out.Close(ce.Code, "", closeGrace)
	case errors.As(err, &pe):
		_ = c.out.Close(wsframe.CloseProtocolError, pe.Reason, closeGrace)
	case errors.Is(err, wsframe.ErrReadLimit):
		_ = c.out.Close(wsframe.CloseMessageTooBig, "", closeGrace)
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
func (c *conn) serve(op byte, msg []byte) error {
	if op != wsframe.OpText {
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
func (c *conn) read() (byte, []byte, error) {
	var r readResult
	switch {
	case c.hasAhead:
		r, c.ahead, c.hasAhead = c.ahead, readResult{}, false
	case c.reading:
		r = <-c.pending
		c.reading = false
	default:
		op, buf, err := c.rd.Next(c.rbuf[:0])
		c.rbuf = buf
		return op, buf, err
	}
	// The look-ahead read used the spare buffer; the old message is served.
	c.spare, c.rbuf = c.rbuf, r.buf
	return r.op, r.buf, r.err
}

// lookAhead starts reading the next message in the background. Only one
// read may run on a connection, so read waits for this one.
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
		op, b, err := c.rd.Next(buf[:0])
		c.pending <- readResult{op: op, buf: b, err: err}
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
	if cap(c.scratch) > keepBuf {
		c.scratch = make([]byte, 0, 64)
	}
}

// result writes a result frame; it waits in out for the task's end.
func (c *conn) result(id, data []byte) error {
	return c.out.Text(false, func(b []byte) []byte { return session.AppendResult(b, id, data) })
}

// done and fail end a task: they write out whatever waits with them.
func (c *conn) done(id []byte) error {
	return c.out.Text(true, func(b []byte) []byte { return session.AppendDone(b, id) })
}

func (c *conn) fail(id []byte, code, message string) error {
	return c.out.Text(true, func(b []byte) []byte { return session.AppendError(b, id, code, message) })
}
