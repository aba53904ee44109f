// Package memconn connects two parts of one process with a buffered,
// full-duplex net.Conn pair that never enters the kernel: a write copies
// into the other end's buffer and wakes its reader, as a socket pair would
// without the system calls and the netpoller. Unlike net.Pipe, a write
// returns once its bytes are buffered (up to a bound, like a socket's send
// buffer), so two ends that each write from their reader, answering pings,
// cannot wait on each other.
//
// Reads and writes honour deadlines (os.ErrDeadlineExceeded). Close ends
// both directions: the other end reads what was buffered, then io.EOF, and
// its writes fail with io.ErrClosedPipe; this end's own calls fail with
// net.ErrClosed.
package memconn

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultBuffer bounds what one direction holds unread, as a Unix
// socket's buffers would.
const DefaultBuffer = 256 << 10

// keepBuffer is the largest buffer a drained direction keeps.
const keepBuffer = 64 << 10

// Pair returns the two ends of a new connection; each direction buffers up
// to limit bytes (DefaultBuffer when limit ≤ 0).
func Pair(limit int) (*Conn, *Conn) {
	if limit <= 0 {
		limit = DefaultBuffer
	}
	ab, ba := newPipe(limit), newPipe(limit)
	a := &Conn{in: ba, out: ab, done: make(chan struct{})}
	b := &Conn{in: ab, out: ba, done: make(chan struct{})}
	a.rdl.init()
	a.wdl.init()
	b.rdl.init()
	b.wdl.init()
	return a, b
}

// pipe is one direction: bytes written by one end, not yet read by the
// other.
type pipe struct {
	mu    sync.Mutex
	buf   []byte
	off   int  // buf[off:] is unread
	eof   bool // the writing end closed
	gone  bool // the reading end closed
	limit int
	// readable and writable are signalled (never blocking) when bytes
	// or room arrive, or an end closes. Each end serialises its reads
	// and its writes, so one waiter at most waits on each.
	readable, writable chan struct{}
}

func newPipe(limit int) *pipe {
	return &pipe{limit: limit, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Conn is one end of a Pair.
type Conn struct {
	in, out  *pipe
	rmu, wmu sync.Mutex // one read and one write at a time
	rdl, wdl deadline
	once     sync.Once
	done     chan struct{} // closed by Close
}

var _ net.Conn = (*Conn)(nil)

// Read reads what the other end wrote, waiting for it.
func (c *Conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	p := c.in
	for {
		if c.closed() {
			return 0, net.ErrClosed
		}
		if passed(c.rdl.channel()) {
			return 0, os.ErrDeadlineExceeded
		}
		p.mu.Lock()
		if p.off < len(p.buf) {
			if len(b) == 0 {
				p.mu.Unlock()
				return 0, nil
			}
			n := copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				p.buf, p.off = p.buf[:0], 0
				if cap(p.buf) > keepBuffer {
					p.buf = nil // a burst's buffer is not kept for a quiet connection
				}
			}
			p.mu.Unlock()
			signal(p.writable)
			return n, nil
		}
		eof := p.eof
		p.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-p.readable:
		case <-c.rdl.channel():
		case <-c.done:
		}
	}
}

// Write buffers b for the other end, waiting for room when its buffer is
// full.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	p := c.out
	n := 0
	for {
		if c.closed() {
			return n, net.ErrClosed
		}
		if passed(c.wdl.channel()) {
			return n, os.ErrDeadlineExceeded
		}
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		if room := p.limit - (len(p.buf) - p.off); room > 0 {
			k := min(room, len(b)-n)
			if p.off > 0 && len(p.buf)+k > cap(p.buf) {
				// Move the unread bytes to the front before growing.
				p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
				p.off = 0
			}
			p.buf = append(p.buf, b[n:n+k]...)
			n += k
			p.mu.Unlock()
			signal(p.readable)
			if n == len(b) {
				return n, nil
			}
			continue
		}
		p.mu.Unlock()
		select {
		case <-p.writable:
		case <-c.wdl.channel():
		case <-c.done:
		}
	}
}

// Close closes the end: the other end reads what is buffered, then EOF.
func (c *Conn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		close(c.done)
		c.out.mu.Lock()
		c.out.eof = true
		c.out.mu.Unlock()
		signal(c.out.readable)
		c.in.mu.Lock()
		c.in.gone = true
		c.in.buf, c.in.off = nil, 0
		c.in.mu.Unlock()
		signal(c.in.writable)
		c.rdl.set(time.Time{})
		c.wdl.set(time.Time{})
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

func (c *Conn) closed() bool { return passed(c.done) }

// Addr is the address of both ends: there is no other.
type Addr struct{}

// Network and String name the package.
func (Addr) Network() string { return "memconn" }
func (Addr) String() string  { return "memconn" }

// LocalAddr and RemoteAddr are Addr.
func (c *Conn) LocalAddr() net.Addr  { return Addr{} }
func (c *Conn) RemoteAddr() net.Addr { return Addr{} }

// SetDeadline, SetReadDeadline and SetWriteDeadline are net.Conn's; a
// call waiting when its deadline passes returns os.ErrDeadlineExceeded.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.rdl.set(t)
	return nil
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.wdl.set(t)
	return nil
}

// deadline is a channel closed once the time set has passed. A call
// waiting on it keeps waiting on the same channel when the deadline
// moves, unless it had passed already: then there is a new one.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

func (d *deadline) init() { d.passed = make(chan struct{}) }

func (d *deadline) channel() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // its function is closing it
	}
	d.timer = nil
	if passed(d.passed) {
		d.passed = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.passed)
		return
	}
	ch := d.passed
	d.timer = time.AfterFunc(wait, func() { close(ch) })
}

func passed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
