package testutil

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// RefusingAddr returns a loopback address that refuses connections, and a
// function that frees it (also called at the test's end), after which a
// test may listen there. The port is held by a socket bound to it that
// does not listen, so a connection to it is reset; bound without
// SO_REUSEADDR, it cannot be taken by another listener meanwhile, as a port
// found free and closed again can be, by any test running beside.
func RefusingAddr(t testing.TB) (addr string, free func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("refusing address: %v", err)
	}
	free = sync.OnceFunc(func() { _ = syscall.Close(fd) })
	t.Cleanup(free)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refusing address: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refusing address: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)), free
}
