//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/clustertest"
	"github.com/drover-dev/drover/session"
)

// cluster marks a test that runs a cluster of containers. The tests are
// built with the chaos tag only (make chaos-smoke), so `make test` neither
// runs nor skips them.
func cluster(t *testing.T) { t.Helper() }

// wsURL is the WebSocket endpoint through HAProxy.
func wsURL(c *clustertest.Cluster) string {
	return "ws" + strings.TrimPrefix(c.URL, "http") + "/ws"
}

func echo(ctx context.Context, t *testing.T, s *client.Session, n int) {
	t.Helper()
	for i := range n {
		res, err := s.Execute(ctx, json.RawMessage(`{"command":"echo","n":`+strconv.Itoa(i)+`}`))
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if len(res) != 1 || !strings.Contains(string(res[0].Data), `"n":`+strconv.Itoa(i)) {
			t.Fatalf("echo %d: results %q", i, res)
		}
	}
}

// TestClusterFarmKill opens a session through HAProxy from the host, kills
// its farm (SIGKILL of the container) under a running task and sees
// instance_lost, then a new session work on the other farm. It logs what
// the client saw and when.
func TestClusterFarmKill(t *testing.T) {
	cluster(t)
	c := clustertest.Start(t, clustertest.Options{Managers: 2, Farms: 2, Instances: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A farm dies under a running task.
	var lostEvent atomic.Int64
	s, err := client.Dial(ctx, wsURL(c), client.Options{OnEvent: func(name string, _ json.RawMessage) {
		if name == session.EventInstanceLost {
			lostEvent.CompareAndSwap(0, time.Now().UnixNano())
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	echo(ctx, t, s, 5)
	_, farm, err := c.Where(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	other := c.Farms[0]
	if other == farm {
		other = c.Farms[1]
	}
	var killed time.Time
	took := lostDuringTask(ctx, t, c, s, "killed", func() { killed = time.Now(); c.Kill(farm) })
	t.Logf("farm %s killed: the running task got %s after %.2f s", farm, session.CodeInstanceLost, took.Seconds())
	if at := lostEvent.Load(); at != 0 {
		t.Logf("farm %s killed: the instance_lost event came after %.2f s", farm, time.Unix(0, at).Sub(killed).Seconds())
	}
	_ = s.Drop()

	s2, err := client.Dial(ctx, wsURL(c), client.Options{})
	if err != nil {
		t.Fatalf("a new session after %s was killed: %v", farm, err)
	}
	echo(ctx, t, s2, 3)
	t.Logf("farm %s killed: a new session answered its first tasks %.2f s after the kill", farm, time.Since(killed).Seconds())
	_, farm2, err := c.Where(s2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if farm2 != other {
		t.Fatalf("the new session runs on %s, want %s (%s is dead)", farm2, other, farm)
	}
	if err := s2.Logout(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	c.Restart(farm)
	c.WaitFarmSeen(farm, back, time.Minute)
	t.Logf("farm %s restarted: every manager heard from it %.2f s after the restart began", farm, time.Since(back).Seconds())
	s5, err := client.Dial(ctx, wsURL(c), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	echo(ctx, t, s5, 3)
	if err := s5.Logout(); err != nil {
		t.Fatal(err)
	}
}

// TestClusterManagerPause pauses (SIGSTOP) the manager of a session; the
// client drops its stalled connection and resumes through HAProxy, which
// must land on the other manager, on the same instance with its state,
// within 2 s of the pause. When the paused manager wakes, the session stays
// where it resumed.
func TestClusterManagerPause(t *testing.T) {
	cluster(t)
	c := clustertest.Start(t, clustertest.Options{Managers: 2, Farms: 2, Instances: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	s3, err := client.Dial(ctx, wsURL(c), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	echo(ctx, t, s3, 3)
	if _, err := s3.Execute(ctx, json.RawMessage(`{"command":"set","key":"k","value":"v1"}`)); err != nil {
		t.Fatal(err)
	}
	mgr, _, err := c.Where(s3.ID)
	if err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	c.Pause(mgr)
	asleep := true
	defer func() {
		if asleep {
			c.Unpause(mgr)
		}
	}()
	// The client sees its connection stall: it drops it and resumes with
	// its token, trying again every 250 ms while HAProxy still sends it to
	// the paused manager.
	_ = s3.Drop()
	var s4 *client.Session
	attempts := 0
	for s4 == nil {
		if ctx.Err() != nil {
			t.Fatalf("no resume of session %s within the test's time after %s was paused (%d attempts)", s3.ID, mgr, attempts)
		}
		attempts++
		dctx, dcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		s4, err = client.Dial(dctx, wsURL(c), client.Options{Resume: s3.Resume})
		dcancel()
		if err != nil {
			t.Logf("resume attempt %d, %.2f s after the pause: %v", attempts, time.Since(paused).Seconds(), err)
			s4 = nil
		}
	}
	res, err := s4.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`))
	if err != nil {
		t.Fatalf("get on the resumed session: %v", err)
	}
	t.Logf("manager %s paused: session %s resumed, state read back %.2f s after the pause (%d attempts): %s",
		mgr, s3.ID, time.Since(paused).Seconds(), attempts, res[0].Data)
	if took := time.Since(paused); took > 2*time.Second {
		t.Errorf("the session resumed %.2f s after its manager was paused, want within 2 s", took.Seconds())
	}
	if s4.ID != s3.ID || s4.Instance != s3.Instance {
		t.Fatalf("resumed session %s on instance %s, want %s on %s", s4.ID, s4.Instance, s3.ID, s3.Instance)
	}
	if !strings.Contains(string(res[0].Data), "v1") {
		t.Fatalf("the resumed session lost its state: get k = %s", res[0].Data)
	}

	// The manager wakes: the session stays where it resumed and keeps
	// working; the woken manager does not take it back.
	c.Unpause(mgr)
	asleep = false
	woke := time.Now()
	waitFor(t, 10*time.Second, mgr+" answering again", func() bool {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		defer scancel()
		_, err := c.Status(sctx, mgr)
		return err == nil
	})
	for i := range 5 {
		if _, err := s4.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`)); err != nil {
			for _, m := range c.Managers {
				t.Logf("%s:\n%s", m, c.Logs(m))
			}
			t.Fatalf("task %d on the resumed session %.2f s after %s woke: %v", i, time.Since(woke).Seconds(), mgr, err)
		}
	}
	if now, _, err := c.Where(s4.ID); err != nil || now == mgr {
		t.Fatalf("after %s woke, session %s is held by %q (%v), want the other manager", mgr, s4.ID, now, err)
	}
	if err := s4.Logout(); err != nil {
		t.Fatal(err)
	}
}

// TestClusterFarmPartition cuts a farm off the network while it runs a
// session's task and a conversion job (the "Must show"): the
// session's client hears instance_lost within 3.5 s; the job's lease
// expires and the job is reclaimed, and ends SUCCESS on the other farm
// once, with one attempt's output and one webhook; when the farm is back,
// it stops the instances the managers gave up (its instance processes are
// the instances the managers list), the lost session cannot be resumed,
// and its late attempt changes nothing.
func TestClusterFarmPartition(t *testing.T) {
	cluster(t)
	c := clustertest.Start(t, clustertest.Options{Managers: 2, Farms: 2, Instances: 2,
		ManagerArgs: []string{"--job-lease=6s"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hooks := startReceiver(t, c)
	ld := &load{c: c, l: newLedger(), hooks: hooks}

	// Every instance slot taken: each farm has sessions.
	var sessions []*client.Session
	for range 4 {
		s, err := client.Dial(ctx, wsURL(c), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		echo(ctx, t, s, 1)
		sessions = append(sessions, s)
	}
	// A conversion long enough to be cut off in the middle.
	item, err := ld.upload(ctx, "grid.obj", gridOBJ(450))
	if err != nil {
		t.Fatal(err)
	}
	var farm string
	waitFor(t, 60*time.Second, "a farm running the grid's converter", func() bool {
		farm = converting(ctx, c)
		return farm != ""
	})
	other := c.Farms[0]
	if other == farm {
		other = c.Farms[1]
	}
	var s *client.Session
	var others []*client.Session // the other farm's
	for _, ss := range sessions {
		if _, f, err := c.Where(ss.ID); err == nil && f == farm {
			s = ss
		} else if f == other {
			others = append(others, ss)
		}
	}
	if s == nil {
		t.Fatalf("no session on %s, which runs the job", farm)
	}
	cut := time.Now()
	lost := lostDuringTask(ctx, t, c, s, "cut off", func() { c.Disconnect(farm) })
	t.Logf("farm %s cut off: the running task got %s after %.2f s", farm, session.CodeInstanceLost, lost.Seconds())
	if lost > 3500*time.Millisecond {
		t.Errorf("instance_lost came %.2f s after the partition, want within 3.5 s", lost.Seconds())
	}
	_ = s.Drop()

	// The job is reclaimed: the other farm converts it, and it ends.
	waitFor(t, 60*time.Second, "the job running on "+other, func() bool { return converting(ctx, c) == other })
	t.Logf("farm %s cut off: its job was reclaimed by %s %.1f s after the cut", farm, other, time.Since(cut).Seconds())
	j := &jobRec{item: item, name: "grid.obj"}
	ld.l.job(j)
	ld.follow(ctx, j, 2*time.Minute)
	if j.final == nil || j.final["conversionState"] != "SUCCESS" {
		t.Fatalf("the reclaimed job ended %v (states %v), want SUCCESS", j.final["conversionState"], j.states)
	}
	t.Logf("the reclaimed job ended SUCCESS %.1f s after the cut, after %v attempts", time.Since(cut).Seconds(), j.final["attempts"])

	back := time.Now()
	c.Connect(farm)
	c.WaitFarmSeen(farm, back, time.Minute)
	t.Logf("farm %s reconnected: every manager heard from it %.2f s after", farm, time.Since(back).Seconds())
	// The farm stops what the managers gave up, and its late attempt ends.
	waitFor(t, 30*time.Second, farm+" running only the instances the managers list, and no job", func() bool {
		ch := checkOrphansOf(ctx, c, farm)
		m, err := c.Metrics(ctx, farm)
		return ch.ok && err == nil && m["drover_farm_jobs_running"] == 0
	})
	if _, err := client.Dial(ctx, wsURL(c), client.Options{Resume: s.Resume}); err == nil {
		t.Fatalf("the session lost with %s resumed after it came back", farm)
	}
	for _, ss := range others {
		echo(ctx, t, ss, 1) // the other farm's sessions go on
	}
	// Still the one end: the item, its output and its webhooks.
	final := j.final
	j.final, j.states = nil, nil
	ld.follow(ctx, j, 10*time.Second)
	jobs, webhooks, _ := checkJobs(c, ld.l, hooks)
	if !jobs.ok || !webhooks.ok {
		t.Fatalf("after %s came back: %s; %s", farm, jobs.detail, webhooks.detail)
	}
	if j.final["outputs"] == nil || fmt.Sprint(j.final["outputs"]) != fmt.Sprint(final["outputs"]) || j.final["updated"] != final["updated"] {
		t.Fatalf("after %s came back the item changed: %v, was %v", farm, j.final, final)
	}
	if n := len(hooks.deliveries(item)); n != 1 {
		t.Fatalf("the item's webhook came as %d deliveries, want 1", n)
	}
	s2, err := client.Dial(ctx, wsURL(c), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	echo(ctx, t, s2, 3)
	if err := s2.Logout(); err != nil {
		t.Fatal(err)
	}
}

// converting returns the farm that runs a converter, or "".
func converting(ctx context.Context, c *clustertest.Cluster) string {
	for _, f := range c.Farms {
		procs, err := c.Processes(ctx, f)
		if err != nil {
			continue
		}
		for _, p := range procs {
			if strings.Contains(p, "assimp") {
				return f
			}
		}
	}
	return ""
}

// gridOBJ is an n×n grid of squares in two triangles each: a mesh large
// enough that assimp takes seconds over it.
func gridOBJ(n int) string {
	var b strings.Builder
	for i := 0; i <= n; i++ {
		for j := 0; j <= n; j++ {
			fmt.Fprintf(&b, "v %d %d %d\n", i, j, (i*j)%7)
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			a := i*(n+1) + j + 1
			fmt.Fprintf(&b, "f %d %d %d\nf %d %d %d\n", a, a+1, a+n+2, a, a+n+2, a+n+1)
		}
	}
	return b.String()
}

// waitFor polls cond every 100 ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; !cond(); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}

// lostDuringTask starts a long task in s, waits until a manager counts it
// in flight, breaks its farm with fault (done is what the fault did, for
// messages), and returns how long after the fault the task was answered
// with instance_lost; any other answer, or none within 30 s, fails t.
func lostDuringTask(ctx context.Context, t *testing.T, c *clustertest.Cluster, s *client.Session, done string, fault func()) time.Duration {
	t.Helper()
	type outcome struct {
		err error
		at  time.Time
	}
	answered := make(chan outcome, 1)
	go func() {
		_, err := s.Execute(ctx, json.RawMessage(`{"command":"sleep","ms":60000}`))
		answered <- outcome{err, time.Now()}
	}()
	// The task is on the instance once a manager counts it in flight.
	waitFor(t, 10*time.Second, "the sleep task in flight", func() bool {
		for _, m := range c.Managers {
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			st, err := c.Status(sctx, m)
			scancel()
			if err != nil {
				continue
			}
			for _, ss := range st.Sessions {
				if ss.ID == s.ID && ss.TasksInFlight > 0 {
					return true
				}
			}
		}
		return false
	})
	at := time.Now()
	fault()
	var o outcome
	select {
	case o = <-answered:
	case <-time.After(30 * time.Second):
		t.Fatalf("no answer to the running task 30 s after its farm was %s", done)
	}
	var se *client.Error
	if !errors.As(o.err, &se) || se.Code != session.CodeInstanceLost {
		t.Fatalf("the task on the farm %s ended with %v, want %s", done, o.err, session.CodeInstanceLost)
	}
	return o.at.Sub(at)
}
