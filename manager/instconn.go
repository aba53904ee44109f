package manager

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/rawio"
	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/session"
)

// instConn is the manager's connection to one instance, speaking the native
// protocol. Tasks on it are serial: the session holding the instance calls
// call one task at a time, and a reader goroutine dispatches every frame
// that comes back to that task's ResultWriter.
//
// Frames are read with wsframe, which tells the reader whether more input
// is buffered: while it is, the results dispatched to a client connection
// are held and go out in one write, with the task's done frame when that
// came in the same read.
type instConn struct {
	conn   net.Conn
	rd     wsframe.Reader
	onLost func(error)
	// held is a client connection whose writes wait while the reader has
	// more frames at hand, so that they go out together; only the reader
	// goroutine uses it.
	held *clientConn
	// The reader goroutine's own: src is the reader's input; buf holds the
	// message being read, frame its decoding; perr is what ended poll's
	// reading; pollFn is poll, made once.
	src    instSource
	buf    []byte
	frame  session.Frame
	perr   error
	pollFn func() bool

	// wmu serialises writes: tasks from the session, pongs from the reader,
	// the close frame from close. Frames to a server are masked, with a
	// fresh key each (RFC 6455 5.3) from rng.
	wmu    sync.Mutex
	rng    *rand.ChaCha8
	wbuf   []byte
	wuntil time.Time // the write deadline set on conn

	mu     sync.Mutex
	cur    *call // the task in flight, nil when idle
	one    call  // reused for every task: only one is in flight at a time
	seq    uint64
	closed bool
	drain  chan struct{} // closed when an abandoned task finishes

	dead      chan struct{}
	closeOnce sync.Once
}

type call struct {
	seq       uint64
	w         session.ResultWriter // nil once the caller gave up on the task
	s         *Session             // whose client the reader may hold
	abandoned bool
	done      chan error // buffered 1
}

var errInstanceLost = session.NewError(session.CodeInstanceLost, "the instance was lost")

const (
	instHandshakeTimeout = 10 * time.Second
	// instReadBuffer holds many small frames per read; larger payloads
	// are read straight into the message buffer.
	instReadBuffer = 16 << 10
)

func dialInstance(ctx context.Context, url string, header http.Header, tlsConfig *tls.Config, readLimit int64, onLost func(error)) (*instConn, error) {
	ctx, cancel := context.WithTimeout(ctx, instHandshakeTimeout)
	defer cancel()
	conn, rest, err := wsframe.DialTLS(ctx, url, header, tlsConfig)
	if err != nil {
		return nil, err
	}
	return newInstConn(conn, rest, readLimit, onLost), nil
}

// newInstConn runs the task path on conn, a WebSocket to an instance past
// its handshake; rest is what the peer sent with its answer.
func newInstConn(conn net.Conn, rest []byte, readLimit int64, onLost func(error)) *instConn {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	c := &instConn{conn: rawio.Wrap(conn), onLost: onLost, dead: make(chan struct{}), rng: rand.NewChaCha8(seed)}
	c.src = instSource{c: c, rest: rest}
	c.rd = wsframe.Reader{R: bufio.NewReaderSize(&c.src, instReadBuffer), Limit: readLimit, Ping: c.pong, Controls: true}
	c.one.done = make(chan error, 1)
	c.pollFn = c.poll
	go c.readLoop()
	return c
}

// instSource is the connection as the reader's buffer sees it: first what
// came with the handshake, then the socket. A read from the socket may
// block, so whatever the reader holds goes out before it: a streamed result
// never waits for the next frame. Inside poll a read never blocks; drained
// then tells that the last one read less than it asked for.
type instSource struct {
	c       *instConn
	rest    []byte
	polling bool
	drained bool
}

func (s *instSource) Read(p []byte) (int, error) {
	if len(s.rest) > 0 {
		n := copy(p, s.rest)
		s.rest = s.rest[n:]
		return n, nil
	}
	if !s.polling {
		s.c.release(true)
	}
	n, err := s.c.conn.Read(p)
	s.drained = s.polling && err == nil && n < len(p)
	return n, err
}

// socketPoller is a connection with rawio's Poll (a socket on Linux).
type socketPoller interface {
	Poll(f func() bool) error
}

// release ends the reader's hold on a client connection; flush writes
// what waits, otherwise the caller of the finished task writes it with its
// done or error frame.
func (c *instConn) release(flush bool) {
	if c.held != nil {
		_ = c.held.w.Release(flush)
		c.held = nil
	}
}

// writeTask sends a task frame, built in place.
func (c *instConn) writeTask(seq uint64, data []byte, timeout time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, start := wsframe.Begin(c.wbuf[:0])
	b = session.AppendTaskSeq(b, seq, data)
	key := c.maskKey()
	c.wbuf = wsframe.End(b, start, wsframe.OpText, &key)
	return c.writeLocked(timeout)
}

// writeControl sends a control frame.
func (c *instConn) writeControl(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	key := c.maskKey()
	c.wbuf = wsframe.AppendFrame(c.wbuf[:0], op, payload, &key)
	return c.writeLocked(time.Second)
}

func (c *instConn) maskKey() (key [4]byte) {
	binary.LittleEndian.PutUint32(key[:], uint32(c.rng.Uint64()))
	return key
}

// writeLocked writes wbuf within timeout. The deadline moves only when the
// one set leaves this write less than three quarters of timeout, or more
// than timeout: most tasks of a session go out without a timer update.
func (c *instConn) writeLocked(timeout time.Duration) error {
	var err error
	now := time.Now()
	if left := c.wuntil.Sub(now); left < timeout-timeout/4 || left > timeout {
		c.wuntil = now.Add(timeout)
		err = c.conn.SetWriteDeadline(c.wuntil)
	}
	if err == nil {
		_, err = c.conn.Write(c.wbuf)
	}
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	}
	return err
}

// pong answers a ping from the instance; the reader calls it.
func (c *instConn) pong(payload []byte) {
	_ = c.writeControl(wsframe.OpPong, payload)
}

// call sends one task and blocks until the instance finishes it, the timer
// fires, or ctx ends. Results are written to w from the reader goroutine
// while call waits; w is not used after call returns.
func (c *instConn) call(ctx context.Context, data []byte, w session.ResultWriter, s *Session, timer *time.Timer, timeout time.Duration) error {
	timer.Reset(timeout)
	defer timer.Stop()
	cl, err := c.begin(ctx, w, s, timer)
	if err != nil {
		return err
	}
	if err := c.writeTask(cl.seq, data, timeout); err != nil {
		c.fail(fmt.Errorf("write task: %w", err))
		return <-cl.done
	}
	select {
	case err := <-cl.done:
		return err
	case <-timer.C:
		if finished, err := c.abandon(cl); finished {
			return err
		}
		return session.NewError(session.CodeTimeout, "the task took longer than "+timeout.String())
	case <-ctx.Done():
		if finished, err := c.abandon(cl); finished {
			return err
		}
		return ctx.Err()
	}
}

// run sends one task outside any session, its results dropped, and blocks
// until the instance answers done (nil) or an error frame, timeout passes,
// the connection is lost (errInstanceLost) or ctx ends. Like call, it waits
// first for a task still running that its caller gave up on. It is not on
// the task path: it makes a timer of its own.
func (c *instConn) run(ctx context.Context, data []byte, timeout time.Duration) error {
	return c.call(ctx, data, nil, nil, time.NewTimer(timeout), timeout)
}

// resetInstance clears an instance of pool p between two sessions with p's
// reset task (Pool.Reset) on conn, within p.TaskTimeout. It returns nil at
// once when p has no reset task: release: kill, or reset: none.
//
// The release of a reuse pool calls it before the instance goes idle. The
// instance must not serve a session, nor count as idle, before it returns,
// and must be stopped when it returns an error: after an error frame or a
// timeout its state is unknown. A broken connection also reports the
// instance lost through conn's onLost.
func (m *Manager) resetInstance(ctx context.Context, conn *instConn, p *Pool) error {
	if p.resetTask == nil {
		if p.Reset != nil && p.Reset != ResetNone {
			// A pool that did not come through Config.defaults: failing
			// stops the instance rather than handing its state on.
			return fmt.Errorf("reset an instance of pool %q: the pool's reset was never checked", p.Name)
		}
		return nil
	}
	err := conn.run(ctx, p.resetTask, p.TaskTimeout)
	result := "ok"
	if err != nil {
		result = "error"
		err = fmt.Errorf("reset an instance of pool %q: %w", p.Name, err)
	}
	m.metrics.resets.WithLabelValues(p.Name, result).Inc()
	return err
}

// begin claims the connection for a task. If an abandoned task is still
// running on the instance it waits for it to end: the instance is serial,
// and frames without ids (binary results) must not be attributed to the
// wrong task.
func (c *instConn) begin(ctx context.Context, w session.ResultWriter, s *Session, timer *time.Timer) (*call, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errInstanceLost
		}
		if c.cur == nil {
			c.seq++
			cl := &c.one
			cl.seq, cl.w, cl.s, cl.abandoned = c.seq, w, s, false
			c.cur = cl
			c.mu.Unlock()
			return cl, nil
		}
		drain := c.drain
		c.mu.Unlock()
		select {
		case <-drain:
		case <-c.dead:
		case <-timer.C:
			return nil, session.NewError(session.CodeTimeout, "the instance is still busy with an earlier task")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// abandon detaches the caller from its task. finished reports that the
// task had already ended, with its outcome in err.
func (c *instConn) abandon(cl *call) (finished bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != cl {
		return true, <-cl.done
	}
	cl.abandoned = true
	cl.w = nil
	c.drain = make(chan struct{})
	return false, nil
}

// finish ends the current task; c.mu is held.
func (c *instConn) finishLocked(err error) {
	cl := c.cur
	c.cur = nil
	if cl.abandoned {
		close(c.drain)
		c.drain = nil
		return
	}
	cl.w = nil
	cl.done <- err
}

// readLoop reads the instance's frames until the connection ends. On a
// socket it reads inside rawio's Poll (poll), one read per burst of
// input: a task's answer comes whole and leaves the socket drained, and
// the reader then waits for the next one without the read that would find
// nothing. A frame that is not whole in the buffer (a large result), and
// any connection without Poll, is read the plain way, with Next waiting
// for its rest.
func (c *instConn) readLoop() {
	sp, _ := c.conn.(socketPoller)
	for {
		if sp != nil {
			c.src.drained = false
			err := sp.Poll(c.pollFn)
			if err == nil {
				err, c.perr = c.perr, nil
			}
			if err != nil {
				c.stop(err)
				return
			}
		}
		if err := c.next(); err != nil {
			c.stop(err)
			return
		}
	}
}

// next reads one message and handles it.
func (c *instConn) next() error {
	op, msg, err := c.rd.Next(c.buf[:0])
	if err != nil {
		return err
	}
	return c.handle(op, msg)
}

// poll is the callback of readLoop's Poll: it handles every whole frame
// in the buffer, then reads, until the socket is drained (false: wait for
// input), a frame is cut short (true: readLoop reads its rest) or the
// connection ends (true, with perr). It never closes the connection: a
// Close waits for it to return, which a write to a slow client in it can
// delay by the client's write timeout (Config.WriteTimeout) at most.
func (c *instConn) poll() bool {
	c.src.polling = true
	defer func() { c.src.polling = false }()
	for {
		for c.rd.Whole() {
			if err := c.next(); err != nil {
				c.perr = err
				return true
			}
		}
		if c.rd.R.Buffered() > 0 {
			return true
		}
		if c.src.drained {
			c.src.drained = false
			c.release(true)
			return false
		}
		if _, err := c.rd.R.Peek(1); err != nil {
			if errors.Is(err, rawio.ErrWouldBlock) {
				c.release(true)
				return false
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // no close frame came
			}
			c.perr = err
			return true
		}
	}
}

// stop ends the reader on err, what ended the connection or a frame the
// manager cannot take.
func (c *instConn) stop(err error) {
	c.release(true)
	c.readFailed(err)
}

// handle takes one message from the instance: results go to the writer
// of the task in flight, done and error frames end it. An error is a
// frame the manager cannot take; the reader stops on it.
func (c *instConn) handle(op byte, msg []byte) error {
	c.buf = msg
	if cap(c.buf) > 1<<20 {
		c.buf = nil
	}
	if op != wsframe.OpText && op != wsframe.OpBinary {
		return nil // a ping (answered) or a pong
	}
	var seq uint64
	f := &c.frame
	if op == wsframe.OpText {
		if err := session.Decode(msg, f); err != nil {
			return fmt.Errorf("bad frame from instance: %w", err)
		}
		var err error
		if seq, err = strconv.ParseUint(string(f.ID), 10, 64); err != nil {
			return nil // not about a task of ours (an event, a pong)
		}
	}
	c.mu.Lock()
	if cl := c.cur; cl != nil && (op == wsframe.OpBinary || cl.seq == seq) {
		writes := op == wsframe.OpBinary || f.Type == session.FrameResult
		if writes && cl.w != nil && c.held == nil && cl.s != nil && c.rd.R.Buffered() > 0 {
			c.held = cl.s.holdClient()
		}
		switch {
		case op == wsframe.OpBinary:
			if cl.w != nil && cl.w.WriteBinary(msg) != nil {
				cl.w = nil // the client is gone; the task still ends normally
			}
		case f.Type == session.FrameResult:
			if cl.w != nil && cl.w.WriteResult(f.Data) != nil {
				cl.w = nil
			}
		case f.Type == session.FrameDone, f.Type == session.FrameError:
			// The caller writes done or error next, with what is held,
			// unless it gave up on the task.
			c.release(cl.abandoned)
			if f.Type == session.FrameDone {
				c.finishLocked(nil)
			} else {
				c.finishLocked(parseInstanceError(f.Error))
			}
		}
	}
	c.mu.Unlock()
	return nil
}

// readFailed answers what ended the read loop as gorilla would have, with
// a close frame where one is due, and reports the loss.
func (c *instConn) readFailed(err error) {
	var (
		ce *wsframe.CloseError
		pe *wsframe.ProtocolError
	)
	switch {
	case errors.As(err, &ce):
		_ = c.writeControl(wsframe.OpClose, wsframe.ClosePayload(nil, ce.Code, ""))
	case errors.As(err, &pe):
		_ = c.writeControl(wsframe.OpClose, wsframe.ClosePayload(nil, wsframe.CloseProtocolError, pe.Reason))
	case errors.Is(err, wsframe.ErrReadLimit):
		_ = c.writeControl(wsframe.OpClose, wsframe.ClosePayload(nil, wsframe.CloseMessageTooBig, ""))
	}
	c.fail(err)
}

func parseInstanceError(raw []byte) error {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Code == "" {
		return session.NewError(session.CodeTaskFailed, "the instance reported an error")
	}
	return session.NewError(e.Code, e.Message)
}

// fail marks the connection dead once, fails the task in flight and reports
// the loss.
func (c *instConn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.cur != nil {
		c.finishLocked(errInstanceLost)
	}
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		close(c.dead)
		_ = c.conn.Close()
	})
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("connection to the instance broke")
	}
	if c.onLost != nil {
		c.onLost(err)
	}
}

// close shuts the connection without reporting a loss: the manager stops
// the instance on purpose.
func (c *instConn) close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	if c.cur != nil {
		c.finishLocked(errInstanceLost)
	}
	c.mu.Unlock()
	if already {
		return
	}
	c.closeOnce.Do(func() {
		close(c.dead)
		_ = c.writeControl(wsframe.OpClose, wsframe.ClosePayload(nil, websocket.CloseNormalClosure, ""))
		_ = c.conn.Close()
	})
}

// clean reports whether the instance could serve another session now: the
// connection is up and no abandoned task is still running.
func (c *instConn) clean() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && c.cur == nil
}
