package manager

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// resumeProbe bounds how long a connection that would take a session from
// another manager has to show it is alive.
const resumeProbe = 2 * time.Second

// probeAlive pings the client of a new connection and reports whether it
// answers (any byte counts: the pong, or a frame sent ahead) before
// resumeProbe. Nothing is consumed: the read loop reads the answer later.
//
// It keeps a manager that was frozen (SIGSTOP, a paused container) from
// taking sessions back on waking: the resume requests its clients gave up
// on wait in its sockets, their peers long gone to another manager, and
// net/http's upgrade succeeds on such a connection all the same. A
// connection the peer has closed reads EOF here; one nobody answers on
// times out.
func (c *clientConn) probeAlive(wait time.Duration) bool {
	conn := c.conn
	for {
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = u.NetConn() // TLS: peek at the records under it
	}
	rc, err := rawConn(conn)
	if err != nil {
		return true // nothing to peek at (an in-memory pipe in tests)
	}
	if err := c.w.Ping([]byte("resume")); err != nil {
		return false
	}
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return false
	}
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EINTR) {
			return false // nothing yet: wait until readable or the deadline
		}
		alive = rerr == nil && n > 0 // 0: the peer closed; an error: it is gone
		return true
	})
	return err == nil && alive
}

// errNotPollable: a connection without a socket under it (a pipe).
var errNotPollable = errors.New("connection cannot be polled")

// rawConn is the socket under conn, for the calls net.Conn has no method
// for: peeking, epoll, the bytes waiting unread.
func rawConn(conn net.Conn) (syscall.RawConn, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errNotPollable
	}
	return sc.SyscallConn()
}
