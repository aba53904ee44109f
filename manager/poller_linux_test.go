package manager

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadPollerWaitsParked: the read poller waits for its events in Go's
// netpoller, not in a blocking epoll_wait that would hold the only P, and
// still wakes a quiet connection when input comes.
func TestReadPollerWaitsParked(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	woke := make(chan *clientConn, 1)
	p, err := newReadPoller(func(_ *readPoller, c *clientConn, _ bool) { woke <- c })
	require.NoError(t, err)
	defer p.close()
	require.Eventually(t, p.parked.Load, 5*time.Second, time.Millisecond, "the poller waits in Go's netpoller")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()

	c := &clientConn{conn: server}
	c.reading.Store(readQuiet)
	require.NoError(t, p.arm(c, true))
	_, err = client.Write([]byte("x"))
	require.NoError(t, err)
	select {
	case got := <-woke:
		require.Same(t, c, got)
	case <-time.After(5 * time.Second):
		t.Fatal("input on a quiet connection did not wake it")
	}
}
