package wsframe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var sizes = []int{0, 1, 7, 8, 9, 125, 126, 127, 1000, 0xffff, 0x10000, 100_000}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func reader(b []byte, fromClient bool, limit int64) *Reader {
	return &Reader{R: bufio.NewReaderSize(bytes.NewReader(b), 64), FromClient: fromClient, Limit: limit}
}

func TestMaskMatchesByteWise(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for n := range 40 {
		b, want := payload(n), payload(n)
		for i := range want {
			want[i] ^= key[i%4]
		}
		Mask(key, b)
		require.Equal(t, want, b, "length %d", n)
	}
}

// TestFramesRoundTrip writes frames of every length class, masked and not,
// with AppendFrame and with Begin/End, and reads them back.
func TestFramesRoundTrip(t *testing.T) {
	key := &[4]byte{1, 2, 3, 4}
	for _, masked := range []bool{false, true} {
		k := key
		if !masked {
			k = nil
		}
		for _, n := range sizes {
			p := payload(n)
			whole := AppendFrame([]byte("x"), OpBinary, p, k)[1:]
			b, start := Begin([]byte("x"))
			b = append(b, p...)
			inPlace := End(b, start, OpBinary, k)[1:]
			require.Equal(t, whole, inPlace, "n=%d masked=%v", n, masked)

			op, msg, err := reader(whole, masked, 0).Next(nil)
			require.NoError(t, err)
			require.Equal(t, OpBinary, op)
			require.Equal(t, string(p), string(msg), "n=%d masked=%v", n, masked)
		}
	}
}

func TestHeaderUsesShortestLength(t *testing.T) {
	require.Len(t, AppendHeader(nil, OpText, 125, nil), 2)
	require.Len(t, AppendHeader(nil, OpText, 126, nil), 4)
	require.Len(t, AppendHeader(nil, OpText, 0xffff, nil), 4)
	require.Len(t, AppendHeader(nil, OpText, 0x10000, nil), 10)
	require.Len(t, AppendHeader(nil, OpText, 0x10000, &[4]byte{}), 14)
}

// frame builds a raw frame with full control over its first byte.
func frame(b0 byte, p []byte, masked bool) []byte {
	var key *[4]byte
	if masked {
		key = &[4]byte{9, 8, 7, 6}
	}
	f := AppendFrame(nil, 0, p, key)
	f[0] = b0
	return f
}

func TestFragmentsAndControlFrames(t *testing.T) {
	var in []byte
	in = append(in, frame(byte(OpText), []byte("hel"), true)...)
	in = append(in, frame(finBit|OpPing, []byte("are you there"), true)...)
	in = append(in, frame(OpContinuation, []byte("lo "), true)...)
	in = append(in, frame(finBit|OpPong, []byte("stray"), true)...)
	in = append(in, frame(finBit|OpContinuation, []byte("world"), true)...)
	in = append(in, frame(finBit|OpBinary, []byte{1, 2}, true)...)
	in = append(in, frame(finBit|OpClose, ClosePayload(nil, 1001, "bye"), true)...)

	var pings []string
	r := reader(in, true, 0)
	r.Ping = func(p []byte) { pings = append(pings, string(p)) }
	op, msg, err := r.Next(nil)
	require.NoError(t, err)
	require.Equal(t, OpText, op)
	require.Equal(t, "hello world", string(msg))
	require.Equal(t, []string{"are you there"}, pings)

	op, msg, err = r.Next(msg[:0])
	require.NoError(t, err)
	require.Equal(t, OpBinary, op)
	require.Equal(t, []byte{1, 2}, msg)

	_, _, err = r.Next(nil)
	var ce *CloseError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, CloseError{Code: 1001, Text: "bye"}, *ce)
}

func TestCloseWithoutStatus(t *testing.T) {
	_, _, err := reader(frame(finBit|OpClose, nil, false), false, 0).Next(nil)
	var ce *CloseError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, CloseNoStatus, ce.Code)
	// A close frame for 1005 carries no payload.
	require.Empty(t, ClosePayload(nil, CloseNoStatus, "ignored"))
}

func TestReaderErrors(t *testing.T) {
	long := make([]byte, 10)
	long[0], long[1] = finBit|OpBinary, 127
	binary.BigEndian.PutUint64(long[2:], 1<<63)
	for _, tc := range []struct {
		name       string
		in         []byte
		fromClient bool
		limit      int64
		want       error // ErrReadLimit, io.ErrUnexpectedEOF, or nil for a ProtocolError
	}{
		{name: "rsv bits", in: frame(finBit|0x40|OpText, nil, false)},
		{name: "reserved opcode", in: frame(finBit|0x3, nil, false)},
		{name: "reserved control opcode", in: frame(finBit|0xB, nil, false)},
		{name: "masked from a server", in: frame(finBit|OpText, nil, true)},
		{name: "unmasked from a client", in: frame(finBit|OpText, nil, false), fromClient: true},
		{name: "long control frame", in: frame(finBit|OpPing, make([]byte, 126), false)},
		{name: "fragmented control frame", in: frame(OpPing, nil, false)},
		{name: "continuation first", in: frame(finBit|OpContinuation, nil, false)},
		{name: "data inside a fragmented message", in: append(frame(OpText, nil, false), frame(finBit|OpText, nil, false)...)},
		{name: "bad close code", in: frame(finBit|OpClose, ClosePayload(nil, 1006, ""), false)},
		{name: "close reason not UTF-8", in: frame(finBit|OpClose, []byte{3, 232, 0xff}, false)},
		{name: "64-bit length with its top bit", in: long},
		{name: "over the limit", in: frame(finBit|OpText, make([]byte, 11), false), limit: 10, want: ErrReadLimit},
		{name: "fragments over the limit", in: append(frame(OpText, make([]byte, 6), false), frame(finBit|OpContinuation, make([]byte, 5), false)...), limit: 10, want: ErrReadLimit},
		{name: "empty", in: nil, want: io.ErrUnexpectedEOF},
		{name: "cut header", in: []byte{finBit | OpText}, want: io.ErrUnexpectedEOF},
		{name: "cut payload", in: frame(finBit|OpText, []byte("abc"), false)[:4], want: io.ErrUnexpectedEOF},
		{name: "cut message", in: frame(OpText, []byte("abc"), false), want: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := reader(tc.in, tc.fromClient, tc.limit).Next(nil)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				return
			}
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
		})
	}
}

func TestReaderAtLimit(t *testing.T) {
	in := append(frame(OpText, make([]byte, 6), false), frame(finBit|OpContinuation, make([]byte, 4), false)...)
	_, msg, err := reader(in, false, 10).Next(nil)
	require.NoError(t, err)
	require.Len(t, msg, 10)
}

// conn is a net.Conn that records its writes.
type conn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *conn) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, append([]byte(nil), b...))
	return len(b), nil
}

func (c *conn) SetWriteDeadline(time.Time) error { return nil }

func (c *conn) all() []byte { return bytes.Join(c.writes, nil) }

func text(s string) func([]byte) []byte {
	return func(b []byte) []byte { return append(b, s...) }
}

func TestWriterGathersHeldFrames(t *testing.T) {
	c := &conn{}
	var w Writer
	w.Reset(c, time.Second)

	require.NoError(t, w.Text(false, text("a")))
	require.Len(t, c.writes, 1, "not held: written at once")

	w.Hold()
	require.NoError(t, w.Text(false, text("b")))
	require.NoError(t, w.Binary(false, []byte{1}))
	require.Len(t, c.writes, 1, "held")
	require.NoError(t, w.Text(true, text("c")))
	require.Len(t, c.writes, 2, "now writes what waits with it")
	want := AppendFrame(nil, OpText, []byte("b"), nil)
	want = AppendFrame(want, OpBinary, []byte{1}, nil)
	want = AppendFrame(want, OpText, []byte("c"), nil)
	require.Equal(t, want, c.writes[1])

	require.NoError(t, w.Text(false, text("d")))
	require.Len(t, c.writes, 2, "still held")
	require.NoError(t, w.Release(true))
	require.Len(t, c.writes, 3)

	w.Hold()
	big := strings.Repeat("x", FlushSize)
	require.NoError(t, w.Text(false, text(big)))
	require.Len(t, c.writes, 4, "a full buffer goes out even when held")
	require.NoError(t, w.Release(false))
}

func TestWriterLargeBinaryFromParts(t *testing.T) {
	c := &conn{}
	var w Writer
	w.Reset(c, 0)
	w.Hold()
	require.NoError(t, w.Text(false, text("first")))
	p := payload(3 * directSize)
	require.NoError(t, w.Binary(false, p[:directSize], p[directSize:]))
	want := AppendFrame(nil, OpText, []byte("first"), nil)
	want = AppendFrame(want, OpBinary, p, nil)
	require.Equal(t, want, c.all(), "pending frames, then the large one")
}

func TestWriterClose(t *testing.T) {
	c := &conn{}
	var w Writer
	w.Reset(c, time.Second)
	w.Hold()
	require.NoError(t, w.Text(false, text("last")))
	require.NoError(t, w.Close(1000, "done", time.Second))
	want := AppendFrame(nil, OpText, []byte("last"), nil)
	want = AppendFrame(want, OpClose, ClosePayload(nil, 1000, "done"), nil)
	require.Equal(t, want, c.all())
	require.ErrorIs(t, w.Text(true, text("late")), ErrCloseSent)
	require.ErrorIs(t, w.Close(1000, "", time.Second), ErrCloseSent)
	require.ErrorIs(t, w.Pong(nil), ErrCloseSent)

	// A long reason is cut on a character boundary.
	long := strings.Repeat("é", 100)
	p := ClosePayload(nil, 1000, long)
	require.LessOrEqual(t, len(p), maxControl)
	require.True(t, strings.HasPrefix(long, string(p[2:])))
}

func TestWriterErrorsStick(t *testing.T) {
	boom := errors.New("boom")
	c := &conn{err: boom}
	var w Writer
	w.Reset(c, time.Second)
	require.ErrorIs(t, w.Text(true, text("a")), boom)
	c.err = nil
	require.ErrorIs(t, w.Text(true, text("b")), boom, "the stream is broken")
	require.Empty(t, c.writes)
}

type nopConn struct{ net.Conn }

func (nopConn) Write(b []byte) (int, error)      { return len(b), nil }
func (nopConn) SetWriteDeadline(time.Time) error { return nil }

func TestTaskPathDoesNotAllocate(t *testing.T) {
	var w Writer
	w.Reset(nopConn{}, time.Second)
	in := append(frame(finBit|OpText, []byte(`{"type":"task","id":1}`), true), frame(finBit|OpText, []byte(`{"type":"task","id":2}`), true)...)
	src := bytes.NewReader(nil)
	br := bufio.NewReaderSize(src, 64)
	r := &Reader{R: br, FromClient: true}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(in)
		br.Reset(src)
		for range 2 {
			var err error
			if _, buf, err = r.Next(buf[:0]); err != nil {
				panic(err)
			}
		}
		w.Hold()
		_ = w.Text(false, func(b []byte) []byte { return append(b, buf...) })
		_ = w.Text(true, text("done"))
		_ = w.Release(false)
	})
	require.Zero(t, allocs)
}

func TestControlsReturnBetweenMessages(t *testing.T) {
	var in []byte
	in = append(in, frame(finBit|OpPing, []byte("idle?"), true)...)
	in = append(in, frame(byte(OpText), []byte("a"), true)...)
	in = append(in, frame(finBit|OpPing, []byte("mid"), true)...)
	in = append(in, frame(finBit|OpContinuation, []byte("b"), true)...)
	in = append(in, frame(finBit|OpPong, nil, true)...)

	var pings []string
	r := reader(in, true, 0)
	r.Controls = true
	r.Ping = func(p []byte) { pings = append(pings, string(p)) }
	op, msg, err := r.Next(nil)
	require.NoError(t, err)
	require.Equal(t, OpPing, op, "a ping between messages is returned")
	require.Empty(t, msg)
	require.Equal(t, []string{"idle?"}, pings)

	op, msg, err = r.Next(msg[:0])
	require.NoError(t, err)
	require.Equal(t, OpText, op, "a ping inside a message is not")
	require.Equal(t, "ab", string(msg))
	require.Equal(t, []string{"idle?", "mid"}, pings)

	op, _, err = r.Next(nil)
	require.NoError(t, err)
	require.Equal(t, OpPong, op)
}
