package farm

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/session"
)

// pairClient plays the manager on a connection Farm.Connect made: frames
// out are masked, as a client's must be, and there was no handshake.
type pairClient struct {
	t    *testing.T
	conn net.Conn
	rd   wsframe.Reader
}

func connectPair(t *testing.T, f *Farm, id string) *pairClient {
	t.Helper()
	conn, err := f.Connect(id)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &pairClient{t: t, conn: conn, rd: wsframe.Reader{R: bufio.NewReader(conn)}}
}

// task sends one task and returns its results and the frame that ended it.
func (c *pairClient) task(id int, data string) (results []string, end session.Frame) {
	c.t.Helper()
	key := [4]byte{1, 2, 3, 4}
	msg, err := json.Marshal(map[string]any{"type": "task", "id": id, "data": json.RawMessage(data)})
	require.NoError(c.t, err)
	_, err = c.conn.Write(wsframe.AppendFrame(nil, wsframe.OpText, msg, &key))
	require.NoError(c.t, err)
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(waitFor)))
	for {
		_, raw, err := c.rd.Next(nil)
		require.NoError(c.t, err, "reading the answer to task %d", id)
		var fr session.Frame
		require.NoError(c.t, session.Decode(raw, &fr), "frame %s", raw)
		require.Equal(c.t, strconv.Itoa(id), string(fr.ID), "frame %s", raw)
		if fr.Type != session.FrameResult {
			return results, fr
		}
		results = append(results, string(fr.Data))
	}
}

// TestConnect runs tasks on a stdio instance over the in-process connection
// a manager in the farm's process gets instead of a WebSocket through the
// server, and checks what Connect refuses and that the connection closes
// with the instance.
func TestConnect(t *testing.T) {
	t.Parallel()
	p := adapterPool("sh", "stdio", ProtocolStdio)
	p.IdleGap = time.Second
	native := childPool("native", "listen")
	f := newTestFarm(t, Config{Slots: 2, Pools: []PoolSpec{p, native}})
	inst, err := f.StartInstance(startCtx(t), "sh")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	c := connectPair(t, f, inst.ID)
	results, end := c.task(1, `{"print": ["one", "{\"two\": 2}"]}`)
	require.Equal(t, session.FrameDone, end.Type)
	require.Equal(t, []string{`"one"`, `{"two": 2}`}, results)
	results, end = c.task(2, `{"echo": true, "x": [1, 2]}`)
	require.Equal(t, session.FrameDone, end.Type)
	require.Equal(t, []string{`{"echo":true,"x":[1,2]}`}, results)

	nat, err := f.StartInstance(startCtx(t), "native")
	require.NoError(t, err)
	killOnCleanup(t, nat.PID)
	_, err = f.Connect(nat.ID)
	require.ErrorIs(t, err, ErrNotHosted, "a native instance has a port of its own")
	_, err = f.Connect("no-such-instance")
	require.ErrorIs(t, err, ErrNotFound)

	// Stopping the instance closes the connection, as it does those
	// through the server: the reader meets its end mid-stream, not the
	// read deadline.
	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
	require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(waitFor)))
	_, _, err = c.rd.Next(nil)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the connection ends when the instance goes")
	_, err = f.Connect(inst.ID)
	require.ErrorIs(t, err, ErrNotFound, "a stopped instance is not connected to")
}
