package proxy

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// The kernel meter must work here, or the "kernel counters" idle tests would
// quietly test the fallback.
func TestTCPMeter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer a.Close()
	b, err := ln.Accept()
	require.NoError(t, err)
	defer b.Close()

	require.Nil(t, newTCPMeter(a, b), "sockets that never received a byte tell nothing")
	exchange := func(p []byte) {
		_, err := a.Write(p)
		require.NoError(t, err)
		_, err = b.Read(make([]byte, len(p)))
		require.NoError(t, err)
		_, err = b.Write(p)
		require.NoError(t, err)
		_, err = a.Read(make([]byte, len(p)))
		require.NoError(t, err)
	}
	exchange([]byte("GET"))
	m := newTCPMeter(a, b)
	require.NotNil(t, m, "TCP_INFO byte counters unavailable")
	s0 := m.sample()
	require.Equal(t, s0, m.sample(), "no traffic, no change")
	exchange([]byte("x"))
	require.NotEqual(t, s0, m.sample())

	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	require.Nil(t, newTCPMeter(p1, p2), "not TCP")
}
