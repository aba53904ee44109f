//go:build !linux

package proxy

import "net"

// newTCPMeter returns nil: outside Linux the copy loops count bytes
// themselves.
func newTCPMeter(_, _ net.Conn) activityMeter { return nil }
