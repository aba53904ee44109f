package wsframe

import (
	"errors"
	"net"
	"sync"
	"time"
)

const (
	// FlushSize is how many bytes of frames a held Writer gathers before it
	// writes them anyway.
	FlushSize = 64 << 10
	// directSize is the payload size from which Binary writes the caller's
	// slice as it is (writev) instead of copying it into the buffer.
	directSize = 8 << 10
	// keepSize is the largest buffer returned to the pool.
	keepSize = 256 << 10
)

// VecWriter is a connection that writes several buffers in one call
// itself; other connections get net.Buffers, which use writev where the
// connection supports it.
type VecWriter interface {
	WriteVec(v [][]byte) (int64, error)
}

// ErrCloseSent is returned for a write after the close frame.
var ErrCloseSent = errors.New("wsframe: close frame already sent")

// pending buffers are lent to a Writer only while it has frames to write,
// so that an idle connection holds none.
var pool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}

// Writer writes server frames (unmasked) to a connection, gathering them
// into as few writes as it can. It is safe for concurrent use; every write
// to the connection must go through it, so that frames never interleave.
//
// A frame written with now set goes out at once, with whatever is pending
// before it. Otherwise it goes out at once unless the Writer is held: then
// it waits for Release, a frame with now, or FlushSize bytes.
type Writer struct {
	conn    net.Conn
	timeout time.Duration
	// until is the write deadline last set on conn; zero when none is.
	until time.Time

	mu     sync.Mutex
	buf    *[]byte // pending frames; nil when there are none
	held   bool
	closed bool     // the close frame went out
	err    error    // the first write error: the stream is broken after it
	iov    [][]byte // the parts of a writev
	bufs   net.Buffers
}

// Reset makes w write to conn, bounding each write by timeout (0: none).
// The deadline is moved forward only once less than three quarters of
// timeout is left of it, which spares most writes a timer update: a write
// has between three quarters of timeout and timeout.
func (w *Writer) Reset(conn net.Conn, timeout time.Duration) {
	w.conn, w.timeout, w.until = conn, timeout, time.Time{}
}

// Text writes a text frame whose payload build appends to its argument.
func (w *Writer) Text(now bool, build func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	b, start := Begin(w.pending())
	*w.buf = End(build(b), start, OpText, nil)
	return w.after(now)
}

// Binary writes a binary frame whose payload is parts, one after the
// other. A large payload is written from the parts themselves, together
// with what is pending, in one writev.
func (w *Writer) Binary(now bool, parts ...[]byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	*w.buf = AppendHeader(w.pending(), OpBinary, n, nil)
	if n < directSize {
		for _, p := range parts {
			*w.buf = append(*w.buf, p...)
		}
		return w.after(now)
	}
	w.iov = append(append(w.iov[:0], *w.buf), parts...)
	w.deadline(w.timeout)
	var err error
	if vw, ok := w.conn.(VecWriter); ok {
		_, err = vw.WriteVec(w.iov)
	} else {
		w.bufs = w.iov // WriteTo consumes bufs; iov keeps the backing array
		_, err = w.bufs.WriteTo(w.conn)
	}
	clear(w.iov) // do not pin the caller's data
	w.recycle()
	return w.wrote(err)
}

// Pong answers a ping.
func (w *Writer) Pong(payload []byte) error { return w.control(OpPong, payload) }

// Ping writes a ping; the peer answers with a pong carrying payload.
func (w *Writer) Ping(payload []byte) error { return w.control(OpPing, payload) }

func (w *Writer) control(op byte, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	*w.buf = AppendFrame(w.pending(), op, payload, nil)
	return w.flush()
}

// Close writes a close frame after whatever is pending, within timeout.
// Nothing can be written after it; a second Close returns ErrCloseSent.
// Close does not close the connection.
func (w *Writer) Close(code int, reason string, timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	b, start := Begin(w.pending())
	*w.buf = End(ClosePayload(b, code, reason), start, OpClose, nil)
	w.closed = true
	if w.timeout > 0 {
		timeout = min(timeout, w.timeout)
	}
	w.until = time.Now().Add(timeout)
	_ = w.conn.SetWriteDeadline(w.until)
	_, err := w.conn.Write(*w.buf)
	w.recycle()
	return w.wrote(err)
}

// Hold makes frames written without now wait until Release.
func (w *Writer) Hold() {
	w.mu.Lock()
	w.held = true
	w.mu.Unlock()
}

// Release ends Hold; with flush it writes what is pending, otherwise that
// waits for the next frame written with now (the caller's promise).
func (w *Writer) Release(flush bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held = false
	if flush && w.err == nil {
		return w.flush()
	}
	return nil
}

// Flush writes what is pending.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return w.flush()
}

func (w *Writer) usable() error {
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return ErrCloseSent
	}
	return nil
}

// pending returns the pending buffer, borrowing one when there is none.
func (w *Writer) pending() []byte {
	if w.buf == nil {
		w.buf = pool.Get().(*[]byte)
	}
	return *w.buf
}

func (w *Writer) after(now bool) error {
	if now || !w.held || len(*w.buf) >= FlushSize {
		return w.flush()
	}
	return nil
}

func (w *Writer) flush() error {
	if w.buf == nil {
		return nil
	}
	w.deadline(w.timeout)
	_, err := w.conn.Write(*w.buf)
	w.recycle()
	return w.wrote(err)
}

// deadline makes sure the next write has at least three quarters of d.
func (w *Writer) deadline(d time.Duration) {
	if d <= 0 {
		return
	}
	now := time.Now()
	if w.until.Sub(now) < d-d/4 {
		w.until = now.Add(d)
		_ = w.conn.SetWriteDeadline(w.until)
	}
}

// recycle returns the pending buffer to the pool.
func (w *Writer) recycle() {
	b := w.buf
	w.buf = nil
	if cap(*b) <= keepSize {
		*b = (*b)[:0]
		pool.Put(b)
	}
}

// wrote records a write error: a frame may have gone out in part, so the
// stream cannot be continued.
func (w *Writer) wrote(err error) error {
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}
