package wsframe

import (
	"bufio"
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countingReader counts the reads that reach it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// Whole is true exactly when Next returns without reading from the
// connection: checked against every prefix of a stream of frames.
func TestWholeMeansNoRead(t *testing.T) {
	frames := [][]byte{
		frame(finBit|OpText, []byte("task"), true),
		frame(finBit|OpText, payload(200), true),      // 16-bit length
		frame(finBit|OpBinary, payload(70_000), true), // 64-bit length
		frame(finBit|OpPing, []byte("p"), true),
		frame(OpText, []byte("frag"), true), // no FIN
		frame(finBit|OpClose, ClosePayload(nil, 1000, ""), true),
	}
	for _, controls := range []bool{false, true} {
		for i, f := range frames {
			for cut := 0; cut <= len(f); cut += max(1, len(f)/40) {
				src := &countingReader{r: bytes.NewReader(f[:cut])}
				r := &Reader{R: bufio.NewReaderSize(src, 128<<10), FromClient: true, Controls: controls}
				if cut > 0 {
					_, _ = r.R.Peek(cut) // the buffer holds the prefix
				}
				whole := r.Whole()
				before := src.reads
				_, _, _ = r.Next(nil)
				readMore := src.reads > before
				wantWhole := cut == len(f) && i != 4 && (controls || i != 3)
				require.Equal(t, wantWhole, whole, "frame %d cut at %d, controls %v", i, cut, controls)
				if whole {
					require.False(t, readMore, "frame %d: Whole, yet Next read", i)
				}
			}
		}
	}
}

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	conn
	deadlines []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

// The write deadline is set once for writes close together, and a close
// frame gets its own shorter one.
func TestWriterMovesDeadlineRarely(t *testing.T) {
	c := &deadlineConn{}
	var w Writer
	w.Reset(c, time.Minute)
	start := time.Now()
	for range 10 {
		require.NoError(t, w.Text(true, text("x")))
	}
	require.Len(t, c.writes, 10)
	require.Len(t, c.deadlines, 1, "one deadline for ten writes within a minute")
	require.WithinDuration(t, start.Add(time.Minute), c.deadlines[0], 5*time.Second)

	require.NoError(t, w.Close(1000, "", time.Second))
	require.Len(t, c.deadlines, 2)
	require.WithinDuration(t, start.Add(time.Second), c.deadlines[1], 5*time.Second)
}
