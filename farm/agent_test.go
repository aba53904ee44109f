package farm

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// fakeManager speaks the manager's side of the farm API (farmapi) and
// records what farms send it.
type fakeManager struct {
	t        *testing.T
	token    string
	interval time.Duration
	srv      *httptest.Server

	mu      sync.Mutex
	known   map[string]bool
	drain   bool
	stop    []string // the next registration's answer gives up on these
	regs    []RegisterRequest
	regAt   []time.Time
	beats   []Heartbeat
	beatAt  []time.Time
	deregs  []string
	refused int
}

func newFakeManager(t *testing.T, token string) *fakeManager {
	return newFakeManagerEvery(t, token, 20*time.Millisecond)
}

// newFakeManagerEvery starts a fake manager that asks for a heartbeat
// every interval.
func newFakeManagerEvery(t *testing.T, token string, interval time.Duration) *fakeManager {
	m := &fakeManager{t: t, token: token, interval: interval, known: map[string]bool{}}
	m.srv = httptest.NewServer(m.handler())
	t.Cleanup(m.srv.Close)
	return m
}

// restartFakeManager starts a manager with no memory on the address of one
// that is gone.
func restartFakeManager(t *testing.T, addr, token string) *fakeManager {
	m := &fakeManager{t: t, token: token, interval: 20 * time.Millisecond, known: map[string]bool{}}
	var ln net.Listener
	require.Eventually(t, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, waitFor, 10*time.Millisecond)
	m.srv = httptest.NewUnstartedServer(m.handler())
	m.srv.Listener = ln
	m.srv.Start()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeManager) handler() http.Handler {
	mux := http.NewServeMux()
	livez := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("POST "+PathFarms, func(w http.ResponseWriter, r *http.Request) {
		var req RegisterRequest
		if !m.decode(w, r, &req) {
			return
		}
		m.mu.Lock()
		m.regs = append(m.regs, req)
		m.regAt = append(m.regAt, time.Now())
		m.known[req.ID] = true
		stop := m.stop
		m.stop = nil
		m.mu.Unlock()
		writeJSON(w, http.StatusOK, RegisterResponse{HeartbeatIntervalMS: m.interval.Milliseconds(), Stop: stop})
	})
	mux.HandleFunc("POST "+PathFarms+"/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		var hb Heartbeat
		if !m.decode(w, r, &hb) {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.known[r.PathValue("id")] {
			writeError(w, http.StatusNotFound, "unknown farm: register again")
			return
		}
		m.beats = append(m.beats, hb)
		m.beatAt = append(m.beatAt, time.Now())
		writeJSON(w, http.StatusOK, HeartbeatResponse{Drain: m.drain})
	})
	mux.HandleFunc("DELETE "+PathFarms+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		id := r.PathValue("id")
		m.deregs = append(m.deregs, id)
		if !m.known[id] {
			writeError(w, http.StatusNotFound, "unknown farm")
			return
		}
		delete(m.known, id)
		w.WriteHeader(http.StatusNoContent)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/livez" {
			livez(w, r) // a load balancer's health check carries no token
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+m.token {
			m.mu.Lock()
			m.refused++
			m.mu.Unlock()
			writeError(w, http.StatusUnauthorized, "missing or wrong token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (m *fakeManager) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		m.t.Errorf("fake manager: bad body on %s: %v", r.URL.Path, err)
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

func (m *fakeManager) url() string { return m.srv.URL }

func (m *fakeManager) snapshot() (regs []RegisterRequest, beats []Heartbeat, deregs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]RegisterRequest(nil), m.regs...), append([]Heartbeat(nil), m.beats...),
		append([]string(nil), m.deregs...)
}

func (m *fakeManager) waitFor(t *testing.T, what string, cond func(regs []RegisterRequest, beats []Heartbeat, deregs []string) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return cond(m.snapshot()) }, waitFor, 5*time.Millisecond, what)
}

// beatTimes returns when each heartbeat arrived.
func (m *fakeManager) beatTimes() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.beatAt)
}

// forget makes the manager forget every farm, as a restart or a missed
// heartbeat deadline would.
func (m *fakeManager) forget() {
	m.mu.Lock()
	clear(m.known)
	m.mu.Unlock()
}

type runningAgent struct {
	a    *Agent
	stop context.CancelFunc
	done chan error
}

func startAgent(t *testing.T, cfg AgentConfig) *runningAgent {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	if cfg.AdvertiseURL == "" {
		cfg.AdvertiseURL = "http://farm.test:8282"
	}
	cfg.RetryMin = cmpDur(cfg.RetryMin, 10*time.Millisecond)
	cfg.RetryMax = cmpDur(cfg.RetryMax, 50*time.Millisecond)
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	a, err := NewAgent(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{a: a, stop: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ra.done
	})
	return ra
}

func cmpDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// wait waits until Run returns and returns its error.
func (ra *runningAgent) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ra.done:
		ra.done <- err // for the cleanup
		return err
	case <-time.After(waitFor):
		t.Fatal("the agent's Run did not return")
		return nil
	}
}

func (ra *runningAgent) running() bool {
	select {
	case err := <-ra.done:
		ra.done <- err
		return false
	default:
		return true
	}
}

func TestNewAgentChecksConfig(t *testing.T) {
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	for _, tc := range []struct {
		name string
		cfg  AgentConfig
		want string
	}{
		{"no farm", AgentConfig{Token: "t", AdvertiseURL: "http://a:1"}, "needs a farm"},
		{"no token", AgentConfig{Farm: f, AdvertiseURL: "http://a:1"}, "token"},
		{"no advertise URL", AgentConfig{Farm: f, Token: "t"}, "advertise"},
		{"advertise URL without scheme", AgentConfig{Farm: f, Token: "t", AdvertiseURL: "a:1"}, "advertise"},
		{"bad manager URL", AgentConfig{Farm: f, Token: "t", AdvertiseURL: "http://a:1", Managers: []string{"ftp://m"}}, "manager URL"},
		{"manager URL password stays hidden", AgentConfig{Farm: f, Token: "t", AdvertiseURL: "http://a:1",
			Managers: []string{"ftp://u:hunter2@m"}}, "manager URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewAgent(tc.cfg)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestAgentRegistersBeatsAndDeregisters(t *testing.T) {
	log, logs := capture(t)
	f := newTestFarm(t, Config{ID: "f1", Name: "farm one", Slots: 3,
		Pools: []PoolSpec{childPool("p", "listen"), childPool("q", "listen")}, Logger: log})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	m := newFakeManager(t, testToken)

	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m.url() + "/"}, AdvertiseURL: "http://farm.test:8282",
		Labels: map[string]string{"gpu": "1"}, Priority: 5, Logger: log})
	m.waitFor(t, "three heartbeats", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool { return len(beats) >= 3 })

	regs, beats, _ := m.snapshot()
	require.Len(t, regs, 1)
	inst.Started = time.Time{}
	require.Equal(t, RegisterRequest{ID: "f1", Name: "farm one", URL: "http://farm.test:8282",
		Labels: map[string]string{"gpu": "1"}, Priority: 5, Slots: 3, Pools: []string{"p", "q"},
		Instances: []Instance{inst}, Managers: 1}, normalize(regs[0]))
	require.Equal(t, Heartbeat{Free: 2, Instances: []Instance{inst}}, normalizeBeat(beats[0]))

	ra.stop()
	require.NoError(t, ra.wait(t))
	_, beats, deregs := m.snapshot()
	require.Equal(t, []string{"f1"}, deregs)
	time.Sleep(5 * m.interval)
	_, after, _ := m.snapshot()
	require.Len(t, after, len(beats), "no heartbeat after the deregistration")
	require.NotContains(t, logs.String(), testToken[:8])
}

// normalize drops what JSON cannot carry exactly (monotonic clock readings).
func normalize(r RegisterRequest) RegisterRequest {
	for i := range r.Instances {
		r.Instances[i].Started = time.Time{}
	}
	return r
}

func normalizeBeat(b Heartbeat) Heartbeat {
	for i := range b.Instances {
		b.Instances[i].Started = time.Time{}
	}
	return b
}

func TestAgentRegistersAgainOn404(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	m := newFakeManager(t, testToken)
	startAgent(t, AgentConfig{Farm: f, Managers: []string{m.url()}})
	m.waitFor(t, "registered and beating", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(regs) == 1 && len(beats) >= 1
	})
	m.forget()
	m.waitFor(t, "registered again", func(regs []RegisterRequest, _ []Heartbeat, _ []string) bool { return len(regs) == 2 })
	m.waitFor(t, "beating again", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool { return len(beats) >= 3 })
}

func TestAgentFindsRestartedManager(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	// A manager that is not up yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{"http://" + addr}})
	time.Sleep(100 * time.Millisecond) // a few failed attempts
	m := restartFakeManager(t, addr, testToken)
	m.waitFor(t, "registered once it is up", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(regs) == 1 && len(beats) >= 1
	})

	// It goes away and comes back with no memory of the farm.
	m.srv.Close()
	time.Sleep(100 * time.Millisecond) // failed heartbeats
	m2 := restartFakeManager(t, addr, testToken)
	m2.waitFor(t, "registered with the new manager", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(regs) == 1 && len(beats) >= 1
	})
	require.True(t, ra.running())
}

func TestAgentWrongToken(t *testing.T) {
	log, logs := capture(t)
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}, Logger: log})
	m := newFakeManager(t, "the-managers-token")
	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m.url()}, Logger: log})
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.refused >= 3
	}, waitFor, 5*time.Millisecond, "keeps trying")
	ra.stop()
	require.NoError(t, ra.wait(t))
	regs, beats, deregs := m.snapshot()
	require.Empty(t, regs)
	require.Empty(t, beats)
	require.Empty(t, deregs, "never registered: nothing to deregister")
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "the manager refused the farm token"), "said once, not at every retry:\n%s", out)
	require.NotContains(t, out, testToken[:8])
}

func TestAgentTwoManagers(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 2, Pools: []PoolSpec{childPool("p", "listen")}})
	m1, m2 := newFakeManager(t, testToken), newFakeManager(t, testToken)
	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m1.url(), m2.url()}})
	for _, m := range []*fakeManager{m1, m2} {
		m.waitFor(t, "registered and beating", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
			return len(regs) == 1 && len(beats) >= 2
		})
	}
	// One going away does not disturb the other.
	m1.srv.Close()
	_, before, _ := m2.snapshot()
	m2.waitFor(t, "still beating", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(beats) >= len(before)+3
	})
	ra.stop()
	require.NoError(t, ra.wait(t))
	_, _, deregs := m2.snapshot()
	require.Equal(t, []string{"f1"}, deregs)
}

func TestAgentAddManager(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 4, Pools: []PoolSpec{childPool("p", "listen")}})
	m1, m2 := newFakeManager(t, testToken), newFakeManager(t, testToken)
	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m1.url()}})

	ok, err := ra.a.AddManager(startCtx(t), m2.url(), 2)
	require.NoError(t, err)
	require.True(t, ok)
	regs, _, _ := m2.snapshot()
	require.Len(t, regs, 1)
	require.Equal(t, 2, regs[0].Slots, "the slots asked for")
	require.Equal(t, 2, regs[0].Managers, "it registers with two managers now")
	m2.waitFor(t, "beating", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(beats) >= 1 && beats[0].Free == 2
	})
	m1.waitFor(t, "registered with its own manager", func(regs []RegisterRequest, _ []Heartbeat, _ []string) bool {
		return len(regs) == 1
	})
	regs, _, _ = m1.snapshot()
	require.Equal(t, 4, regs[0].Slots)

	// Asking again changes nothing.
	ok, err = ra.a.AddManager(startCtx(t), m2.url(), 1)
	require.NoError(t, err)
	require.True(t, ok)

	wrong := newFakeManager(t, "other")
	ok, err = ra.a.AddManager(startCtx(t), wrong.url(), 0)
	require.ErrorContains(t, err, "refused the farm token")
	require.False(t, ok)

	ra.stop()
	require.NoError(t, ra.wait(t))
	for _, m := range []*fakeManager{m1, m2} {
		_, _, deregs := m.snapshot()
		require.Equal(t, []string{"f1"}, deregs)
	}
	_, err = ra.a.AddManager(startCtx(t), "http://127.0.0.1:1", 0)
	require.ErrorIs(t, err, ErrAgentStopped)
}

func TestAgentDrainAskedByManager(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 2, Pools: []PoolSpec{childPool("p", "listen")}})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	m1, m2 := newFakeManager(t, testToken), newFakeManager(t, testToken)
	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m1.url(), m2.url()}})
	m1.waitFor(t, "beating", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool { return len(beats) >= 1 })

	m1.mu.Lock()
	m1.drain = true
	m1.mu.Unlock()
	require.Eventually(t, f.Draining, waitFor, 5*time.Millisecond)
	_, err = f.StartInstance(startCtx(t), "p")
	require.ErrorIs(t, err, ErrDraining)
	for _, m := range []*fakeManager{m1, m2} {
		m.waitFor(t, "told the farm drains", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool {
			return len(beats) > 0 && beats[len(beats)-1].Draining
		})
	}

	// The farm waits for its sessions to end: here, its instance to stop.
	time.Sleep(100 * time.Millisecond)
	require.True(t, ra.running(), "still an instance: still draining")
	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
	require.NoError(t, ra.wait(t))
	for _, m := range []*fakeManager{m1, m2} {
		_, _, deregs := m.snapshot()
		require.Equal(t, []string{"f1"}, deregs)
	}
}

func TestAgentDrainMaxDrain(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	m := newFakeManager(t, testToken)
	const maxDrain = 300 * time.Millisecond
	ra := startAgent(t, AgentConfig{Farm: f, Managers: []string{m.url()}, MaxDrain: maxDrain})
	m.waitFor(t, "beating", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool { return len(beats) >= 1 })

	begin := time.Now()
	ra.a.Drain()
	ra.a.Drain() // idempotent
	require.NoError(t, ra.wait(t))
	require.GreaterOrEqual(t, time.Since(begin), maxDrain)
	_, _, deregs := m.snapshot()
	require.Equal(t, []string{"f1"}, deregs)
	require.Len(t, f.Instances(), 1, "stopping what is left is the caller's: it closes the farm")
}

func TestAgentDrainBeforeRun(t *testing.T) {
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	m := newFakeManager(t, testToken)
	a, err := NewAgent(AgentConfig{Farm: f, Managers: []string{m.url()}, Token: testToken, AdvertiseURL: "http://f:1"})
	require.NoError(t, err)
	a.Drain()
	require.NoError(t, a.Run(context.Background()))
	regs, _, deregs := m.snapshot()
	require.Empty(t, regs, "a draining farm does not register")
	require.Empty(t, deregs)
	require.Error(t, a.Run(context.Background()), "Run runs once")
}

func TestRequireRegistersWithManager(t *testing.T) {
	log, logs := capture(t)
	f := newTestFarm(t, Config{ID: "f1", Slots: 3, Pools: []PoolSpec{childPool("p", "listen")}, Logger: log})
	ra := startAgent(t, AgentConfig{Farm: f, Logger: log})
	ts := newTestServerFor(t, f, ServerConfig{Require: ra.a.AddManager, Logger: log})
	m := newFakeManager(t, testToken)
	host, port, err := net.SplitHostPort(strings.TrimPrefix(m.url(), "http://"))
	require.NoError(t, err)

	code, body := ts.do(t, "GET", "/require/"+host+"/"+port+"/2?token="+testToken, "", ptr(""))
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `{"farm":"f1","manager":"`+m.url()+`","slots":2,"registered":true}`, body)
	regs, _, _ := m.snapshot()
	require.Len(t, regs, 1)
	require.Equal(t, 2, regs[0].Slots)
	require.NotContains(t, logs.String(), testToken[:8])
}

// newTestServerFor serves an existing farm.
func newTestServerFor(t *testing.T, f *Farm, scfg ServerConfig) *testServer {
	t.Helper()
	scfg.Token = testToken
	scfg.Relay = &recordingRelay{}
	s, err := NewServer(f, scfg)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		hs.Close()
		client.CloseIdleConnections()
		require.NoError(t, s.Close())
	})
	return &testServer{f: f, s: s, http: hs, client: client, logs: &testutil.SyncBuffer{}}
}
