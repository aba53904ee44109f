package manager

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// readPoller watches the sockets of client connections with one epoll
// instance. A quiet connection (no reader) is armed for input: when it
// becomes readable (input, the peer's FIN or RST), the poller calls wake
// with it, once, and it stays out of the poller until it is armed again.
// A connection whose reader is busy (running a task) is armed for the
// peer's end only, so that a client that goes mid-task is let go at once,
// not when its task ends.
//
// The sockets stay registered with the Go runtime's own poller too: reads
// go through net.Conn as before, this one only tells when to start one.
// Registrations are one-shot (EPOLLONESHOT), and are keyed by a number of
// the poller's, never by the descriptor, which the kernel may give to a
// new socket once the old one is closed.
type readPoller struct {
	epfd, wakefd int
	// wake is called from the poller's goroutine and must not block;
	// hup tells that the peer has gone (FIN, RST or an error).
	wake func(p *readPoller, c *clientConn, hup bool)

	// mu guards conns, next, closed and the clients' pollKey; arm holds
	// it over its epoll_ctl, so that close never pulls the descriptors
	// from under one.
	mu     sync.Mutex
	conns  map[uint64]*clientConn
	next   uint64
	closed bool
	done   chan struct{}
	// parked: run waits for events in Go's netpoller (parkedWait), not
	// in a blocking epoll_wait.
	parked atomic.Bool
}

// pollerAvailable tells whether this system has a readPoller.
const pollerAvailable = true

// wakeKey is the key of the eventfd that stops the poller.
const wakeKey = 0

func newReadPoller(wake func(*readPoller, *clientConn, bool)) (*readPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setKey(&ev, wakeKey)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, err
	}
	p := &readPoller{epfd: epfd, wakefd: wakefd, wake: wake, conns: map[uint64]*clientConn{},
		next: wakeKey + 1, done: make(chan struct{})}
	go p.run()
	return p, nil
}

func setKey(ev *unix.EpollEvent, k uint64) {
	ev.Fd, ev.Pad = int32(uint32(k)), int32(uint32(k>>32))
}

func keyOf(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// errNotPollable: the connection is not a socket this poller can watch
// (a TLS connection, a pipe in tests); it keeps a reading goroutine.
var (
	errPollerClosed = errors.New("read poller closed")
	errTaken        = errors.New("connection taken by a reader")
)

// arm watches c: a quiet one until it is readable, a busy one until the
// peer ends the connection. The first arm registers it. An error means c
// is not watched (its socket is closed, or it cannot be polled).
func (p *readPoller) arm(c *clientConn, quiet bool) error {
	raw, err := rawConn(c.conn)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPollerClosed
	}
	if quiet && c.reading.Load() != readQuiet {
		return errTaken // a reader started meanwhile (a close): it lets go of c
	}
	op := unix.EPOLL_CTL_MOD
	if c.pollKey == 0 {
		c.pollKey = p.next
		p.next++
		p.conns[c.pollKey] = c
		op = unix.EPOLL_CTL_ADD
	}
	key := c.pollKey
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT} // HUP and ERR come always
	if quiet {
		ev.Events |= unix.EPOLLIN
	}
	setKey(&ev, key)
	var ctlErr error
	// Control holds the descriptor open for the call: a concurrent close
	// cannot hand its number to another socket meanwhile.
	if err := raw.Control(func(fd uintptr) { ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &ev) }); err != nil {
		return err
	}
	return ctlErr
}

// unread tells whether input waits in c's socket: a peer that sent a
// close frame (or a task) before it went. false when it cannot tell.
func (p *readPoller) unread(c *clientConn) bool {
	raw, err := rawConn(c.conn)
	if err != nil {
		return false
	}
	n := 0
	_ = raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// forget drops c for good; its socket is closed or about to be, which
// removes it from the epoll set.
func (p *readPoller) forget(c *clientConn) {
	p.mu.Lock()
	if c.pollKey != 0 {
		delete(p.conns, c.pollKey)
	}
	p.mu.Unlock()
}

// watched returns the number of connections registered.
func (p *readPoller) watched() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *readPoller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	wait, done, parked := p.parkedWait(events)
	defer done()
	p.parked.Store(parked)
	for {
		n, err := wait()
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := range events[:n] {
			k := keyOf(&events[i])
			if k == wakeKey {
				return
			}
			p.mu.Lock()
			c := p.conns[k]
			p.mu.Unlock()
			if c != nil {
				p.wake(p, c, events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
		}
	}
}

// parkedWait returns the poller's wait for events. An epoll descriptor is
// itself pollable, so the poller waits for its events parked in Go's
// netpoller and takes them with a wait that does not block: a blocking
// epoll_wait would hold its P until the runtime's monitor takes it back
// (20 µs to 10 ms later), which with GOMAXPROCS 1 stalled every goroutine
// of the manager each time the poller went back to waiting. Where that
// cannot be set up, the wait blocks.
func (p *readPoller) parkedWait(events []unix.EpollEvent) (wait func() (int, error), done func(), parked bool) {
	blocking := func() (int, error) { return unix.EpollWait(p.epfd, events, -1) }
	nothing := func() {}
	// A duplicate: closing the file when the run ends leaves p.epfd to
	// close.
	dup, err := unix.FcntlInt(uintptr(p.epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return blocking, nothing, false
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return blocking, nothing, false
	}
	f := os.NewFile(uintptr(dup), "readpoller")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return blocking, nothing, false
	}
	polled := true
	return func() (n int, err error) {
		if !polled {
			return blocking()
		}
		rerr := rc.Read(func(uintptr) bool {
			for {
				n, err = unix.EpollWait(p.epfd, events, 0)
				if err != unix.EINTR {
					return n > 0 || err != nil
				}
			}
		})
		if rerr != nil {
			polled = false // not pollable after all: block from here on
			return blocking()
		}
		return n, err
	}, func() { _ = f.Close() }, true
}

// close stops the poller and waits for its goroutine. Connections still
// registered are the caller's to close.
func (p *readPoller) close() {
	p.mu.Lock()
	was := p.closed
	p.closed = true
	p.mu.Unlock()
	if was {
		return
	}
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(p.wakefd, one[:])
	<-p.done
	// arm sees closed from here on: nobody uses the descriptors.
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wakefd)
}
