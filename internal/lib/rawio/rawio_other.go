//go:build !linux

package rawio

import "net"

// Wrap returns conn: the raw reads and writes are Linux's only.
func Wrap(conn net.Conn) net.Conn { return conn }
