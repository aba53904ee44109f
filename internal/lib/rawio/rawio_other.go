//go:build !linux

package rawio

import "net"

// Wrap returns conn: only Linux has the raw reads and writes.
func Wrap(conn net.Conn) net.Conn { return conn }
