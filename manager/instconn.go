package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/session"
)

// instConn is the manager's connection to one instance, speaking the native
// protocol. Tasks on it are serial: the session holding the instance calls
// call one task at a time, and a reader goroutine dispatches every frame
// that comes back to that task's ResultWriter.
type instConn struct {
	ws     *websocket.Conn
	onLost func(error)

	mu     sync.Mutex
	cur    *call // the task in flight, nil when idle
	one    call  // reused for every task: only one is in flight at a time
	seq    uint64
	closed bool
	drain  chan struct{} // closed when an abandoned task finishes

	dead      chan struct{}
	closeOnce sync.Once
	wbuf      []byte // owned by the caller of call, serialised by the session
}

type call struct {
	seq       uint64
	w         session.ResultWriter // nil once the caller gave up on the task
	abandoned bool
	done      chan error // buffered 1
}

var errInstanceLost = session.NewError(session.CodeInstanceLost, "the instance was lost")

var instanceDialer = websocket.Dialer{
	ReadBufferSize:   16 << 10,
	WriteBufferSize:  16 << 10,
	HandshakeTimeout: 10 * time.Second,
}

func dialInstance(ctx context.Context, url string, header http.Header, readLimit int64, onLost func(error)) (*instConn, error) {
	ws, _, err := instanceDialer.DialContext(ctx, url, header)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(readLimit)
	c := &instConn{ws: ws, onLost: onLost, dead: make(chan struct{})}
	c.one.done = make(chan error, 1)
	go c.readLoop()
	return c, nil
}

// call sends one task and blocks until the instance finishes it, the timer
// fires, or ctx ends. Results are written to w from the reader goroutine
// while call waits; w is not used after call returns.
func (c *instConn) call(ctx context.Context, data []byte, w session.ResultWriter, timer *time.Timer, timeout time.Duration) error {
	timer.Reset(timeout)
	defer timer.Stop()
	cl, err := c.begin(ctx, w, timer)
	if err != nil {
		return err
	}
	c.wbuf = session.AppendTaskSeq(c.wbuf[:0], cl.seq, data)
	err = c.ws.SetWriteDeadline(time.Now().Add(timeout))
	if err == nil {
		err = c.ws.WriteMessage(websocket.TextMessage, c.wbuf)
	}
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	}
	if err != nil {
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

// begin claims the connection for a task. If an abandoned task is still
// running on the instance it waits for it to end: the instance is serial,
// and frames without ids (binary results) must not be attributed to the
// wrong task.
func (c *instConn) begin(ctx context.Context, w session.ResultWriter, timer *time.Timer) (*call, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errInstanceLost
		}
		if c.cur == nil {
			c.seq++
			cl := &c.one
			cl.seq, cl.w, cl.abandoned = c.seq, w, false
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

func (c *instConn) readLoop() {
	var (
		buf bytes.Buffer
		f   session.Frame
	)
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.fail(err)
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			c.fail(err)
			return
		}
		if mt == websocket.BinaryMessage {
			c.mu.Lock()
			if c.cur != nil && c.cur.w != nil {
				if err := c.cur.w.WriteBinary(buf.Bytes()); err != nil {
					c.cur.w = nil // the client is gone; the task still ends normally
				}
			}
			c.mu.Unlock()
			continue
		}
		if err := session.Decode(buf.Bytes(), &f); err != nil {
			c.fail(fmt.Errorf("bad frame from instance: %w", err))
			return
		}
		seq, err := strconv.ParseUint(string(f.ID), 10, 64)
		if err != nil {
			continue // not about a task of ours (an event, a pong)
		}
		c.mu.Lock()
		if cl := c.cur; cl != nil && cl.seq == seq {
			switch f.Type {
			case session.FrameResult:
				if cl.w != nil {
					if err := cl.w.WriteResult(f.Data); err != nil {
						cl.w = nil
					}
				}
			case session.FrameDone:
				c.finishLocked(nil)
			case session.FrameError:
				c.finishLocked(parseInstanceError(f.Error))
			}
		}
		c.mu.Unlock()
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{}
		}
	}
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
		_ = c.ws.Close()
	})
	if errors.Is(err, io.ErrUnexpectedEOF) || websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
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
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.ws.Close()
	})
}

func (c *instConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// clean reports whether the instance could serve another session now: the
// connection is up and no abandoned task is still running.
func (c *instConn) clean() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && c.cur == nil
}
