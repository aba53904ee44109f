package e2e_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/session"
)

// TestDial runs a ClassCAD-style instance through the manager: it connects
// back to the farm's private port and handshakes before the client is
// welcomed, and each task goes to it as a frame of commands. The instance
// of pool "dial" says nothing until the farm's configuration came, as a
// real one does; that of "dial-early" sends its Handshake at once.
func TestDial(t *testing.T) {
	t.Parallel()
	for _, pool := range []string{"dial", "dial-early"} {
		t.Run(pool, func(t *testing.T) {
			t.Parallel()
			testDial(t, pool)
		})
	}
}

func testDial(t *testing.T, pool string) {
	st := newStack(t)
	ctx := st.ctx()

	// The welcome comes once the instance has handshaken and reported Ready.
	sess, err := client.Dial(ctx, st.wsURL("/ws"), client.Options{Pool: pool})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Logout() })
	fi, ok := st.farmInstance(sess.Instance)
	require.True(t, ok, "the welcome names the farm's instance")
	require.Equal(t, farm.ProtocolDial, fi.Protocol)
	require.Equal(t, farm.StateReady, fi.State)
	require.Empty(t, fi.Addr, "a dial instance listens on no port of its own")

	// One command: its Result is the result; the BeginFrame and EndFrame
	// Results are framing, and EndFrame's is the done.
	res, err := sess.Execute(ctx, json.RawMessage(`[{"command":"add","a":1,"b":2}]`))
	require.NoError(t, err)
	require.Equal(t, []string{"add=3"}, results(t, res))

	// Several commands in one frame answer in order; a lone object is one
	// command.
	res, err = sess.Execute(ctx, json.RawMessage(`[{"command":"add","a":1,"b":2},{"command":"add","a":40,"b":2}]`))
	require.NoError(t, err)
	require.Equal(t, []string{"add=3", "add=42"}, results(t, res))
	res, err = sess.Execute(ctx, json.RawMessage(`{"command":"pid"}`))
	require.NoError(t, err)
	require.Equal(t, []string{"pid=" + itoa(fi.PID)}, results(t, res),
		"the session's tasks go to the welcome's instance")
	res, err = sess.Execute(ctx, json.RawMessage(`{"command":"config"}`))
	require.NoError(t, err)
	require.Equal(t, []string{`config={"command":"configuration","farm":"` + st.farm.ID() + `"}`}, results(t, res),
		"the farm's configuration reached the instance")

	// A reply with an error fails the task; the instance goes on.
	_, err = sess.Execute(ctx, json.RawMessage(`{"command":"divide"}`))
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, session.CodeTaskFailed, ce.Code)
	require.Equal(t, "unknown command", ce.Message)
	res, err = sess.Execute(ctx, json.RawMessage(`{"command":"add","a":2,"b":2}`))
	require.NoError(t, err)
	require.Equal(t, []string{"add=4"}, results(t, res))

	require.NoError(t, sess.Logout())
	st.requireEmpty()
	st.requireGone(fi.PID)
}

// results returns "from=result" of each Result a dial instance answered
// with, and checks that they are Results of one frame.
func results(t *testing.T, res []client.Result) []string {
	t.Helper()
	out := make([]string, 0, len(res))
	var tx json.RawMessage
	for i, d := range data(t, res) {
		var r struct {
			Command       string
			From          string
			TransactionID json.RawMessage
			Result        json.RawMessage
		}
		require.NoError(t, json.Unmarshal([]byte(d), &r), d)
		require.Equal(t, "Result", r.Command, d)
		if i == 0 {
			tx = r.TransactionID
		}
		require.Equal(t, string(tx), string(r.TransactionID), "one frame: %s", d)
		out = append(out, r.From+"="+string(r.Result))
	}
	return out
}

// TestDialSpawnTimeout: a dial instance that never connects back fails its
// start after the pool's attempts, each a fresh process that gets
// StartTimeout; the client that waited for it gets an error frame and a
// close, and nothing is left behind.
func TestDialSpawnTimeout(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	ctx := st.ctx()

	begin := time.Now()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, st.wsURL("/ws?pool=dial-never"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))

	typ, msg, err := ws.ReadMessage()
	require.NoError(t, err)
	took := time.Since(begin)
	require.Equal(t, websocket.TextMessage, typ)
	var fr struct {
		Type  string          `json:"type"`
		ID    json.RawMessage `json:"id"`
		Error *client.Error   `json:"error"`
	}
	require.NoError(t, json.Unmarshal(msg, &fr), "frame %s", msg)
	require.Equal(t, "error", fr.Type, "frame %s", msg)
	require.Equal(t, "null", string(fr.ID), "the error is the session's, no task's")
	require.NotNil(t, fr.Error)
	require.Equal(t, session.CodeInternal, fr.Error.Code)
	require.Contains(t, fr.Error.Message, "could not start an instance")
	require.Contains(t, fr.Error.Message, "not ready within start timeout", "the farm gave up on the start")

	_, _, err = ws.ReadMessage()
	var closeErr *websocket.CloseError
	require.ErrorAs(t, err, &closeErr)
	require.Equal(t, websocket.CloseInternalServerErr, closeErr.Code)

	attempts := st.spawned("dial-never")
	t.Logf("error after %s, %d processes started", took.Round(time.Millisecond), len(attempts))
	pids := map[string]bool{}
	for _, a := range attempts {
		id, pid, _ := strings.Cut(a, " ")
		require.True(t, strings.HasPrefix(id, "dial-never-"), a)
		require.False(t, pids[pid], "every attempt is a fresh process")
		pids[pid] = true
	}
	// One spawn and SpawnRetries more, each waited out for StartTimeout,
	// with the backoff between them.
	const want = neverRetries + 1
	require.Len(t, attempts, want, "processes started: %v", attempts)
	least := want*neverStartTimeout + (want-1)*neverBackoff
	require.GreaterOrEqual(t, took, least)
	require.Less(t, took, least+3*time.Second)

	st.requireEmpty()
	for pid := range pids {
		st.requireGone(atoi(t, pid))
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	require.NoError(t, json.Unmarshal([]byte(s), &n))
	return n
}
