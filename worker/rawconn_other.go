//go:build !linux

package worker

import "net"

func rawSocket(nc net.Conn) net.Conn { return nc }
