package proxy

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpMeter reads the byte counters the kernel keeps for each socket
// (TCP_INFO: bytes received and bytes acknowledged by the peer). The watcher
// samples them a few times per idle period, so the copy loops need no hook of
// their own and keep splicing.
type tcpMeter struct {
	socks [2]syscall.RawConn
	last  uint64
}

// newTCPMeter returns a meter for the sockets under a and b, or nil if either
// is not TCP or the kernel lacks the counters (before Linux 4.1).
func newTCPMeter(a, b net.Conn) activityMeter {
	m := &tcpMeter{}
	for i, c := range [2]net.Conn{a, b} {
		tc, ok := underlyingTCP(c)
		if !ok {
			return nil
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			return nil
		}
		// Both sockets have received a handshake by now; a kernel without
		// the counters reports zero.
		if recv, _, ok := tcpCounters(rc); !ok || recv == 0 {
			return nil
		}
		m.socks[i] = rc
	}
	m.last = m.sample()
	return m
}

func (m *tcpMeter) sample() uint64 {
	var sum uint64
	for _, rc := range m.socks {
		recv, acked, ok := tcpCounters(rc)
		if !ok {
			// A closed socket: its copy loop reports that on its own.
			return m.last
		}
		sum += recv + acked
	}
	m.last = sum
	return sum
}

func tcpCounters(rc syscall.RawConn) (recv, acked uint64, ok bool) {
	var info *unix.TCPInfo
	var gerr error
	err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || gerr != nil {
		return 0, 0, false
	}
	return info.Bytes_received, info.Bytes_acked, true
}

// underlyingTCP finds the TCP connection under c, looking through TLS.
func underlyingTCP(c net.Conn) (*net.TCPConn, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	return tc, ok
}
