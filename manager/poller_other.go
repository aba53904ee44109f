//go:build !linux

package manager

import "errors"

// readPoller is Linux's (poller_linux.go); elsewhere every client
// connection keeps its reading goroutine.
type readPoller struct{}

const pollerAvailable = false

func newReadPoller(func(*readPoller, *clientConn, bool)) (*readPoller, error) {
	return nil, errors.New("no read poller on this system")
}

func (*readPoller) arm(*clientConn, bool) error { return errors.New("no read poller") }
func (*readPoller) forget(*clientConn)          {}
func (*readPoller) watched() int                { return 0 }
func (*readPoller) close()                      {}
func (*readPoller) unread(*clientConn) bool     { return false }
