package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
)

// Faults found by running drover from outside (issue 9): real drover
// processes, hit at the worst moment with kill -9, SIGSTOP and restarts.
// Each test drives the processes the way an operator's bad day would, and
// looks only at what clients, farms and logs show.

// wireFrame is one server frame as a client reads it.
type wireFrame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Data     json.RawMessage `json:"data"`
	Session  string          `json:"session"`
	Instance string          `json:"instance"`
	Resume   string          `json:"resume"`
	Position int             `json:"position"`
	Event    string          `json:"event"`
	Error    *client.Error   `json:"error"`
}

// rawSession is a client on the bare WebSocket that keeps every frame and
// the close it got, so that a test sees exactly what a client would.
type rawSession struct {
	ws      *websocket.Conn
	welcome wireFrame
	queued  int      // queued frames seen
	errs    []string // every error frame, raw
	closed  string   // the close (code and text) or the read error that ended the connection
}

// openRaw opens a session at wsURL and reads until its welcome, an error
// frame, the close or, with stopAtQueued, a queued frame. The outcome names
// how it ended: "welcome", "queued", "error", "closed" or "dial".
func openRaw(ctx context.Context, wsURL string, stopAtQueued bool) (*rawSession, string) {
	rs := &rawSession{}
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil {
			rs.closed = fmt.Sprintf("dial: %v (HTTP %d)", err, resp.StatusCode)
		} else {
			rs.closed = "dial: " + err.Error()
		}
		return rs, "dial"
	}
	rs.ws = ws
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(dl)
	}
	for {
		f, _, err := rs.read()
		if err != nil {
			return rs, "closed"
		}
		switch f.Type {
		case "welcome":
			rs.welcome = f
			_ = ws.SetReadDeadline(time.Time{})
			return rs, "welcome"
		case "queued":
			rs.queued++
			if stopAtQueued {
				return rs, "queued"
			}
		case "error": // read kept it
			// The close that follows tells its code.
			_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				if _, _, err := rs.read(); err != nil {
					break
				}
			}
			return rs, "error"
		}
	}
}

// read reads one frame; an error records how the connection ended.
func (rs *rawSession) read() (wireFrame, []byte, error) {
	_, b, err := rs.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			rs.closed = fmt.Sprintf("close %d %q", ce.Code, ce.Text)
		} else {
			rs.closed = err.Error()
		}
		return wireFrame{}, nil, err
	}
	var f wireFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return wireFrame{}, b, nil // binary results: not looked at here
	}
	if f.Type == "error" {
		rs.errs = append(rs.errs, string(b))
	}
	return f, b, nil
}

// task runs one task and returns its first result; an error frame or the
// end of the connection is an error.
func (rs *rawSession) task(id, data string, within time.Duration) (json.RawMessage, error) {
	msg := fmt.Sprintf(`{"type":"task","id":%q,"data":%s}`, id, data)
	if err := rs.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return nil, err
	}
	_ = rs.ws.SetReadDeadline(time.Now().Add(within))
	defer func() { _ = rs.ws.SetReadDeadline(time.Time{}) }()
	var result json.RawMessage
	for {
		f, raw, err := rs.read()
		if err != nil {
			return nil, fmt.Errorf("task %s: connection ended: %s", id, rs.closed)
		}
		var fid string
		_ = json.Unmarshal(f.ID, &fid)
		switch {
		case f.Type == "result" && fid == id:
			result = f.Data
		case f.Type == "done" && fid == id:
			return result, nil
		case f.Type == "error":
			return nil, fmt.Errorf("task %s: %s", id, raw)
		}
	}
}

// logout ends the session and waits for the manager's close.
func (rs *rawSession) logout() {
	_ = rs.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"logout"}`))
	_ = rs.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := rs.read(); err != nil {
			break
		}
	}
	_ = rs.ws.Close()
}

func (rs *rawSession) close() {
	if rs.ws != nil {
		_ = rs.ws.Close()
	}
}

// leaks returns what a message to a client should not carry: an internal
// address, a farm id, a URL path of the farm API, or a Go error chain
// ("a: b: c").
func leaks(msg string, farmIDs ...string) []string {
	var out []string
	for _, s := range []string{"127.0.0.1:", "dial tcp", "connection refused", "/api/v1/", "POST ", "context deadline"} {
		if strings.Contains(msg, s) {
			out = append(out, fmt.Sprintf("contains %q", s))
		}
	}
	for _, id := range farmIDs {
		if strings.Contains(msg, id) {
			out = append(out, fmt.Sprintf("names farm %s", id))
		}
	}
	if strings.Count(msg, ": ") >= 2 {
		out = append(out, "is a Go error chain")
	}
	return out
}

// errorMessages returns the messages of the error frames and the close
// text a client got.
func (rs *rawSession) errorMessages() []string {
	var out []string
	for _, raw := range rs.errs {
		var f wireFrame
		if json.Unmarshal([]byte(raw), &f) == nil && f.Error != nil {
			out = append(out, f.Error.Message)
		}
	}
	if i := strings.Index(rs.closed, `"`); i >= 0 {
		out = append(out, rs.closed[i:])
	}
	return out
}

// fetchStatus is m.status for goroutines other than the test's.
func fetchStatus(base string) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequest(http.MethodGet, "http://"+base+"/status", nil)
	if err != nil {
		return st, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken) // a manager's full status is an admin's
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: HTTP %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// signal sends sig to the process.
func (p *droverProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "%s %s", sig, p.name)
}

// requireLost checks that the session was told its instance is lost (an
// event, or a task's error frame with that code): a task reads what the
// manager sent, and fails.
func (ts *testSession) requireLost(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := ts.s.Execute(ctx, json.RawMessage(`{"command":"echo","n":1}`))
	require.Error(t, err, "the session is over")
	_, told := ts.ev.at("instance_lost")
	var ce *client.Error
	told = told || errors.As(err, &ce) && ce.Code == "instance_lost"
	require.True(t, told, "the session was told of instance_lost (the task ended with %v)", err)
}

// TestFaultFarmKillNewSessions (issue 9, fault 1): one manager, three farms
// with 4 slots, six sessions, two on each farm; kill -9 one farm and,
// within a second, open 10 sessions at once. Every one is welcomed (after
// a wait in the queue if nothing is free) on a live farm, and no client
// sees an internal error, an address, a farm id or an error chain.
func TestFaultFarmKillNewSessions(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	ids := []string{"farm-k0", "farm-k1", "farm-k2"}
	farms := map[string]*droverProc{}
	for _, id := range ids {
		farms[id] = startFarm(t, m, id, 4)
	}
	waitFarms(t, m, 10*time.Second, ids...)

	perFarm := map[string][]*testSession{}
	for range 6 {
		ts := openSession(t, m)
		f := m.status(t).farmOf(ts.s.Instance)
		require.NotEmpty(t, f)
		perFarm[f] = append(perFarm[f], ts)
	}
	for _, id := range ids {
		require.Len(t, perFarm[id], 2, "two sessions on %s", id)
	}
	const dead = "farm-k1"
	live := []string{"farm-k0", "farm-k2"}

	require.NoError(t, farms[dead].cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()

	const clients = 10
	type result struct {
		outcome string
		rs      *rawSession
		farm    string
		taskErr error
		took    time.Duration
	}
	results := make([]result, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r := &results[i]
			r.rs, r.outcome = openRaw(ctx, "ws://"+m.base+"/ws", false)
			r.took = time.Since(killed)
			if r.outcome != "welcome" {
				r.rs.close()
				return
			}
			st, err := fetchStatus(m.base)
			if err != nil {
				r.taskErr = err
			} else {
				r.farm = st.farmOf(r.rs.welcome.Instance)
			}
			if _, err := r.rs.task("t1", `{"command":"echo","n":1}`, 10*time.Second); err != nil && r.taskErr == nil {
				r.taskErr = err
			}
			// Give the slot back, so that the clients still queued get one.
			r.rs.logout()
		})
	}
	opened := time.Since(killed)
	close(start)
	wg.Wait()
	require.Less(t, opened, time.Second, "the sessions were opened within 1 s of the kill")

	welcomed, queuedFirst := 0, 0
	for i, r := range results {
		if r.rs.queued > 0 {
			queuedFirst++
		}
		for _, msg := range r.rs.errorMessages() {
			if l := leaks(msg, ids...); len(l) > 0 {
				t.Errorf("client %d: a message to the client %s: %s", i, strings.Join(l, ", "), msg)
			}
		}
		switch {
		case r.outcome != "welcome":
			t.Errorf("client %d: %s after %s, not welcome: error frames %v, %s", i, r.outcome,
				r.took.Round(time.Millisecond), r.rs.errs, r.rs.closed)
		case !slices.Contains(live, r.farm):
			t.Errorf("client %d: welcomed on instance %s of farm %q, not on a live farm", i, r.rs.welcome.Instance, r.farm)
		case r.taskErr != nil:
			t.Errorf("client %d: its first task failed: %v", i, r.taskErr)
		default:
			welcomed++
		}
	}
	t.Logf("%d of %d sessions opened %s after the kill were welcomed on a live farm (%d after a wait in the queue)",
		welcomed, clients, opened.Round(time.Millisecond), queuedFirst)

	// The sessions on the dead farm were told; the others go on.
	for _, ts := range perFarm[dead] {
		ts.requireLost(t)
	}
	for _, id := range live {
		for _, ts := range perFarm[id] {
			ts.echo(t)
		}
	}
}

// TestFaultStalledManager (issue 9, fault 4): two managers on Redis behind
// HAProxy, three farms heartbeating through HAProxy's farm frontend, six
// sessions over both managers. One manager is SIGSTOPped for 5 s and then
// continued. No session on any farm is lost: the other manager's sessions
// work throughout and after, the stopped manager's sessions resume through
// HAProxy on the same instance with their state, and no manager declares a
// farm dead.
func TestFaultStalledManager(t *testing.T) {
	const sessions = 6
	sc := newScaleFarms(t, 3, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	all := make([]*testSession, sessions)
	for i := range all {
		ts := &testSession{ev: &events{}}
		ts.s = dialLB(ctx, t, sc, client.Options{NoWait: true, OnEvent: ts.ev.on})
		runTask(t, ts.s, fmt.Sprintf(`{"command":"set","key":"k","value":%d}`, i))
		all[i] = ts
	}
	owner := map[string]string{} // session → manager
	farmOf := map[string]string{}
	for _, m := range sc.managers {
		for _, in := range m.status(t).Instances {
			owner[in.Session] = m.name
			farmOf[in.Session] = in.Farm
		}
	}
	stalled, other := sc.managers[0], sc.managers[1]
	var onStalled, onOther []int
	farmsUsed := map[string]bool{}
	for i, ts := range all {
		farmsUsed[farmOf[ts.s.ID]] = true
		switch owner[ts.s.ID] {
		case stalled.name:
			onStalled = append(onStalled, i)
		case other.name:
			onOther = append(onOther, i)
		default:
			t.Fatalf("session %s has no manager", ts.s.ID)
		}
	}
	require.NotEmpty(t, onStalled, "HAProxy spread the sessions over both managers")
	require.NotEmpty(t, onOther, "HAProxy spread the sessions over both managers")
	t.Logf("sessions %v on %s, %v on %s, over farms %v", onStalled, stalled.name, onOther, other.name, farmsUsed)
	instances := sc.farmInstances(t)
	require.Len(t, instances, sessions)

	// The other manager's sessions run tasks through the stall.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, i := range onOther {
		all[i].load(stop, &wg)
	}
	stalled.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()
	t.Cleanup(func() { _ = stalled.cmd.Process.Signal(syscall.SIGCONT) })
	time.Sleep(5 * time.Second) // the fault: the manager is stalled this long
	stalled.signal(t, syscall.SIGCONT)
	t.Logf("%s stalled for %s", stalled.name, time.Since(stoppedAt).Round(time.Millisecond))
	eventually(t, stalled.name+" to answer again", func() bool {
		return getJSON(t, "http://"+stalled.base+"/status", "", nil) == http.StatusOK
	})
	close(stop)
	wg.Wait()

	lost := 0
	for i, ts := range all {
		if at, ok := ts.ev.at("instance_lost"); ok {
			lost++
			t.Errorf("session %d (on %s, farm %s) got instance_lost %s after the stall began",
				i, owner[ts.s.ID], farmOf[ts.s.ID], at.Sub(stoppedAt).Round(time.Millisecond))
		}
	}
	for _, i := range onOther {
		ts := all[i]
		if err := ts.loadErr(); err != nil {
			t.Errorf("session %d on %s failed a task during the stall: %v", i, other.name, err)
			continue
		}
		res, err := ts.s.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`))
		if err != nil || len(res) != 1 {
			t.Errorf("session %d on %s after the stall: %v", i, other.name, err)
			continue
		}
		require.JSONEq(t, fmt.Sprintf(`{"key":"k","value":%d}`, i), string(res[0].Data))
	}
	for _, i := range onStalled {
		s := all[i].s
		_ = s.Drop()
		r, err := client.Dial(ctx, sc.wsURL(), client.Options{Resume: s.Resume})
		if err != nil {
			lost++
			t.Errorf("session %d of the stalled manager cannot resume: %v", i, err)
			continue
		}
		t.Cleanup(func() { _ = r.Drop() })
		require.Equal(t, s.ID, r.ID, "the same session")
		require.Equal(t, s.Instance, r.Instance, "on the same instance")
		require.JSONEq(t, fmt.Sprintf(`{"key":"k","value":%d}`, i), string(runTask(t, r, `{"command":"get","key":"k"}`)),
			"state kept")
	}
	// The farms still run every instance, by their own account.
	after := sc.farmInstances(t)
	for inst, farm := range instances {
		if _, ok := after[inst]; !ok {
			t.Errorf("instance %s on %s is gone", inst, farm)
		}
	}
	for _, m := range sc.managers {
		if strings.Contains(m.out.String(), "farm dead") {
			t.Errorf("%s declared farms dead: %s", m.name, grepLines(m.out.String(), "farm dead"))
		}
	}
	t.Logf("%d of %d sessions lost", lost, sessions)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}

// burstResult counts how sessions opened in a burst began.
type burstResult struct {
	opened, welcomed, queued, failed int
	failedBefore                     int // failures before ready() held
	firstFailures                    []string
	keep                             []*rawSession // the welcomed sessions, held open
}

// burst opens sessions one after another (wait allowed) until ready()
// holds and then n more, within 20 s. A welcomed session is held open, a
// queued one is closed at once: every session must begin with welcome or
// queued.
func burst(t *testing.T, m *droverProc, n int, ready func() bool) *burstResult {
	t.Helper()
	br := &burstResult{}
	t.Cleanup(func() {
		for _, rs := range br.keep {
			rs.close()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	after := -1 // sessions opened since ready() held
	for after < n {
		if time.Now().After(deadline) {
			t.Fatalf("burst: %d sessions opened in 20 s, %d of them after the farm came back", br.opened, max(after, 0))
		}
		if after < 0 && ready() {
			after = 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, outcome := openRaw(ctx, "ws://"+m.base+"/ws", true)
		cancel()
		br.opened++
		if after >= 0 {
			after++
		}
		switch outcome {
		case "welcome":
			br.welcomed++
			br.keep = append(br.keep, rs)
		case "queued":
			br.queued++
			rs.close()
		default:
			br.failed++
			if after < 0 {
				br.failedBefore++
			}
			if len(br.firstFailures) < 3 {
				br.firstFailures = append(br.firstFailures, fmt.Sprintf("%s: %v %s", outcome, rs.errs, rs.closed))
			}
			rs.close()
		}
	}
	return br
}

// TestFaultFarmComesBack (issue 9, faults 5 and 1): a farm declared dead
// that comes back (SIGSTOP for 6 s, then SIGCONT) still runs the instances
// the manager gave up; a farm killed with -9 is away for a while, then
// restarted under the same id. Sessions opened straight after the SIGCONT,
// while the killed farm is away, and after its restart begin with welcome
// or queued, never an error frame.
func TestFaultFarmComesBack(t *testing.T) {
	t.Parallel()
	// Two farms of 2 slots, every slot busy: the returning farm's slots are
	// all the manager can place on once it is back.
	setup := func(t *testing.T, back *droverProc, m *droverProc, other string) []*testSession {
		t.Helper()
		waitFarms(t, m, 10*time.Second, back.name, other)
		var on []*testSession
		for range 4 {
			ts := openSession(t, m)
			if m.status(t).farmOf(ts.s.Instance) == back.name {
				on = append(on, ts)
			}
		}
		require.Len(t, on, 2, "two sessions on %s", back.name)
		require.Len(t, back.farmStatus(t).Instances, 2)
		return on
	}
	report := func(t *testing.T, what string, br *burstResult) {
		t.Helper()
		t.Logf("%s: %d sessions opened: %d welcome, %d queued, %d failed (%d of them before the farm was back)",
			what, br.opened, br.welcomed, br.queued, br.failed, br.failedBefore)
		if br.failed > 0 {
			t.Errorf("%s: %d of %d new sessions did not begin with welcome or queued; the first: %s",
				what, br.failed, br.opened, strings.Join(br.firstFailures, "; "))
		}
	}

	t.Run("sigstop", func(t *testing.T) {
		t.Parallel()
		m := startManager(t)
		a := startFarm(t, m, "farm-s0", 2)
		startFarm(t, m, "farm-s1", 2)
		onA := setup(t, a, m, "farm-s1")

		a.signal(t, syscall.SIGSTOP)
		stopped := time.Now()
		t.Cleanup(func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) })
		// Declared dead after 3 missed heartbeats: its sessions are told.
		waitFarms(t, m, 6*time.Second, "farm-s1")
		for _, ts := range onA {
			ts.requireLost(t)
		}
		time.Sleep(6*time.Second - time.Since(stopped)) // the fault: the farm is frozen 6 s
		a.signal(t, syscall.SIGCONT)
		br := burst(t, m, 20, func() bool { return slices.Contains(m.status(t).farmIDs(), "farm-s0") })
		report(t, "after SIGCONT", br)
	})

	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		m := startManager(t)
		stateDir := t.TempDir()
		b := startFarm(t, m, "farm-r0", 2, "--state-dir", stateDir)
		startFarm(t, m, "farm-r1", 2)
		onB := setup(t, b, m, "farm-r1")

		b.signal(t, syscall.SIGKILL)
		_ = b.wait(t, 10*time.Second)
		for _, ts := range onB {
			ts.requireLost(t)
		}
		// Before it is back, the manager cannot reach it: sessions wait.
		away := burst(t, m, 5, func() bool { return true })
		report(t, "while the killed farm is away", away)
		// The same id and state directory: it kills what its previous run
		// left behind and registers again.
		again := startFarm(t, m, "farm-r0", 2, "--state-dir", stateDir)
		br := burst(t, m, 20, func() bool { return strings.Contains(again.out.String(), "registered with manager") })
		report(t, "after the restart", br)
	})
}

// TestFaultManagerRestartsAlone: a manager without Redis, killed with -9
// and started again on its address. Its farm registers again, listing the
// instances of the sessions that died with the manager. The restarted
// manager is the farm's only one and its store was in its memory: it has
// the farm stop them at once, so that a session opened after the restart
// gets an instance now, not after the farm's orphan sweep (45 s), while
// the farm's every slot would be taken by an instance nobody can reach.
func TestFaultManagerRestartsAlone(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	f := startFarm(t, m, "farm-alone", 2)
	waitFarms(t, m, 10*time.Second, "farm-alone")
	for range 2 {
		openSession(t, m).echo(t)
	}
	require.Len(t, f.farmStatus(t).Instances, 2)

	m.signal(t, syscall.SIGKILL)
	_ = m.wait(t, 10*time.Second)
	again := startManager(t, "--addr", m.base)
	waitFarms(t, again, 10*time.Second, "farm-alone")
	// Waits in the queue while the farm stops the two; Dial gives up
	// after 20 s, long before the orphan sweep.
	openSessionOpts(t, again, false).echo(t)
	require.Contains(t, f.out.String(), "stopping the instances the managers gave up on")
}

// TestFaultReuseResetsState (issue 9, fault 6): with release: reuse, the
// next session on the same instance finds nothing of the previous one's.
// It assumes the pool key reset (a task the instance runs between
// sessions), which the reference worker answers once its state is empty.
func TestFaultReuseResetsState(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "manager.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`pools:
  - name: default
    release: reuse
    reset: {"command": "reset"}
`), 0o600))
	m := startManager(t, "--config", cfg)
	startFarm(t, m, "farm-u0", 1)
	waitFarms(t, m, 10*time.Second, "farm-u0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pid := func(s *client.Session) int {
		var v struct {
			PID int `json:"pid"`
		}
		require.NoError(t, json.Unmarshal(runTask(t, s, `{"command":"pid"}`), &v))
		require.Positive(t, v.PID)
		return v.PID
	}
	s1, err := client.Dial(ctx, "ws://"+m.base+"/ws", client.Options{})
	require.NoError(t, err)
	pid1 := pid(s1)
	runTask(t, s1, `{"command":"set","key":"a","value":1}`)
	require.JSONEq(t, `{"key":"a","value":1}`, string(runTask(t, s1, `{"command":"get","key":"a"}`)))
	require.NoError(t, s1.Logout())

	s2, err := client.Dial(ctx, "ws://"+m.base+"/ws", client.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s2.Drop() })
	require.Equal(t, s1.Instance, s2.Instance, "the one slot's instance is reused")
	require.Equal(t, pid1, pid(s2), "the same process")
	require.JSONEq(t, `{"key":"a","value":null}`, string(runTask(t, s2, `{"command":"get","key":"a"}`)),
		"the next session finds nothing of the previous one's")
}
