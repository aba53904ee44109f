package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a socket whose Read, Write and WriteVec are raw system calls;
// its other methods are the wrapped connection's. A call allocates
// nothing: the callbacks handed to the RawConn are made once, and the
// state of the call in progress lives here, one set for reads and one for
// writes, each under its own lock.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rmu    sync.Mutex
	rbuf   []byte
	rn     uintptr
	rerrno syscall.Errno
	readFn func(fd uintptr) bool
	// While Poll runs its callback, polling is set and pfd is the socket:
	// Read makes one raw read then and never waits.
	polling bool
	pfd     uintptr
	pollFn  func() bool
	pollCb  func(fd uintptr) bool

	wmu     sync.Mutex
	wvec    [][]byte
	one     [1][]byte
	iov     []syscall.Iovec
	wn      int64
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// Wrap returns conn as a *Conn when it is a socket (a syscall.Conn), and
// conn itself otherwise (a TLS connection, a pipe).
func Wrap(conn net.Conn) net.Conn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return conn
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return conn
	}
	c := &Conn{Conn: conn, rc: rc}
	c.readFn, c.writeFn, c.pollCb = c.read, c.writev, c.poll
	return c
}

// ErrWouldBlock is what Read returns inside Poll's callback when the
// socket has nothing to read.
var ErrWouldBlock = errors.New("rawio: no input at hand")

// Poll calls f when the socket may have input, and again each time more
// may have come, until f returns true; it returns nil then, or the error
// that ended the wait (the connection closed, a read deadline). Inside f,
// Read makes one raw read and never waits: ErrWouldBlock tells that the
// socket had nothing. f returns false to wait for more.
//
// A Read outside Poll forgets the poller's news of input that came before
// it, so a reader must read again, and meet nothing, before it may wait.
// One Poll keeps that news from one call of f to the next: f may wait as
// soon as a Read has drained the socket (it read less than it asked for),
// and saves the read that would have found nothing. A reader of a
// request-response stream then makes one read per answer.
//
// Only the connection's one reader may call Poll, and it may call Read
// from f alone while Poll runs.
func (c *Conn) Poll(f func() bool) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.pollFn = f
	err := c.rc.Read(c.pollCb)
	c.pollFn = nil
	return err
}

// poll is the RawConn callback of Poll.
func (c *Conn) poll(fd uintptr) bool {
	c.polling, c.pfd = true, fd
	defer func() { c.polling = false }()
	return c.pollFn()
}

// SyscallConn is the wrapped socket's, so that Conn is a syscall.Conn too.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads into p, waiting for input as net.Conn does.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.polling {
		return c.readNow(p)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	if err != nil {
		return 0, err
	}
	return c.readResult()
}

// readResult is what the last read call made of the socket.
func (c *Conn) readResult() (int, error) {
	switch {
	case c.rerrno != 0:
		return 0, c.opError("read", c.rerrno)
	case c.rn == 0:
		return 0, io.EOF
	}
	return int(c.rn), nil
}

// readNow is Read inside Poll's callback: one read, never a wait.
func (c *Conn) readNow(p []byte) (int, error) {
	c.rbuf = p
	got := c.read(c.pfd)
	c.rbuf = nil
	if !got {
		return 0, ErrWouldBlock
	}
	return c.readResult()
}

// read is the RawConn callback of Read: false asks it to wait.
func (c *Conn) read(fd uintptr) bool {
	p := c.rbuf
	for {
		c.rn, _, c.rerrno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if c.rerrno != syscall.EINTR {
			return c.rerrno != syscall.EAGAIN
		}
	}
}

// Write writes all of p, waiting for room as net.Conn does.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.one[0] = p
	n, err := c.writeVecLocked(c.one[:])
	c.one[0] = nil
	return int(n), err
}

// WriteVec writes the buffers of v one after the other, with writev; it
// consumes v's slices as they go out.
func (c *Conn) WriteVec(v [][]byte) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeVecLocked(v)
}

func (c *Conn) writeVecLocked(v [][]byte) (int64, error) {
	c.wvec, c.wn, c.werrno = v, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wvec = nil
	clear(c.iov[:cap(c.iov)]) // do not pin the written buffers
	if err == nil && c.werrno != 0 {
		err = c.opError("write", c.werrno)
	}
	return c.wn, err
}

// writev is the RawConn callback of WriteVec: false asks it to wait.
func (c *Conn) writev(fd uintptr) bool {
	for {
		c.iov = c.iov[:0]
		for _, b := range c.wvec {
			if len(b) > 0 && len(c.iov) < 1024 {
				iov := syscall.Iovec{Base: &b[0]}
				iov.SetLen(len(b))
				c.iov = append(c.iov, iov)
			}
		}
		if len(c.iov) == 0 {
			return true
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iov[0])), uintptr(len(c.iov)))
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = errno
			return true
		}
		c.wn += int64(n)
		// Drop what went out; a short write goes on with the rest.
		for n > 0 {
			k := min(n, uintptr(len(c.wvec[0])))
			c.wvec[0] = c.wvec[0][k:]
			n -= k
			if len(c.wvec[0]) == 0 {
				c.wvec = c.wvec[1:]
			}
		}
	}
}

func (c *Conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(),
		Err: os.NewSyscallError(op, errno)}
}
