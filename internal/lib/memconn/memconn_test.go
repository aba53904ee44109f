package memconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
)

// The conformance tests of net.Conn implementations: basic I/O, ping-pong,
// racing reads, writes, closes and deadlines, future and past deadlines,
// concurrent method calls.
func TestConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a, b := Pair(0)
		return a, b, func() { _ = a.Close(); _ = b.Close() }, nil
	})
	// A small buffer: writes wait for reads.
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a, b := Pair(7)
		return a, b, func() { _ = a.Close(); _ = b.Close() }, nil
	})
}

func TestCloseSemantics(t *testing.T) {
	a, b := Pair(0)
	_, err := a.Write([]byte("left behind"))
	require.NoError(t, err)
	require.NoError(t, a.Close())
	require.ErrorIs(t, a.Close(), net.ErrClosed)

	got, err := io.ReadAll(b)
	require.NoError(t, err, "what was written before the close, then EOF")
	require.Equal(t, "left behind", string(got))
	_, err = b.Write([]byte("x"))
	require.ErrorIs(t, err, io.ErrClosedPipe)
	_, err = a.Read(make([]byte, 1))
	require.ErrorIs(t, err, net.ErrClosed)
	require.ErrorIs(t, a.SetReadDeadline(time.Now()), net.ErrClosed)
}

// Both ends write more than the buffer holds at once, each before it
// reads: the writes wait for room, and nothing is lost or reordered.
func TestBoundedBuffers(t *testing.T) {
	a, b := Pair(1000)
	msg := bytes.Repeat([]byte("0123456789"), 10_000)
	errs := make(chan error, 2)
	for _, c := range []*Conn{a, b} {
		go func() {
			_, err := c.Write(msg)
			errs <- err
		}()
	}
	for _, c := range []*Conn{a, b} {
		got := make([]byte, len(msg))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err)
		require.Equal(t, msg, got)
	}
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	// A full buffer and a deadline: the write fails once it passes,
	// having written what fit.
	require.NoError(t, a.SetWriteDeadline(time.Now().Add(20*time.Millisecond)))
	n, err := a.Write(msg)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, 1000, n)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout())
}
