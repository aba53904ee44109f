package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// One manager and several farms, each a real drover process on loopback.

const (
	farmToken  = "cluster-farm-token-5be1d0"
	adminToken = "cluster-admin-token-93c7aa"
)

type droverProc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer // stdout and stderr
	base string               // host:port from the banner
	done chan struct{}
	err  error // set when done is closed
}

var (
	managerBanner = regexp.MustCompile(`farms register at http://([0-9.:]+)/`)
	farmBanner    = regexp.MustCompile(`listening on +http://([0-9.:]+)`)
)

// startDrover runs the test binary as drover with args and waits for the
// banner line matching re (nil: do not wait).
func startDrover(t *testing.T, name string, env []string, re *regexp.Regexp, args ...string) *droverProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(append(os.Environ(), "DROVER_TEST_MAIN=1"), env...)
	p := &droverProc{name: name, cmd: cmd, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = p.out
	require.NoError(t, cmd.Start())
	banner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			_, _ = p.out.Write([]byte(line + "\n"))
			if re != nil {
				if m := re.FindStringSubmatch(line); m != nil {
					select {
					case banner <- m[1]:
					default:
					}
				}
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	if re == nil {
		return p
	}
	select {
	case p.base = <-banner:
	case <-p.done:
		t.Fatalf("%s exited before its banner: %v\n%s", name, p.err, p.out.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s printed no banner\n%s", name, p.out.String())
	}
	return p
}

// wait waits until the process exits and returns its error.
func (p *droverProc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("%s did not exit within %s", p.name, within)
		return nil
	}
}

func (p *droverProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startManager(t *testing.T, args ...string) *droverProc {
	t.Helper()
	return startDrover(t, "manager", nil, managerBanner, append([]string{"manager", "--addr", "127.0.0.1:0",
		"--farm-token", farmToken, "--admin-token", adminToken, "--data", t.TempDir(), "--log-level", "debug"}, args...)...)
}

func startFarm(t *testing.T, m *droverProc, id string, slots int, args ...string) *droverProc {
	t.Helper()
	return startDrover(t, id, nil, farmBanner, append([]string{"farm", "--manager", "http://" + m.base,
		"--token", farmToken, "--addr", "127.0.0.1:0", "--id", id, "--instances", fmt.Sprint(slots),
		"--state-dir", t.TempDir(), "--log-level", "debug"}, args...)...)
}

type clusterStatus struct {
	Capacity struct {
		Slots   int  `json:"slots"`
		Busy    int  `json:"busy"`
		Healthy bool `json:"healthy"`
	} `json:"capacity"`
	Farms []struct {
		ID       string            `json:"id"`
		Slots    int               `json:"slots"`
		Draining bool              `json:"draining"`
		Priority int               `json:"priority"`
		Labels   map[string]string `json:"labels"`
		Pools    []string          `json:"pools"`
	} `json:"farms"`
	Instances []struct {
		ID      string `json:"id"`
		Farm    string `json:"farm"`
		PID     int    `json:"pid"`
		Session string `json:"session"`
	} `json:"instances"`
}

func getJSON(t *testing.T, url, token string, v any) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp.StatusCode
}

func (p *droverProc) status(t *testing.T) clusterStatus {
	t.Helper()
	var st clusterStatus
	token := "" // a process without an admin token shows its full status to loopback callers
	if slices.Contains(p.cmd.Args, "--admin-token") {
		token = adminToken
	}
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+p.base+"/status", token, &st))
	return st
}

func (p *droverProc) health(t *testing.T) int {
	t.Helper()
	return getJSON(t, "http://"+p.base+"/health", "", nil)
}

func (st clusterStatus) farmIDs() []string {
	var ids []string
	for _, f := range st.Farms {
		ids = append(ids, f.ID)
	}
	sort.Strings(ids)
	return ids
}

// farmOf returns the farm an instance runs on.
func (st clusterStatus) farmOf(instance string) string {
	for _, in := range st.Instances {
		if in.ID == instance {
			return in.Farm
		}
	}
	return ""
}

func (st clusterStatus) pidOf(instance string) int {
	for _, in := range st.Instances {
		if in.ID == instance {
			return in.PID
		}
	}
	return 0
}

func waitFarms(t *testing.T, m *droverProc, within time.Duration, ids ...string) {
	t.Helper()
	sort.Strings(ids)
	deadline := time.Now().Add(within)
	for {
		got := m.status(t).farmIDs()
		if slices.Equal(got, ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the manager lists farms %v, want %v", got, ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type farmStatus struct {
	ID        string `json:"id"`
	Slots     int    `json:"slots"`
	Free      int    `json:"free"`
	Draining  bool   `json:"draining"`
	Instances []struct {
		ID string `json:"id"`
	} `json:"instances"`
}

func (p *droverProc) farmStatus(t *testing.T) farmStatus {
	t.Helper()
	var st farmStatus
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+p.base+"/api/v1/status", farmToken, &st))
	return st
}

// events records the session events a client sees, with their time.
type events struct {
	mu  sync.Mutex
	got map[string]time.Time
}

func (e *events) on(name string, _ json.RawMessage) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.got == nil {
		e.got = map[string]time.Time{}
	}
	if _, seen := e.got[name]; !seen {
		e.got[name] = time.Now()
	}
}

func (e *events) at(name string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	at, ok := e.got[name]
	return at, ok
}

type testSession struct {
	s   *client.Session
	ev  *events
	err atomic.Pointer[error] // the load loop's first error
}

// openSession opens a session on the manager; it fails at once when no
// instance is free.
func openSession(t *testing.T, m *droverProc) *testSession { return openSessionOpts(t, m, true) }

func openSessionOpts(t *testing.T, m *droverProc, noWait bool) *testSession {
	t.Helper()
	ts := &testSession{ev: &events{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, "ws://"+m.base+"/ws", client.Options{NoWait: noWait, OnEvent: ts.ev.on})
	require.NoError(t, err)
	ts.s = s
	t.Cleanup(func() { _ = s.Drop() })
	return ts
}

func (ts *testSession) echo(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ts.s.Execute(ctx, json.RawMessage(`{"command":"echo","n":1}`))
	require.NoError(t, err)
	require.Len(t, res, 1)
}

// load runs echo tasks until stop is closed or the connection ends; the
// first failure is kept. A failed task does not end it: the frames that
// follow (an event) are read by the next task.
func (ts *testSession) load(stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := ts.s.Execute(ctx, json.RawMessage(`{"command":"echo","n":1}`))
			cancel()
			if err != nil {
				ts.err.CompareAndSwap(nil, &err)
				if ce := (*client.Error)(nil); !errors.As(err, &ce) {
					return
				}
			}
		}
	})
}

func (ts *testSession) loadErr() error {
	if p := ts.err.Load(); p != nil {
		return *p
	}
	return nil
}

// requireNoSecrets checks that no process wrote a token.
func requireNoSecrets(t *testing.T, procs ...*droverProc) {
	t.Helper()
	for _, p := range procs {
		out := p.out.String()
		require.NotEmpty(t, out)
		for _, secret := range []string{farmToken, adminToken, "wrong-farm-token-0d4e"} {
			require.NotContains(t, out, secret, "%s logged a token", p.name)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *droverProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t, 20*time.Second), "%s exits 0 on SIGTERM", p.name)
}

func TestClusterSpreadFarmDeathAndHealth(t *testing.T) {
	t.Parallel()
	m := startManager(t, "--health-threshold", "0.8")
	farms := map[string]*droverProc{}
	for _, id := range []string{"farm-a", "farm-b", "farm-c"} {
		farms[id] = startFarm(t, m, id, 2)
	}
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b", "farm-c")
	st := m.status(t)
	require.Equal(t, 6, st.Capacity.Slots)
	require.Equal(t, http.StatusOK, m.health(t))

	// Sessions go where the most slots are free: the first three to three
	// farms, the next two to two of them.
	var sessions []*testSession
	perFarm := map[string][]*testSession{}
	for i := range 5 {
		ts := openSession(t, m)
		sessions = append(sessions, ts)
		f := m.status(t).farmOf(ts.s.Instance)
		require.NotEmpty(t, f)
		perFarm[f] = append(perFarm[f], ts)
		if i == 2 {
			require.Len(t, perFarm, 3, "one session per farm first")
		}
	}
	var frees []int
	var lone string // the farm with one session
	for id, p := range farms {
		fs := p.farmStatus(t)
		frees = append(frees, fs.Free)
		require.Len(t, fs.Instances, 2-fs.Free, "farm %s", id)
		if len(perFarm[id]) == 1 {
			lone = id
		}
	}
	sort.Ints(frees)
	require.Equal(t, []int{0, 0, 1}, frees)
	require.NotEmpty(t, lone)
	require.Equal(t, http.StatusServiceUnavailable, m.health(t), "5 of 6 slots busy, threshold 0.8")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, ts := range sessions {
		ts.load(stop, &wg)
	}
	time.Sleep(200 * time.Millisecond) // under load

	victim := perFarm[lone][0]
	victimPID := m.status(t).pidOf(victim.s.Instance)
	require.Positive(t, victimPID)
	killed := time.Now()
	require.NoError(t, farms[lone].cmd.Process.Signal(syscall.SIGKILL))

	require.Eventually(t, func() bool { _, ok := victim.ev.at("instance_lost"); return ok },
		3500*time.Millisecond, 10*time.Millisecond, "the session on the dead farm is told")
	at, _ := victim.ev.at("instance_lost")
	t.Logf("instance_lost %s after the kill", at.Sub(killed))
	require.Error(t, victim.loadErr(), "its session is over")
	var live []string
	for id := range farms {
		if id != lone {
			live = append(live, id)
		}
	}
	waitFarms(t, m, 3500*time.Millisecond-time.Since(killed), live...)
	requireAllGone(t, []int{victimPID}, 5*time.Second)

	st = m.status(t)
	require.Equal(t, 4, st.Capacity.Slots, "the dead farm's slots are gone")
	require.Equal(t, 4, st.Capacity.Busy)
	require.Equal(t, http.StatusServiceUnavailable, m.health(t), "4 of 4 busy")

	// The others were not disturbed, and go on.
	time.Sleep(200 * time.Millisecond)
	var others []*testSession
	for _, ts := range sessions {
		if ts != victim {
			require.NoError(t, ts.loadErr())
			_, lost := ts.ev.at("instance_lost")
			require.False(t, lost)
			others = append(others, ts)
		}
	}
	close(stop)
	wg.Wait()
	for _, ts := range others {
		require.NoError(t, ts.loadErr())
		ts.echo(t)
	}

	// A slot frees up on a live farm: health recovers, and a new session
	// lands there (once the farm has stopped the old instance).
	freed := others[0]
	freedFarm := m.status(t).farmOf(freed.s.Instance)
	require.NoError(t, freed.s.Logout())
	require.Eventually(t, func() bool { return m.health(t) == http.StatusOK }, 10*time.Second, 20*time.Millisecond,
		"3 of 4 busy")
	ts := openSessionOpts(t, m, false)
	require.Equal(t, freedFarm, m.status(t).farmOf(ts.s.Instance))
	ts.echo(t)
	require.Equal(t, http.StatusServiceUnavailable, m.health(t))

	m.stop(t)
	for id, p := range farms {
		if id != lone {
			p.stop(t)
		}
	}
	requireNoSecrets(t, append([]*droverProc{m}, farms["farm-a"], farms["farm-b"], farms["farm-c"])...)
}

func TestClusterDrain(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	a := startFarm(t, m, "farm-a", 2)
	b := startFarm(t, m, "farm-b", 2)
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b")

	// Equal farms: the lower id first.
	onA := openSession(t, m)
	require.Equal(t, "farm-a", m.status(t).farmOf(onA.s.Instance))

	drain := func(token, id string) int {
		req, err := http.NewRequest("POST", "http://"+m.base+"/api/v1/farms/"+id+"/drain", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, drain(farmToken, "farm-a"), "the farm token is no admin token")
	require.Equal(t, http.StatusAccepted, drain(adminToken, "farm-a"))
	require.Eventually(t, func() bool { return a.farmStatus(t).Draining }, 5*time.Second, 20*time.Millisecond,
		"the farm learns it from its heartbeat")
	require.Equal(t, 2, m.status(t).Capacity.Slots, "a draining farm's slots leave the capacity")

	// New sessions go elsewhere; the old one goes on.
	for range 2 {
		ts := openSession(t, m)
		require.Equal(t, "farm-b", m.status(t).farmOf(ts.s.Instance))
	}
	onA.echo(t)
	_, told := onA.ev.at("draining")
	require.True(t, told, "the session heard of the drain")
	require.False(t, a.exited())

	// It ends: the farm is empty, deregisters and exits 0.
	require.NoError(t, onA.s.Logout())
	require.NoError(t, a.wait(t, 10*time.Second))
	require.Contains(t, a.out.String(), "deregistered from manager")
	waitFarms(t, m, time.Second, "farm-b")

	// SIGTERM drains too.
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool { return len(m.status(t).Farms) == 1 && m.status(t).Farms[0].Draining },
		5*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.False(t, b.exited(), "its sessions are still running")
	st := m.status(t)
	for _, in := range st.Instances {
		require.Equal(t, "farm-b", in.Farm)
	}
	require.Len(t, st.Instances, 2)
	m.stop(t) // the manager's shutdown ends the sessions
	require.NoError(t, b.wait(t, 15*time.Second), "a drained farm exits 0")
	requireNoSecrets(t, m, a, b)
}

func TestClusterWrongFarmToken(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	f := startDrover(t, "farm", []string{"DROVER_TOKEN=wrong-farm-token-0d4e"}, farmBanner, "farm",
		"--manager", "http://"+m.base, "--addr", "127.0.0.1:0", "--id", "farm-x", "--instances", "2",
		"--state-dir", t.TempDir(), "--log-level", "debug")
	require.Eventually(t, func() bool {
		return strings.Contains(f.out.String(), "the manager refused the farm token") &&
			strings.Contains(m.out.String(), "unauthorized API request")
	}, 10*time.Second, 20*time.Millisecond)
	st := m.status(t)
	require.Empty(t, st.Farms, "nothing registered")
	require.Equal(t, 0, st.Capacity.Slots)
	require.Equal(t, http.StatusServiceUnavailable, m.health(t), "no capacity")

	f.stop(t)
	m.stop(t)
	requireNoSecrets(t, m, f)
}

func TestFarmConfigFileAndEnv(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	cfg := filepath.Join(t.TempDir(), "farm.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`priority: 3
instances: 1
pools:
  - name: w
    command: %s
    args: ["worker"]
`, exe)), 0o600))
	f := startDrover(t, "farm", []string{
		"DROVER_TOKEN=" + farmToken,
		// One manager that is not there, and the real one.
		"DROVER_MANAGER=http://127.0.0.1:1, http://" + m.base,
		"DROVER_LABELS=zone=eu,gpu=1",
	}, farmBanner, "farm", "--config", cfg, "--addr", "127.0.0.1:0", "--id", "farm-cfg",
		"--state-dir", t.TempDir(), "--instances", "2")
	waitFarms(t, m, 10*time.Second, "farm-cfg")
	st := m.status(t).Farms[0]
	require.Equal(t, 2, st.Slots, "a typed flag beats the file")
	require.Equal(t, 3, st.Priority, "from the file")
	require.Equal(t, map[string]string{"zone": "eu", "gpu": "1"}, st.Labels, "from the environment")
	require.Equal(t, []string{"w"}, st.Pools)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, "ws://"+m.base+"/ws?pool=w", client.Options{})
	require.NoError(t, err)
	_, err = s.Execute(ctx, json.RawMessage(`{"command":"echo"}`))
	require.NoError(t, err)
	require.NoError(t, s.Logout())
	f.stop(t)
	m.stop(t)
}

func TestManagerAndFarmNeedTokens(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"manager", []string{"manager", "--addr", "127.0.0.1:0"}, "a manager needs a farm token"},
		{"farm", []string{"farm", "--addr", "127.0.0.1:0", "--manager", "http://127.0.0.1:1"}, "a farm needs the farm token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startDrover(t, tc.name, nil, nil, tc.args...)
			err := p.wait(t, 20*time.Second)
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "exits with an error: %v", err)
			require.Equal(t, 1, ee.ExitCode())
			require.Contains(t, p.out.String(), tc.want)
		})
	}
}

// A farm that stops answering without closing its connections (a frozen
// host, a partition) is found out by its missing heartbeats.
func TestClusterSilentFarm(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	a := startFarm(t, m, "farm-a", 1)
	b := startFarm(t, m, "farm-b", 1)
	waitFarms(t, m, 10*time.Second, "farm-a", "farm-b")
	onA, onB := openSession(t, m), openSession(t, m)
	require.Equal(t, "farm-a", m.status(t).farmOf(onA.s.Instance))
	require.Equal(t, "farm-b", m.status(t).farmOf(onB.s.Instance))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	onA.load(stop, &wg)
	onB.load(stop, &wg)
	frozen := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	defer func() { _ = a.cmd.Process.Signal(syscall.SIGKILL) }()

	// Three missed 1 s heartbeats: the manager's monitor, which looks four
	// times an interval, declares the farm dead 3.25 to 3.5 s after its last
	// beat. The bound leaves room for a loaded machine: a manager that
	// finds itself stalled (a gap over a second between its looks, as a
	// CI machine running fuzzers beside it made) gives every farm a fresh
	// deadline rather than declare healthy farms dead, which delays this
	// one too. The time it took is logged.
	const within = 8 * time.Second
	require.Eventually(t, func() bool { _, ok := onA.ev.at("instance_lost"); return ok },
		within, 10*time.Millisecond, "the session on the silent farm is told")
	at, _ := onA.ev.at("instance_lost")
	t.Logf("instance_lost %s after the farm froze", at.Sub(frozen))
	waitFarms(t, m, within-time.Since(frozen), "farm-b")
	close(stop)
	wg.Wait()
	require.NoError(t, onB.loadErr(), "the other session is untouched")
	onB.echo(t)
	require.NoError(t, onB.s.Logout())
	b.stop(t)
	m.stop(t)
}
