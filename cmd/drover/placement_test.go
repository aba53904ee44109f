package main

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

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
