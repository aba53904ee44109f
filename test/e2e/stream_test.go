package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
)

// TestStream relays a viewer's WebSocket byte for byte through the manager
// and the farm to an SC-server-style instance that reports its liveliness,
// and stops the instance when the viewer leaves.
func TestStream(t *testing.T) {
	t.Parallel()
	st := newStack(t)

	// The 101 comes once the instance reported ready.
	ws := st.openStream("stream")
	inst := st.streamInstance("stream")
	require.Equal(t, farm.ProtocolStream, inst.Protocol)
	require.Equal(t, farm.StateReady, inst.State)

	// What the viewer sends comes back from the instance's echo unchanged,
	// text and binary, small and large, in order.
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello, stream ☃")},
		{websocket.BinaryMessage, every},
		{websocket.TextMessage, []byte{}},
		{websocket.BinaryMessage, big},
		{websocket.TextMessage, []byte(`{"type":"task","id":1,"data":"not for the manager"}`)},
	}
	for _, m := range msgs {
		require.NoError(t, ws.WriteMessage(m.typ, m.data))
	}
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	for i, m := range msgs {
		typ, got, err := ws.ReadMessage()
		require.NoError(t, err, "message %d", i)
		require.Equal(t, m.typ, typ, "message %d", i)
		require.True(t, bytes.Equal(m.data, got), "message %d: %d bytes sent, %d back", i, len(m.data), len(got))
	}

	// Its pings keep it alive well past three silent intervals.
	time.Sleep(5 * liveliness) // no event to wait for: the point is that nothing happens
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("still there?")))
	_, got, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "still there?", string(got))
	_, ok := st.farmInstance(inst.ID)
	require.True(t, ok)

	// The viewer leaves: the session ends and the instance is stopped.
	require.NoError(t, ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)))
	_, _, err = ws.ReadMessage()
	require.True(t, websocket.IsCloseError(err, websocket.CloseNormalClosure),
		"the instance's close comes back through the relays: %v", err)
	// The relays pass the instance's TCP close on as a half close; a client
	// closes its socket after the close handshake, which ends the relays.
	require.NoError(t, ws.Close())
	st.requireEmpty()
	st.requireGone(inst.PID)
}

// TestStreamLivelinessKill: a stream instance that reports ready and then
// nothing is killed by the farm after three silent Liveliness intervals,
// and the kill closes the viewer's relayed connection.
func TestStreamLivelinessKill(t *testing.T) {
	t.Parallel()
	st := newStack(t)

	begin := time.Now() // before the instance's ready report, which starts the clock
	ws := st.openStream("stream-silent")
	opened := time.Now()
	inst := st.streamInstance("stream-silent")

	// It relays while it lives.
	require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}))
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	_, got, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, got)

	// The kill ends the viewer's connection.
	_, _, err = ws.ReadMessage()
	closed := time.Now()
	require.Error(t, err)
	t.Logf("viewer's connection closed %s after the upgrade (%v)", closed.Sub(opened).Round(time.Millisecond), err)
	silent := 3 * liveliness
	require.GreaterOrEqual(t, closed.Sub(begin), silent, "not before three silent intervals")
	require.Less(t, closed.Sub(opened), silent+2*time.Second, "soon after three silent intervals")

	st.eventually("the farm to forget the instance", func() bool {
		_, ok := st.farmInstance(inst.ID)
		return !ok
	})
	st.requireGone(inst.PID)
	require.NoError(t, ws.Close())
	st.requireEmpty()
}

// TestStreamWarmServesViewer: a stream pool whose every slot holds a warm
// instance serves a viewer at once with one of them (that is what warm
// means). A viewer that asks for a model none of them was started with
// gets a fresh instance, and does not wait behind the idle one: it is
// stopped to make room.
func TestStreamWarmServesViewer(t *testing.T) {
	t.Parallel()
	models := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(models, "gear"), 0o755))
	st := newStackWith(t, stackOptions{warm: map[string]int{"stream": 2}, modelsDir: models})
	idle := map[string]bool{}
	st.eventually("two warm stream instances, every slot", func() bool {
		clear(idle)
		for _, in := range st.m.Status().Instances {
			if in.Pool == "stream" && in.State == "idle" {
				idle[in.ID] = true
			}
		}
		return len(idle) == 2
	})

	begin := time.Now()
	ws := st.openStream("stream")
	t.Logf("the viewer was relayed %s after it asked", time.Since(begin).Round(time.Millisecond))
	inst := st.streamInstance("stream")
	require.True(t, idle[inst.ID], "a warm instance serves it")
	require.Len(t, st.spawned("stream"), 2, "nothing was started for it")
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("warm")))
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	_, got, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "warm", string(got))

	var other string
	for id := range idle {
		if id != inst.ID {
			other = id
		}
	}
	gear := st.openStream("stream&model=gear")
	require.Len(t, st.spawned("stream"), 3, "a fresh instance for the model")
	require.NoError(t, gear.WriteMessage(websocket.TextMessage, []byte("gear")))
	require.NoError(t, gear.SetReadDeadline(time.Now().Add(waitFor)))
	_, got, err = gear.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "gear", string(got))
	_, ok := st.farmInstance(other)
	require.False(t, ok, "the idle warm instance made room")
}

// openStream opens a stream session of pool; it returns once the manager
// answered 101, that is once the instance is ready and relayed.
func (st *stack) openStream(pool string) *websocket.Conn {
	st.t.Helper()
	ctx, cancel := context.WithTimeout(st.t.Context(), waitFor)
	defer cancel()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, st.wsURL("/stream?pool="+pool), nil)
	require.NoError(st.t, err)
	require.Equal(st.t, http.StatusSwitchingProtocols, resp.StatusCode)
	st.t.Cleanup(func() { _ = ws.Close() })
	return ws
}

// streamInstance returns the one instance of pool, as the farm sees it,
// after checking that the manager has it bound to a session.
func (st *stack) streamInstance(pool string) farm.Instance {
	st.t.Helper()
	ms := st.m.Status()
	require.Len(st.t, ms.Sessions, 1)
	require.Equal(st.t, pool, ms.Sessions[0].Pool)
	id := ms.Sessions[0].Instance
	mi, ok := st.managerInstance(id)
	require.True(st.t, ok, "the manager knows instance %s", id)
	require.Equal(st.t, "bound", mi.State)
	fi, ok := st.farmInstance(id)
	require.True(st.t, ok, "the farm runs instance %s", id)
	require.Equal(st.t, pool, fi.Pool)
	require.Positive(st.t, fi.PID, fmt.Sprintf("%+v", fi))
	return fi
}
