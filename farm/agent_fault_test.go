package farm

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/haproxytest"
)

// roundRobin is a tiny TCP load balancer: each connection it accepts goes
// to the next backend in turn and stays with it, as through an L4
// balancer, or a keep-alive connection that an L7 one keeps on its server.
type roundRobin struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	next   int
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newRoundRobin(t *testing.T, backends ...string) *roundRobin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rr := &roundRobin{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	rr.wg.Go(rr.serve)
	t.Cleanup(rr.close)
	return rr
}

func (rr *roundRobin) url() string { return "http://" + rr.ln.Addr().String() }

func (rr *roundRobin) serve() {
	for {
		c, err := rr.ln.Accept()
		if err != nil {
			return
		}
		rr.mu.Lock()
		if rr.closed {
			rr.mu.Unlock()
			_ = c.Close()
			return
		}
		backend := rr.backends[rr.next%len(rr.backends)]
		rr.next++
		rr.conns[c] = struct{}{}
		rr.wg.Add(1)
		rr.mu.Unlock()
		go rr.pipe(c, backend)
	}
}

func (rr *roundRobin) pipe(c net.Conn, backend string) {
	defer rr.wg.Done()
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	rr.mu.Lock()
	if rr.closed {
		rr.mu.Unlock()
		_ = b.Close()
		return
	}
	rr.conns[b] = struct{}{}
	rr.mu.Unlock()
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = b.Close()
	<-done
	rr.mu.Lock()
	delete(rr.conns, c)
	delete(rr.conns, b)
	rr.mu.Unlock()
}

func (rr *roundRobin) close() {
	rr.mu.Lock()
	rr.closed = true
	for c := range rr.conns {
		_ = c.Close()
	}
	rr.mu.Unlock()
	_ = rr.ln.Close()
	rr.wg.Wait()
}

// stallable serves h until stalled; then, as a SIGSTOPped manager, it
// answers nothing: requests hang until it is resumed or their client
// gives up.
type stallable struct {
	h http.Handler

	mu       sync.Mutex
	stalled  chan struct{} // non-nil while stalled; closed by resume
	heldAt   []time.Time   // when each heartbeat held while stalled came
	servedAt time.Time     // when the last request served came
}

func (s *stallable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	stalled := s.stalled
	if stalled != nil {
		if strings.HasSuffix(r.URL.Path, "/heartbeat") {
			s.heldAt = append(s.heldAt, time.Now())
		}
	} else {
		s.servedAt = time.Now()
	}
	s.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-r.Context().Done():
			return
		}
	}
	s.h.ServeHTTP(w, r)
}

func (s *stallable) stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled == nil {
		s.stalled = make(chan struct{})
	}
}

func (s *stallable) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		close(s.stalled)
		s.stalled = nil
	}
}

func (s *stallable) held() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.heldAt)
}

func (s *stallable) lastServed() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servedAt
}

// twoManagers are two fake managers that share their state, as managers on
// one Redis do, each behind a stallable.
func twoManagers(t *testing.T, interval time.Duration) (m *fakeManager, gates []*stallable, addrs []string) {
	t.Helper()
	m = newFakeManagerEvery(t, testToken, interval)
	for range 2 {
		g := &stallable{h: m.handler()}
		srv := httptest.NewServer(g)
		t.Cleanup(srv.Close)
		t.Cleanup(g.resume) // before srv.Close, which waits for held requests
		gates = append(gates, g)
		addrs = append(addrs, srv.Listener.Addr().String())
	}
	return m, gates, addrs
}

// requireRetriedInTime checks that every beat the stalled manager held was
// answered by the other within the interval: its retry did not wait for a
// long timeout or a backoff.
func requireRetriedInTime(t *testing.T, m *fakeManager, held []time.Time, interval time.Duration) {
	t.Helper()
	at := m.beatTimes()
	for _, h := range held {
		i, _ := slices.BinarySearchFunc(at, h, time.Time.Compare)
		require.Less(t, i, len(at), "no beat after the one held at %s", h)
		took := at[i].Sub(h)
		require.Less(t, took, interval, "the beat held by the stalled manager reached the other after %s", took)
		t.Logf("a beat held by the stalled manager reached the other %s later", took.Round(time.Millisecond))
	}
}

// requireBeatsOnTime checks the beats that arrived from since on: at least
// n, and none later than maxGap after the one before.
func requireBeatsOnTime(t *testing.T, m *fakeManager, since time.Time, n int, maxGap time.Duration) {
	t.Helper()
	m.waitFor(t, "beats after the stall", func(_ []RegisterRequest, _ []Heartbeat, _ []string) bool {
		at := m.beatTimes()
		i, _ := slices.BinarySearchFunc(at, since, time.Time.Compare)
		return len(at)-i >= n
	})
	at := m.beatTimes()
	i, _ := slices.BinarySearchFunc(at, since, time.Time.Compare)
	require.Positive(t, i, "beats came before the stall")
	var longest time.Duration
	for j := i; j < len(at); j++ {
		gap := at[j].Sub(at[j-1])
		longest = max(longest, gap)
		require.Less(t, gap, maxGap, "beat %d came %s after the one before", j, gap)
	}
	t.Logf("the longest gap between beats since the stall: %s", longest.Round(time.Millisecond))
}

// TestAgentBeatsPastAStalledManager: two managers sharing state behind a
// load balancer, and the one that has the farm's connection stalls (as
// under SIGSTOP). The beat it holds is sent again on a new connection,
// which the balancer gives the other manager, within the interval; beats
// go on without a gap a manager would take for a dead farm.
func TestAgentBeatsPastAStalledManager(t *testing.T) {
	const interval = 500 * time.Millisecond
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	m, gates, addrs := twoManagers(t, interval)
	lb := newRoundRobin(t, addrs...)
	startAgent(t, AgentConfig{Farm: f, Managers: []string{lb.url()}})
	m.waitFor(t, "registered and beating", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(regs) == 1 && len(beats) >= 2
	})

	// The farm keeps its connection, and so its manager: stall that one.
	stuck := gates[0]
	if gates[1].lastServed().After(stuck.lastServed()) {
		stuck = gates[1]
	}
	stuck.stall()
	stalled := time.Now()
	m.waitFor(t, "beats after the stall", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool {
		at := m.beatTimes()
		i, _ := slices.BinarySearchFunc(at, stalled, time.Time.Compare)
		return len(at)-i >= 5
	})
	held := stuck.held()
	require.NotEmpty(t, held, "a beat went to the stalled manager")
	requireRetriedInTime(t, m, held, interval)
	requireBeatsOnTime(t, m, stalled, 5, 3*interval)
	regs, _, _ := m.snapshot()
	require.Len(t, regs, 1, "no registration again: the beats kept the farm known")
}

// TestAgentStopsGivenUpInstances: a registration's answer names instances
// the managers gave up on while the farm was out of touch. The farm stops
// them at once: no beat after it reports them ready or their slots free
// while they run, and the beat that offers the freed slots comes as soon
// as they are gone, not at the next interval.
func TestAgentStopsGivenUpInstances(t *testing.T) {
	const interval = 2 * time.Second // long: the freed slots must not wait for it
	f := newTestFarm(t, Config{ID: "f1", Slots: 3, Pools: []PoolSpec{childPool("p", "listen")}})
	var insts []Instance
	for range 2 {
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)
		insts = append(insts, inst)
	}
	given, kept := insts[0], insts[1]
	m := newFakeManagerEvery(t, testToken, interval)
	m.mu.Lock()
	m.stop = []string{given.ID, "p-unknown"}
	m.mu.Unlock()

	startAgent(t, AgentConfig{Farm: f, Managers: []string{m.url()}})
	m.waitFor(t, "a beat without the instance given up", func(_ []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(beats) > 0 && !slices.ContainsFunc(beats[len(beats)-1].Instances, func(in Instance) bool {
			return in.ID == given.ID
		})
	})
	requireGone(t, given.PID)
	regs, beats, _ := m.snapshot()
	require.Len(t, regs, 1)
	require.Len(t, regs[0].Instances, 2, "the registration listed both")
	m.mu.Lock()
	took := m.beatAt[len(m.beatAt)-1].Sub(m.regAt[0])
	m.mu.Unlock()
	require.Less(t, took, interval, "the freed slot is offered at once")
	for i, b := range beats {
		require.Equal(t, 3-len(b.Instances), b.Free, "beat %d: a slot is free only once its instance is gone", i)
		for _, in := range b.Instances {
			if in.ID == given.ID {
				require.Equal(t, StateStopping, in.State, "beat %d", i)
			}
		}
	}
	last := beats[len(beats)-1]
	require.Equal(t, 2, last.Free)
	require.Len(t, last.Instances, 1)
	require.Equal(t, kept.ID, last.Instances[0].ID, "the other instance runs on")
	require.False(t, gone(kept.PID))
}

// TestAgentCallRetry: a call that gets no answer in time, or a 5xx, is made
// once more at once on a new connection; a 4xx is an answer.
func TestAgentCallRetry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first func(w http.ResponseWriter, r *http.Request) // the first call's fate
		calls int
		code  int
	}{
		{"hangs", func(_ http.ResponseWriter, r *http.Request) {
			// Reading the body to its end lets the server see the client go.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		}, 2, http.StatusOK},
		{"502", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }, 2, http.StatusOK},
		{"404", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }, 1, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				calls int
				conns []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/warm" {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				mu.Lock()
				calls++
				n := calls
				conns = append(conns, r.RemoteAddr)
				mu.Unlock()
				if n == 1 {
					tc.first(w, r)
					return
				}
				writeJSON(w, http.StatusOK, HeartbeatResponse{})
			}))
			t.Cleanup(srv.Close)
			f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
			a, err := NewAgent(AgentConfig{Farm: f, Managers: []string{srv.URL}, Token: testToken,
				AdvertiseURL: "http://farm.test:1"})
			require.NoError(t, err)
			l := a.order[0]
			t.Cleanup(l.client.CloseIdleConnections)
			// A warm connection, as a farm that has been beating has.
			_, err = a.call(t.Context(), l, http.MethodGet, srv.URL+"/warm", nil, nil)
			require.NoError(t, err)

			const first = 100 * time.Millisecond
			begin := time.Now()
			code, err := a.callRetry(t.Context(), l, http.MethodPost, srv.URL+"/beat", Heartbeat{}, nil,
				first, begin.Add(5*time.Second))
			require.Equal(t, tc.code, code)
			if tc.code == http.StatusOK {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, tc.calls, calls)
			if tc.calls == 2 {
				require.NotEqual(t, conns[0], conns[1], "the retry went on a new connection")
			}
			if tc.name == "hangs" {
				require.Less(t, time.Since(begin), 5*time.Second)
				require.GreaterOrEqual(t, time.Since(begin), first)
			}
		})
	}
}

// TestAgentBeatsThroughHAProxy runs the shipped deploy/haproxy.cfg in front
// of two managers sharing state, and stalls one: HAProxy takes it out of
// the farm backends within about a second, and meanwhile the beats it
// holds reach the other manager within the interval.
func TestAgentBeatsThroughHAProxy(t *testing.T) {
	const interval = time.Second // the managers' default
	f := newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	m, gates, addrs := twoManagers(t, interval)
	lb := haproxytest.Start(t, haproxytest.Options{Config: "../deploy/haproxy.cfg", Backends: addrs})
	requireUp := func(backend string) {
		t.Helper()
		require.Eventually(t, func() bool {
			st, err := lb.Status(backend)
			return err == nil && st["m0"] == "UP" && st["m1"] == "UP"
		}, waitFor, 20*time.Millisecond, "HAProxy holds both managers up in %s", backend)
	}
	requireUp("farm_beats")
	requireUp("farm_api")
	startAgent(t, AgentConfig{Farm: f, Managers: []string{"http://" + lb.Farms}})
	m.waitFor(t, "registered and beating", func(regs []RegisterRequest, beats []Heartbeat, _ []string) bool {
		return len(regs) == 1 && len(beats) >= 2
	})

	gates[0].stall()
	stalled := time.Now()
	require.Eventually(t, func() bool {
		st, err := lb.Status("farm_beats")
		return err == nil && strings.HasPrefix(st["m0"], "DOWN")
	}, 3*time.Second, 20*time.Millisecond, "HAProxy takes the stalled manager out")
	t.Logf("the stalled manager was down after %s", time.Since(stalled).Round(time.Millisecond))
	requireBeatsOnTime(t, m, stalled, 3, 3*interval)
	// Beats that went to the stalled manager before HAProxy took it out,
	// if any, reached the other within the interval.
	requireRetriedInTime(t, m, gates[0].held(), interval)
	regs, _, _ := m.snapshot()
	require.Len(t, regs, 1, "no registration again: the beats kept the farm known")
}
