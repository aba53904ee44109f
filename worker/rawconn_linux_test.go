package worker

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRawConnMovesLargeVectors writes more than a socket buffer holds in
// one WriteVec, which takes short writes and waits for the peer, and reads
// it back through the raw side.
func TestRawConnMovesLargeVectors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer dialed.Close()
	peer := <-accepted
	require.NotNil(t, peer)
	defer peer.Close()

	raw := rawSocket(dialed)
	require.IsType(t, &rawConn{}, raw)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 31)
	}
	parts := [][]byte{want[:1], {}, want[1 : 3<<20], want[3<<20:]}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	n, err := raw.(*rawConn).WriteVec(parts)
	require.NoError(t, err)
	require.Equal(t, int64(len(want)), n)
	m, err := raw.Write([]byte("end"))
	require.NoError(t, err)
	require.Equal(t, 3, m)
	require.NoError(t, dialed.(*net.TCPConn).CloseWrite())
	require.True(t, bytes.Equal(append(want, "end"...), <-got))

	// And the other way: reads, then EOF.
	_, err = peer.Write([]byte("reply"))
	require.NoError(t, err)
	require.NoError(t, peer.Close())
	b, err := io.ReadAll(raw)
	require.NoError(t, err)
	require.Equal(t, "reply", string(b))
}
