package main

import (
	"context"
	"encoding/json"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
)

// TestClusterFarmKilledNewSessionsWelcome (issue 9, fault 1): one of three
// farms is killed with -9, and ten sessions opened at once right after,
// long before the farm misses its heartbeats, all get a welcome on a live
// farm. The manager finds the dead farm unreachable on its first start
// there, stops placing on it, and starts the session elsewhere; no client
// sees an error.
func TestClusterFarmKilledNewSessionsWelcome(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	farms := map[string]*droverProc{}
	for _, id := range []string{"farm-a", "farm-b", "farm-c"} {
		farms[id] = startFarm(t, m, id, 5)
	}
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b", "farm-c")

	// farm-a has the lowest id: with equal free slots it is filled first.
	require.NoError(t, farms["farm-a"].cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	const n = 10
	sessions := make([]*client.Session, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sessions[i], errs[i] = client.Dial(ctx, "ws://"+m.base+"/ws", client.Options{})
		})
	}
	wg.Wait()
	t.Logf("ten sessions placed %s after the kill", time.Since(killed).Round(time.Millisecond))
	st := m.status(t)
	for i, s := range sessions {
		require.NoError(t, errs[i], "session %d", i)
		t.Cleanup(func() { _ = s.Drop() })
		require.Contains(t, []string{"farm-b", "farm-c"}, st.farmOf(s.Instance), "session %d", i)
	}
	for _, s := range sessions {
		require.NoError(t, s.Logout())
	}
	m.stop(t)
	farms["farm-b"].stop(t)
	farms["farm-c"].stop(t)
	requireNoSecrets(t, m, farms["farm-b"], farms["farm-c"])
}

// TestClusterFarmFrozenOrRestartedNewSessions (issue 9, faults 1 and 5):
// a farm frozen for 6 s is declared dead and comes back with the
// instances the manager gave up still running; another is killed and
// restarted. Each time, sessions opened straight after are welcomed or
// queued, never sent an error.
func TestClusterFarmFrozenOrRestartedNewSessions(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	a := startFarm(t, m, "farm-a", 2)
	b := startFarm(t, m, "farm-b", 2)
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b")
	onA := openSession(t, m)
	require.Equal(t, "farm-a", m.status(t).farmOf(onA.s.Instance))
	onB := openSession(t, m)
	require.Equal(t, "farm-b", m.status(t).farmOf(onB.s.Instance))

	// Freeze farm-a: a session opened now may be sent there first, and is
	// placed elsewhere once the farm is found dead.
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	frozenAt := time.Now()
	defer func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) }()
	during := openSessionOpts(t, m, false)
	require.Equal(t, "farm-b", m.status(t).farmOf(during.s.Instance))
	waitFarms(t, m, 10*time.Second, "farm-b")             // farm-a is declared dead
	time.Sleep(time.Until(frozenAt.Add(6 * time.Second))) // the freeze lasts 6 s: nothing to wait for
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	// It registers again, listing the instance the manager gave up.
	requireWelcomeOrQueued(t, m, 3)
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b")
	requireWelcomeOrQueued(t, m, 3)

	// Kill farm-b and start it again with the same id.
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGKILL))
	_ = b.wait(t, 10*time.Second)
	b2 := startFarm(t, m, "farm-b", 2)
	requireWelcomeOrQueued(t, m, 3)
	_, err := onB.s.Execute(t.Context(), json.RawMessage(`{"command":"echo"}`))
	require.Error(t, err, "the session on the killed farm is over")

	m.stop(t)
	a.stop(t)
	b2.stop(t)
}

// requireWelcomeOrQueued opens n WebSocket sessions at once, requires the
// first frame of each to be a welcome or a queue position, and then closes
// them.
func requireWelcomeOrQueued(t *testing.T, m *droverProc, n int) {
	t.Helper()
	first := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []*websocket.Conn
	for i := range n {
		wg.Go(func() {
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+m.base+"/ws", nil)
			if err != nil {
				first[i] = err.Error()
				return
			}
			mu.Lock()
			conns = append(conns, ws)
			mu.Unlock()
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				first[i] = err.Error()
				return
			}
			var f struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(b, &f)
			first[i] = f.Type
			if f.Type != "welcome" && f.Type != "queued" {
				first[i] = string(b)
			}
		})
	}
	wg.Wait()
	for _, ws := range conns {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(time.Second))
		_ = ws.Close()
	}
	for i, f := range first {
		require.Contains(t, []string{"welcome", "queued"}, f, "session %d", i)
	}
}
