package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped connection and the other end of it.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	t.Cleanup(func() { _ = w.Close(); _ = peer.Close() })
	return w, peer
}

func TestWrapKeepsOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a pipe was wrapped")
	}
}

func TestReadWrite(t *testing.T) {
	c, peer := pair(t)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", c)
	}
	if _, ok := c.(syscall.Conn); !ok {
		t.Fatal("the wrapped connection is no syscall.Conn")
	}
	go func() { _, _ = peer.Write([]byte("hello")) }()
	buf := make([]byte, 16)
	n, err := c.Read(buf) // waits for the input in the poller
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := c.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	n, err = io.ReadFull(peer, buf[:4])
	if err != nil || string(buf[:n]) != "back" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
}

// A write larger than the socket buffers waits for room until the peer
// reads, and writes every byte in order.
func TestLargeWrite(t *testing.T) {
	c, peer := pair(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(data))))
		got <- b
	}()
	n, err := c.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("wrote %d, %v", n, err)
	}
	if !bytes.Equal(<-got, data) {
		t.Fatal("the peer read other bytes")
	}
}

// One WriteVec of more than a socket buffer holds takes short writes and
// waits for the peer; empty parts are skipped; Write follows in order.
func TestLargeWriteVec(t *testing.T) {
	c, peer := pair(t)
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
	n, err := c.(*Conn).WriteVec(parts)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("wrote %d, %v", n, err)
	}
	if m, err := c.Write([]byte("end")); err != nil || m != 3 {
		t.Fatalf("wrote %d, %v", m, err)
	}
	if err := c.(*Conn).Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(want, "end"...), <-got) {
		t.Fatal("the peer read other bytes")
	}
}

func TestWriteVec(t *testing.T) {
	c, peer := pair(t)
	vw, ok := c.(interface {
		WriteVec([][]byte) (int64, error)
	})
	if !ok {
		t.Fatal("no WriteVec")
	}
	n, err := vw.WriteVec([][]byte{[]byte("ab"), []byte("cd"), []byte("e")})
	if err != nil || n != 5 {
		t.Fatalf("wrote %d, %v", n, err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "abcde" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
}

func TestEOF(t *testing.T) {
	c, peer := pair(t)
	_ = peer.Close()
	if _, err := c.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}

func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
}

func TestClosedConn(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	// The reader is waiting (or about to): closing ends its wait.
	_ = c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v", err)
	}
}

// A connection the peer reset fails reads and writes with the socket's
// error, as a net.OpError.
func TestReset(t *testing.T) {
	c, peer := pair(t)
	_ = peer.(*net.TCPConn).SetLinger(0)
	_ = peer.Close() // RST
	var oe *net.OpError
	if _, err := c.Read(make([]byte, 8)); !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read after a reset: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write after a reset: %v", err)
	}
}

func TestNoAllocs(t *testing.T) {
	c, peer := pair(t)
	msg := []byte("ping")
	buf := make([]byte, 4)
	pbuf := make([]byte, 4)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, pbuf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(pbuf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip", allocs)
	}
}

// Inside Poll a Read never waits: with nothing at hand it says so, and
// Poll calls the callback again once input comes.
func TestPollReadsWithoutWaiting(t *testing.T) {
	c, peer := pair(t)
	buf := make([]byte, 16)
	var calls int
	var got string
	err := c.(*Conn).Poll(func() bool {
		calls++
		n, err := c.Read(buf)
		if errors.Is(err, ErrWouldBlock) {
			if calls == 1 {
				go func() { _, _ = peer.Write([]byte("hi")) }()
			}
			return false
		}
		if err != nil {
			t.Errorf("read: %v", err)
			return true
		}
		got = string(buf[:n])
		return true
	})
	if err != nil || got != "hi" {
		t.Fatalf("Poll: %v, read %q", err, got)
	}
	if calls < 2 {
		t.Fatalf("the callback ran %d times, want the empty read and the one after the input", calls)
	}
}

// The point of Poll: input that comes after a read drained the socket,
// while the callback still runs, is not lost when the callback then waits
// without reading again. (A Read after a Read forgets it, so a plain
// reader must read once more before it may wait.)
func TestPollKeepsInputThatCameDuringTheCallback(t *testing.T) {
	c, peer := pair(t)
	// Were the news of "b" lost, Poll would wait until this deadline.
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	var got []string
	err := c.(*Conn).Poll(func() bool {
		n, err := c.Read(buf)
		switch {
		case errors.Is(err, ErrWouldBlock):
			return false
		case err != nil:
			t.Errorf("read: %v", err)
			return true
		}
		got = append(got, string(buf[:n]))
		if len(got) == 2 {
			return true
		}
		// Drained (1 byte of 16). The next input arrives now, before the
		// callback returns; on loopback it is in the socket once the
		// peer's write returns.
		if _, err := peer.Write([]byte("b")); err != nil {
			t.Error(err)
			return true
		}
		// Let the runtime's poller take the news of "b" now: a goroutine
		// that parks sends its thread through the poller before it
		// sleeps. A wait that began anew (a Read) would forget it.
		time.Sleep(time.Millisecond)
		return false // wait, without the read that would find "b"
	})
	if err != nil {
		t.Fatalf("Poll: %v (got %q)", err, got)
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("read %q", got)
	}
}

// Poll ends with the connection: a Close from elsewhere wakes its wait,
// and the peer's end is an EOF inside the callback.
func TestPollEnds(t *testing.T) {
	c, peer := pair(t)
	errc := make(chan error, 1)
	waiting := make(chan struct{})
	go func() {
		buf := make([]byte, 16)
		first := true
		errc <- c.(*Conn).Poll(func() bool {
			if _, err := c.Read(buf); !errors.Is(err, ErrWouldBlock) {
				t.Errorf("read: %v, want ErrWouldBlock", err)
				return true
			}
			if first {
				first = false
				close(waiting)
			}
			return false
		})
	}()
	<-waiting
	_ = c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Poll after Close: %v, want net.ErrClosed", err)
	}

	c, peer = pair(t)
	_ = peer.Close()
	var readErr error
	err := c.(*Conn).Poll(func() bool {
		_, readErr = c.Read(make([]byte, 16))
		return !errors.Is(readErr, ErrWouldBlock)
	})
	if err != nil || readErr != io.EOF {
		t.Fatalf("Poll: %v, read: %v, want io.EOF", err, readErr)
	}
}
