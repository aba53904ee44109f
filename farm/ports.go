package farm

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// ephemeralTries bounds how often the kernel may hand us a port that a live
// instance already holds (it reuses ports that are free in its eyes: the
// instance may not have bound its port yet).
const ephemeralTries = 16

// allocPort reserves a port for a new instance: one no live instance of this
// farm holds and nothing on the host listens on right now. The instance may
// still lose it to another process before it binds; StartInstance retries.
func (f *Farm) allocPort() (int, error) {
	if f.portMin == 0 {
		for range ephemeralTries {
			port, err := ephemeralPort(f.host)
			if err != nil {
				return 0, err
			}
			if f.reservePort(port) {
				return port, nil
			}
		}
		return 0, errors.New("no free ephemeral port")
	}
	// Round-robin through the range, so a port just given back rests
	// (TIME_WAIT, slow release) before it is handed out again.
	lo := f.portMin
	if f.streamPorts {
		lo += f.slots // the slots' stream ports
	}
	n := f.portMax - lo + 1
	for range n {
		f.mu.Lock()
		port := lo + f.portNext
		f.portNext = (f.portNext + 1) % n
		_, taken := f.ports[port]
		if !taken {
			f.ports[port] = struct{}{}
		}
		f.mu.Unlock()
		if taken {
			continue
		}
		if portFree(f.host, port) {
			return port, nil
		}
		f.releasePort(port)
	}
	return 0, fmt.Errorf("no free port in %d-%d", lo, f.portMax)
}

func (f *Farm) reservePort(port int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.ports[port]; taken {
		return false
	}
	f.ports[port] = struct{}{}
	return true
}

func (f *Farm) releasePort(port int) {
	f.mu.Lock()
	delete(f.ports, port)
	f.mu.Unlock()
}

// ephemeralPort asks the kernel for a free port on host.
func ephemeralPort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	return port, nil
}

// portFree reports whether a listener could bind host:port now.
func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
