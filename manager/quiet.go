package manager

import (
	"bufio"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Quiet client connections. A client connection's reader goroutine waits
// readLinger for the next frame; when none comes, it gives back its read
// buffer, arms the connection in the manager's readPoller and ends. The
// poller starts a reader again when the socket becomes readable: input, or
// the peer's FIN or RST, which the new reader sees at once and handles as
// any reader would (a close, a detach). Closing a quiet connection from
// this side (drop) starts a reader too, which finds it closed. So a silent
// connection costs its socket, its clientConn and its session, and no
// goroutine stack or buffer, while an active one keeps its reader and the
// task path is the same as without the poller. While a reader runs, the
// poller watches for the peer's end only (watchEnd): a client that goes
// mid-task is closed and detached at once.

const (
	readOwned int32 = iota // a goroutine reads, or is about to
	readQuiet              // armed in the poller, no goroutine
)

// readLinger is how long a reader waits for the next frame before its
// connection goes quiet. Clients that send a task at least this often
// keep their reader; the wake-up of a quiet one costs an epoll event and a
// new goroutine, a few microseconds.
const readLinger = time.Second

var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientReadBuffer) }}

func getReadBuffer(r io.Reader) *bufio.Reader {
	b := readBuffers.Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

func putReadBuffer(b *bufio.Reader) {
	b.Reset(nil)
	readBuffers.Put(b)
}

// readPoller returns the manager's poller, started by the first client
// connection that may use it; nil when there is none (not Linux, or it
// could not start: then every connection keeps its reader).
func (m *Manager) readPoller() *readPoller {
	m.pollOnce.Do(func() {
		if !pollerAvailable {
			return
		}
		p, err := newReadPoller(func(p *readPoller, c *clientConn, hup bool) { c.polled(p, hup) })
		if err != nil {
			m.log.Warn("idle client connections keep a goroutine each: no read poller", "err", err)
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closing {
			p.close()
			return
		}
		m.poller = p
	})
	return m.poller
}

// pollable tells whether conn is a socket the poller can watch.
func pollable(conn any) bool {
	_, ok := conn.(syscall.Conn)
	return ok
}

// waitInput waits until input is at hand. A connection that may go quiet
// waits between half of readLinger and readLinger at most: then it returns
// os.ErrDeadlineExceeded, and nothing of a frame has been read.
//
// The read deadline of the linger stays set while the next frame is in the
// buffer whole (Next reads nothing more from the socket), and is moved only
// once less than half of readLinger is left of it: a client that sends
// small tasks often costs no timer update per task.
func (c *clientConn) waitInput() error {
	if c.poll == nil {
		if c.rd.R.Buffered() > 0 {
			return nil
		}
		_, err := c.rd.R.Peek(1)
		return err
	}
	if c.rd.R.Buffered() == 0 {
		if now := time.Now(); c.lingerUntil.Sub(now) < readLinger/2 {
			c.lingerUntil = now.Add(readLinger)
			_ = c.conn.SetReadDeadline(c.lingerUntil)
		}
		if _, err := c.rd.R.Peek(1); err != nil {
			return err
		}
	}
	if !c.rd.Whole() && !c.lingerUntil.IsZero() {
		// Next reads from the socket: the linger must not cut a frame.
		c.lingerUntil = time.Time{}
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	return nil
}

// lingered tells whether err is waitInput's end of the linger.
func (c *clientConn) lingered(err error) bool {
	return c.poll != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

// goQuiet puts the connection in the poller; true means the reader ends
// here. When it cannot be armed (closed meanwhile, or the manager shuts
// down), the reader goes on, without linger, to meet the end of the
// connection itself.
func (c *clientConn) goQuiet() bool {
	putReadBuffer(c.rd.R)
	c.rd.R = nil
	if c.startQuiet() {
		return true
	}
	c.rd.R = getReadBuffer(c.conn)
	return false
}

// startQuiet puts the connection in the poller, and a new one before any
// reader has run: a client that says nothing, such as a session waiting
// in the queue, never costs a goroutine, and its first frame starts a
// reader. false means it could not be armed (and is no longer the
// poller's) and needs a reader now.
func (c *clientConn) startQuiet() bool {
	// From here another reader may start at any moment: the caller
	// touches nothing of c's but its state.
	c.reading.Store(readQuiet)
	err := c.poll.arm(c, true)
	if err == nil || !c.reading.CompareAndSwap(readQuiet, readOwned) {
		return true
	}
	c.poll.forget(c)
	c.poll = nil
	return false
}

// wake starts a reader for a quiet connection and reports true; it does
// nothing while one runs. The poller calls it when the socket becomes
// readable, drop when this side closes it.
func (c *clientConn) wake() bool {
	if c.reading.CompareAndSwap(readQuiet, readOwned) {
		go c.s.m.readLoop(c)
		return true
	}
	return false
}

// polled handles the poller p's event: a quiet connection gets a reader.
// A busy one (its reader runs a task) whose peer has gone (hup) is closed
// and its session detached at once, as its reader would do once the task
// ends, and the task goes on; unless input waits in the socket, such as a
// close frame, which the reader must see to end the session as the client
// asked.
func (c *clientConn) polled(p *readPoller, hup bool) {
	if c.wake() || !hup {
		return
	}
	go func() {
		if p.unread(c) {
			return
		}
		_ = c.conn.Close() // the reader meets the closed connection and ends
		c.s.detach(c)
		c.s.m.untrackConn(c)
	}()
}

// watchEnd arms a new reader's connection for the peer's end, so that a
// client that goes while its reader is busy is noticed at once.
func (c *clientConn) watchEnd() {
	if c.poll != nil {
		_ = c.poll.arm(c, false) // unwatched, the end is seen after the task
	}
}

// readerEnds lets go of the connection once its last reader ends.
func (m *Manager) readerEnds(c *clientConn) {
	if c.rd.R != nil {
		putReadBuffer(c.rd.R)
		c.rd.R = nil
	}
	if c.poll != nil {
		c.poll.forget(c)
	}
	m.untrackConn(c)
}
