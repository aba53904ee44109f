package e2e_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/farm"
)

// TestStdio runs a websocketd-style program through the manager: a task
// goes to its stdin as one line, every stdout line up to the pool's
// delimiter is a result, and a session keeps its one process.
func TestStdio(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	ctx := st.ctx()

	sess, err := client.Dial(ctx, st.wsURL("/ws"), client.Options{Pool: "stdio"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Logout() })
	require.NotEmpty(t, sess.ID)
	fi, ok := st.farmInstance(sess.Instance)
	require.True(t, ok, "the welcome names the farm's instance")
	require.Equal(t, farm.ProtocolStdio, fi.Protocol)
	require.Equal(t, farm.StateReady, fi.State)

	// JSON lines are results as they are, in order; the delimiter is done.
	res, err := sess.Execute(ctx, json.RawMessage(`{"op":"twice","x":1}`))
	require.NoError(t, err)
	require.Equal(t, []string{`{"x":1}`, `{"x":2}`}, data(t, res))

	// A line that is no JSON arrives as a JSON string.
	res, err = sess.Execute(ctx, json.RawMessage(`{"op":"text"}`))
	require.NoError(t, err)
	require.Equal(t, []string{`"plain text"`}, data(t, res))

	// Every task of the session goes to the same process, which keeps its
	// state between tasks.
	require.Equal(t, fi.PID, stdioPID(t, sess), "the welcome's instance answers")
	require.Equal(t, fi.PID, stdioPID(t, sess), "and answers again")
	require.Equal(t, 1, stdioCount(t, sess))
	require.Equal(t, 2, stdioCount(t, sess))
	mi, ok := st.managerInstance(sess.Instance)
	require.True(t, ok)
	require.Equal(t, "bound", mi.State)

	// Another session gets a process of its own.
	other, err := client.Dial(ctx, st.wsURL("/ws"), client.Options{Pool: "stdio"})
	require.NoError(t, err)
	require.NotEqual(t, sess.Instance, other.Instance)
	require.NotEqual(t, fi.PID, stdioPID(t, other))
	require.Equal(t, 1, stdioCount(t, other))
	require.Equal(t, 3, stdioCount(t, sess))
	require.Len(t, st.spawned("stdio"), 2, "one process per session")

	// Logging out releases the instance: the pool kills it.
	require.NoError(t, other.Logout())
	require.NoError(t, sess.Logout())
	st.requireEmpty()
	st.requireGone(fi.PID)
}

// data returns the JSON data of results, failing on binary ones.
func data(t *testing.T, res []client.Result) []string {
	t.Helper()
	out := make([]string, 0, len(res))
	for _, r := range res {
		require.Nil(t, r.Binary, "unexpected binary result")
		out = append(out, string(r.Data))
	}
	return out
}

func stdioPID(t *testing.T, s *client.Session) int {
	t.Helper()
	var v struct{ PID int }
	stdioOne(t, s, `{"op":"pid"}`, &v)
	require.Positive(t, v.PID)
	return v.PID
}

func stdioCount(t *testing.T, s *client.Session) int {
	t.Helper()
	var v struct{ Count int }
	stdioOne(t, s, `{"op":"count"}`, &v)
	return v.Count
}

// stdioOne runs a task with exactly one result and decodes it into v.
func stdioOne(t *testing.T, s *client.Session, task string, v any) {
	t.Helper()
	res, err := s.Execute(t.Context(), json.RawMessage(task))
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.NoError(t, json.Unmarshal(res[0].Data, v))
}
