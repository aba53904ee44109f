package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/haproxytest"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// Two managers sharing one Redis behind one HAProxy, and two farms that
// register through HAProxy: every part a real process.

type scale struct {
	redis    *redistest.Server
	managers []*droverProc
	farms    []*droverProc
	lb       *haproxytest.Proxy
}

func newScale(t *testing.T, slotsPerFarm int) *scale {
	t.Helper()
	return newScaleFarms(t, 2, slotsPerFarm)
}

// newScaleFarms is newScale with nFarms farms, farm-0, farm-1, ...
func newScaleFarms(t *testing.T, nFarms, slotsPerFarm int) *scale {
	t.Helper()
	sc := &scale{redis: redistest.Start(t)}
	data := t.TempDir() // the managers' shared conversion data
	for i := range 2 {
		sc.managers = append(sc.managers, startDrover(t, fmt.Sprintf("manager-%d", i),
			[]string{"DROVER_REDIS=" + sc.redis.URL()}, managerBanner,
			"manager", "--addr", "127.0.0.1:0", "--farm-token", farmToken, "--admin-token", adminToken,
			"--id", fmt.Sprintf("m%d", i), "--resume-grace", "20s", "--data", data,
			"--log-level", "debug"))
	}
	sc.lb = haproxytest.Start(t, haproxytest.Options{Config: "../../deploy/haproxy.cfg", Backends: []string{sc.managers[0].base, sc.managers[1].base}})
	var ids []string
	for i := range nFarms {
		id := fmt.Sprintf("farm-%d", i)
		ids = append(ids, id)
		sc.farms = append(sc.farms, startDrover(t, id, nil, farmBanner, "farm",
			"--manager", "http://"+sc.lb.Farms, "--token", farmToken, "--addr", "127.0.0.1:0", "--id", id,
			"--instances", fmt.Sprint(slotsPerFarm), "--state-dir", t.TempDir(), "--log-level", "debug"))
	}
	for _, m := range sc.managers {
		waitFarms(t, m, 15*time.Second, ids...)
	}
	sc.waitLB(t, "UP", "UP")
	return sc
}

func (sc *scale) wsURL() string { return "ws://" + sc.lb.Client + "/ws" }

// waitLB waits until HAProxy holds the managers in the states given.
func (sc *scale) waitLB(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := sc.lb.Status("managers")
		require.NoError(t, err)
		if st["m0"] == want[0] && st["m1"] == want[1] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy holds the managers %v, want %v", st, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// farmInstances returns the instances each farm runs, by its own account.
func (sc *scale) farmInstances(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range sc.farms {
		for _, in := range f.farmStatus(t).Instances {
			out[in.ID] = f.name
		}
	}
	return out
}

func dialLB(ctx context.Context, t *testing.T, sc *scale, opts client.Options) *client.Session {
	t.Helper()
	s, err := client.Dial(ctx, sc.wsURL(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Drop() })
	return s
}

func runTask(t *testing.T, s *client.Session, task string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Execute(ctx, json.RawMessage(task))
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[0].Data
}

// TestScaleManyClientsNoDoubleBinding: 200 clients open sessions through
// HAProxy at once, on 2 × 20 slots. Every client is welcomed or queued, and
// no instance serves two sessions, by the farms' own account.
func TestScaleManyClientsNoDoubleBinding(t *testing.T) {
	const clients, slotsPerFarm = 200, 20
	sc := newScale(t, slotsPerFarm)

	type outcome struct {
		kind     string // welcome or queued
		instance string
		ws       *websocket.Conn
	}
	results := make([]outcome, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			ws, _, err := websocket.DefaultDialer.Dial(sc.wsURL(), nil)
			if err != nil {
				results[i].kind = "dial: " + err.Error()
				return
			}
			results[i].ws = ws
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			var f struct {
				Type     string `json:"type"`
				Instance string `json:"instance"`
			}
			if err := ws.ReadJSON(&f); err != nil {
				results[i].kind = "read: " + err.Error()
				return
			}
			results[i].kind, results[i].instance = f.Type, f.Instance
		})
	}
	close(start)
	wg.Wait()
	t.Cleanup(func() {
		for _, r := range results {
			if r.ws != nil {
				_ = r.ws.Close()
			}
		}
	})

	bound := map[string]int{}
	queued := 0
	for i, r := range results {
		switch r.kind {
		case "welcome":
			bound[r.instance]++
		case "queued":
			queued++
		default:
			t.Fatalf("client %d: %s", i, r.kind)
		}
	}
	for inst, n := range bound {
		require.Equal(t, 1, n, "instance %s bound to %d sessions", inst, n)
	}
	require.Len(t, bound, 2*slotsPerFarm, "every slot serves a session")
	require.Equal(t, clients-2*slotsPerFarm, queued)
	t.Logf("%d clients: %d welcomed on %d distinct instances, %d queued", clients, len(bound), len(bound), queued)

	// The farms' side: they run exactly the instances the clients were
	// given, each once.
	onFarms := sc.farmInstances(t)
	require.Len(t, onFarms, len(bound))
	for inst := range bound {
		require.Contains(t, onFarms, inst)
	}
	// Both managers placed sessions, and both see all of them.
	for _, m := range sc.managers {
		st := m.status(t)
		require.Equal(t, 2*slotsPerFarm, st.Capacity.Busy, "%s counts every manager's sessions", m.name)
		require.NotEmpty(t, st.Instances, "%s placed sessions too", m.name)
	}
	requireNoSecrets(t, append(sc.managers, sc.farms...)...)
}

// TestScaleResumeAfterManagerKill: kill -9 one manager; its clients resume
// through HAProxy on the other, on the same instances, state intact.
func TestScaleResumeAfterManagerKill(t *testing.T) {
	const sessions = 8
	sc := newScale(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var all []*client.Session
	for i := range sessions {
		s := dialLB(ctx, t, sc, client.Options{NoWait: true})
		runTask(t, s, fmt.Sprintf(`{"command":"set","key":"k","value":%d}`, i))
		all = append(all, s)
	}
	owner := map[string]string{} // session → manager name
	for _, m := range sc.managers {
		for _, in := range m.status(t).Instances {
			owner[in.Session] = m.name
		}
	}
	victim := sc.managers[0]
	var onVictim int
	for _, s := range all {
		if owner[s.ID] == victim.name {
			onVictim++
		}
	}
	require.Positive(t, onVictim, "HAProxy spread the sessions over both managers")

	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	_ = victim.wait(t, 10*time.Second)

	for i, s := range all {
		if owner[s.ID] != victim.name {
			// Untouched.
			require.JSONEq(t, fmt.Sprintf(`{"key":"k","value":%d}`, i), string(runTask(t, s, `{"command":"get","key":"k"}`)))
			continue
		}
		_ = s.Drop()
		r := dialLB(ctx, t, sc, client.Options{Resume: s.Resume})
		require.Equal(t, s.ID, r.ID, "the same session")
		require.Equal(t, s.Instance, r.Instance, "on the same instance")
		require.JSONEq(t, fmt.Sprintf(`{"key":"k","value":%d}`, i), string(runTask(t, r, `{"command":"get","key":"k"}`)),
			"state kept")
	}
	t.Logf("%d of %d sessions resumed on the other manager %s after the kill",
		onVictim, sessions, time.Since(killed).Round(time.Millisecond))
	survivor := sc.managers[1].status(t)
	require.Len(t, survivor.Instances, sessions, "the survivor holds every session: %+v", survivor.Instances)
	require.Equal(t, sessions, survivor.Capacity.Busy)
}

// TestScaleHealthThroughHAProxy: at 90% busy both managers answer 503 and
// HAProxy takes them out of the new-session rotation; new clients still
// reach a live manager and get drover's answer (no_capacity, or a place in
// the queue), not an HAProxy 503. Below 90%, the managers come back.
func TestScaleHealthThroughHAProxy(t *testing.T) {
	sc := newScale(t, 5) // 10 slots
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var open []*client.Session
	for range 8 {
		open = append(open, dialLB(ctx, t, sc, client.Options{NoWait: true}))
	}
	for _, m := range sc.managers {
		require.Equal(t, http.StatusOK, m.health(t), "80%% busy")
	}
	open = append(open, dialLB(ctx, t, sc, client.Options{NoWait: true}))
	for _, m := range sc.managers {
		require.Equal(t, http.StatusServiceUnavailable, m.health(t), "90%% busy: %s says 503", m.name)
	}
	sc.waitLB(t, "DOWN", "DOWN")
	// Running sessions are not cut off by HAProxy taking their manager out.
	runTask(t, open[0], `{"command":"echo"}`)
	// New clients still reach a manager: the tenth takes the last slot,
	// the eleventh (not waiting) hears no_capacity from drover. A resume
	// still gets through.
	last := dialLB(ctx, t, sc, client.Options{NoWait: true})
	open = append(open, last)
	_, err := client.Dial(ctx, sc.wsURL(), client.Options{NoWait: true})
	require.ErrorContains(t, err, "no_capacity")
	_ = open[1].Drop()
	r := dialLB(ctx, t, sc, client.Options{Resume: open[1].Resume})
	require.Equal(t, open[1].Instance, r.Instance)
	runTask(t, r, `{"command":"echo"}`)

	require.NoError(t, open[9].Logout())
	require.NoError(t, open[8].Logout())
	sc.waitLB(t, "UP", "UP")
	for _, m := range sc.managers {
		require.Equal(t, http.StatusOK, m.health(t))
	}
}

// TestScaleRedisRestart: Redis stops mid-run: running sessions keep
// working, new ones fail with a clear error, /health says 503. Redis comes
// back empty; the managers rebuild the shared state on their own.
func TestScaleRedisRestart(t *testing.T) {
	sc := newScale(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := dialLB(ctx, t, sc, client.Options{NoWait: true})
	runTask(t, a, `{"command":"set","key":"k","value":"a"}`)
	b := dialLB(ctx, t, sc, client.Options{NoWait: true})

	sc.redis.Stop()
	for _, m := range sc.managers {
		eventually(t, m.name+" to answer 503", func() bool { return m.health(t) == http.StatusServiceUnavailable })
	}
	sc.waitLB(t, "DOWN", "DOWN")
	require.JSONEq(t, `{"key":"k","value":"a"}`, string(runTask(t, a, `{"command":"get","key":"k"}`)))
	_, err := client.Dial(ctx, "ws://"+sc.managers[0].base+"/ws", client.Options{NoWait: true})
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "unavailable", ce.Code)
	// A session ends during the outage; its slot is given back afterwards.
	require.NoError(t, b.Logout())

	sc.redis.Restart()
	restarted := time.Now()
	for _, m := range sc.managers {
		eventually(t, m.name+" to recover", func() bool { return m.health(t) == http.StatusOK })
		t.Logf("%s healthy %s after Redis restarted", m.name, time.Since(restarted).Round(time.Millisecond))
		eventually(t, m.name+" to count the one running session", func() bool {
			st := m.status(t)
			return st.Capacity.Busy == 1 && st.Capacity.Slots == 8
		})
	}
	sc.waitLB(t, "UP", "UP")
	// The surviving session is resumable again, through either manager.
	_ = a.Drop()
	r := dialLB(ctx, t, sc, client.Options{Resume: a.Resume})
	require.Equal(t, a.Instance, r.Instance)
	require.JSONEq(t, `{"key":"k","value":"a"}`, string(runTask(t, r, `{"command":"get","key":"k"}`)))
	// New sessions are placed again.
	n := dialLB(ctx, t, sc, client.Options{NoWait: true})
	runTask(t, n, `{"command":"echo"}`)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
