package worker

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn reads and writes a connection with raw syscalls.
//
// A worker idles between tasks. A syscall made through package syscall
// tells the Go scheduler that it may block, and the first one after the
// process went idle wakes the runtime's monitor thread (sysmon), which
// goes back to sleep soon after: context switches on every task, which in
// drover's throughput test (64 worker processes on two cores) cost about a
// third of a worker's CPU. The socket is non-blocking and the netpoller
// waits for it, so these reads and writes cannot block: they can be raw
// syscalls, which the scheduler does not see.
//
// Reads and writes may run concurrently, each on its own state; the
// callbacks handed to the RawConn are made once, so a call allocates
// nothing.
type rawConn struct {
	net.Conn
	rc syscall.RawConn

	rbuf   []byte
	rn     uintptr
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wvec    [][]byte
	one     [1][]byte
	iov     []syscall.Iovec
	wn      int64
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

func rawSocket(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &rawConn{Conn: nc, rc: rc}
	c.readFn, c.writeFn = c.read, c.writev
	return c
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf = p
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case c.rerrno != 0:
		return 0, os.NewSyscallError("read", c.rerrno)
	case c.rn == 0:
		return 0, io.EOF
	}
	return int(c.rn), nil
}

// read is the RawConn callback of Read: false asks it to wait.
func (c *rawConn) read(fd uintptr) bool {
	p := c.rbuf
	for {
		c.rn, _, c.rerrno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if c.rerrno != syscall.EINTR {
			return c.rerrno != syscall.EAGAIN
		}
	}
}

func (c *rawConn) Write(p []byte) (int, error) {
	c.one[0] = p
	n, err := c.WriteVec(c.one[:])
	c.one[0] = nil
	return int(n), err
}

// WriteVec writes the buffers of v one after the other, with writev.
func (c *rawConn) WriteVec(v [][]byte) (int64, error) {
	c.wvec, c.wn, c.werrno = v, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wvec = nil
	clear(c.iov[:cap(c.iov)]) // do not pin the written buffers
	if err == nil && c.werrno != 0 {
		err = os.NewSyscallError("writev", c.werrno)
	}
	return c.wn, err
}

// writev is the RawConn callback of WriteVec: false asks it to wait.
func (c *rawConn) writev(fd uintptr) bool {
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
