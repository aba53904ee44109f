package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// clock is a clock the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now().Round(0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// clockStore is the memory store with farms seen by the test's clock, as
// if every manager and the store shared it.
type clockStore struct {
	*store.Memory
	clock *clock
	mu    sync.Mutex
	seen  map[string]time.Time
}

func newClockStore(c *clock) *clockStore {
	return &clockStore{Memory: store.NewMemory(), clock: c, seen: map[string]time.Time{}}
}

func (s *clockStore) see(id string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.seen[id] = now
	return now
}

func (s *clockStore) PutFarm(ctx context.Context, f store.Farm) error {
	err := s.Memory.PutFarm(ctx, f)
	if err == nil {
		s.see(f.ID)
	}
	return err
}

func (s *clockStore) TouchFarm(ctx context.Context, id string, draining bool) (store.Farm, error) {
	f, err := s.Memory.TouchFarm(ctx, id, draining)
	if err == nil {
		f.Seen = s.see(id)
	}
	return f, err
}

func (s *clockStore) Farms(ctx context.Context) ([]store.Farm, error) {
	farms, err := s.Memory.Farms(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range farms {
		if seen, ok := s.seen[farms[i].ID]; ok {
			farms[i].Seen = seen
		}
	}
	return farms, err
}

// httpFarm is a farm behind the farm REST API, in this process: it starts
// pretend instances (stream protocol: nobody connects to them) and can be
// made unreachable or full.
type httpFarm struct {
	id    string
	slots int
	pools []string
	srv   *httptest.Server

	mu       sync.Mutex
	running  map[string]farmapi.Instance
	n        int
	starts   int // start requests answered or refused
	stops    []string
	hangup   bool // answer no request: drop the connection
	full     bool // answer starts with 429
	priority int
	managers int // RegisterRequest.Managers
}

func newHTTPFarm(t *testing.T, id string, slots int, pools ...string) *httpFarm {
	f := &httpFarm{id: id, slots: slots, pools: pools, running: map[string]farmapi.Instance{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *httpFarm) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hangup {
		// A farm that died: the connection breaks with no answer.
		if r.Method == http.MethodPost {
			f.starts++
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	answer := func(code int, body any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == farmapi.PathInstances:
		f.starts++
		var req farmapi.StartRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if f.full || len(f.running) >= f.slots {
			answer(farmapi.Status(farmapi.ErrNoSlot), map[string]string{"message": farmapi.ErrNoSlot.Error()})
			return
		}
		f.n++
		inst := farmapi.Instance{ID: fmt.Sprintf("%s-%d", f.id, f.n), Pool: req.Pool, Farm: f.id,
			Addr: "127.0.0.1:1", Protocol: farmapi.ProtocolStream, State: farmapi.StateReady, Started: time.Now()}
		f.running[inst.ID] = inst
		answer(http.StatusOK, inst)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, farmapi.PathInstances+"/"):
		id := strings.TrimPrefix(r.URL.Path, farmapi.PathInstances+"/")
		f.stops = append(f.stops, id)
		if _, ok := f.running[id]; !ok {
			answer(http.StatusNotFound, map[string]string{"message": "not found"})
			return
		}
		delete(f.running, id)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && r.URL.Path == farmapi.PathStatus:
		answer(http.StatusOK, farmapi.FarmStatus{ID: f.id, Slots: f.slots})
	default:
		http.NotFound(w, r)
	}
}

func (f *httpFarm) set(fn func(f *httpFarm)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *httpFarm) startCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts
}

func (f *httpFarm) instances() []farmapi.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []farmapi.Instance
	for _, inst := range f.running {
		out = append(out, inst)
	}
	return out
}

func (f *httpFarm) request() farmapi.RegisterRequest {
	return farmapi.RegisterRequest{ID: f.id, Name: f.id, URL: f.srv.URL, Slots: f.slots, Pools: f.pools,
		Priority: f.priority, JobSlots: 2, Instances: f.instances(), Managers: f.managers}
}

func (f *httpFarm) register(t *testing.T, p *Placer) farmapi.RegisterResponse {
	t.Helper()
	resp, err := p.Register(f.request())
	require.NoError(t, err)
	return resp
}

func (f *httpFarm) heartbeat(t *testing.T, p *Placer) {
	t.Helper()
	known, _, err := p.Heartbeat(f.id, farmapi.Heartbeat{Free: 1, Instances: f.instances()})
	require.NoError(t, err)
	require.True(t, known)
}

// localFarm is a farm in this process whose instances get connections
// (fakeConn) from the placer's Dial.
type localFarm struct {
	id    string
	slots int
	pools []string

	// gate, when set, holds every stop until it is closed; asked says
	// which were asked for meanwhile.
	gate chan struct{}

	mu      sync.Mutex
	running map[string]farmapi.Instance
	n       int
	started []farmapi.StartOptions
	stopped []string
	asked   []string
}

var (
	_ Farm        = (*localFarm)(nil)
	_ StarterWith = (*localFarm)(nil)
)

func newLocalFarm(id string, slots int, pools ...string) *localFarm {
	return &localFarm{id: id, slots: slots, pools: pools, running: map[string]farmapi.Instance{}}
}

func (f *localFarm) ID() string      { return f.id }
func (f *localFarm) Slots() int      { return f.slots }
func (f *localFarm) Pools() []string { return f.pools }

func (f *localFarm) StartInstance(ctx context.Context, pool string) (farmapi.Instance, error) {
	return f.StartInstanceWith(ctx, pool, farmapi.StartOptions{})
}

func (f *localFarm) StartInstanceWith(_ context.Context, pool string, opts farmapi.StartOptions) (farmapi.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.running) >= f.slots {
		return farmapi.Instance{}, farmapi.ErrNoSlot
	}
	f.n++
	inst := farmapi.Instance{ID: fmt.Sprintf("%s-%d", f.id, f.n), Pool: pool, Farm: f.id, Addr: "127.0.0.1:1",
		Protocol: farmapi.ProtocolNative, State: farmapi.StateReady, Started: time.Now()}
	f.running[inst.ID] = inst
	f.started = append(f.started, opts)
	return inst, nil
}

func (f *localFarm) StopInstance(_ context.Context, id string) error {
	f.mu.Lock()
	f.asked = append(f.asked, id)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.running[id]; !ok {
		return farmapi.ErrNotFound
	}
	delete(f.running, id)
	f.stopped = append(f.stopped, id)
	return nil
}

func (f *localFarm) startedWith() []farmapi.StartOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]farmapi.StartOptions(nil), f.started...)
}

// holdStops makes the stops asked for from now on wait until the
// returned function is called.
func (f *localFarm) holdStops() (release func()) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	return sync.OnceFunc(func() {
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(gate)
	})
}

// stopsAsked lists the stops asked for, ended or not.
func (f *localFarm) stopsAsked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func (f *localFarm) stops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.stopped...)
}

// fakeConn is an instance connection: clean unless a task is "running".
type fakeConn struct {
	busy   atomic.Bool
	closed atomic.Bool
	lost   func(error)
}

func (c *fakeConn) Clean() bool { return !c.busy.Load() && !c.closed.Load() }
func (c *fakeConn) Close()      { c.closed.Store(true) }

// dialer records the connections it makes, by instance URL.
type dialer struct {
	mu    sync.Mutex
	conns map[string]*fakeConn
}

func (d *dialer) dial(_ context.Context, url string, _ http.Header, lost func(error)) (Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		d.conns = map[string]*fakeConn{}
	}
	c := &fakeConn{lost: lost}
	d.conns[url] = c
	return c, nil
}

func (d *dialer) conn(inst *Instance) *fakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[inst.URL()]
}

type testPlacer struct {
	*Placer
	clock *clock
	store *clockStore
}

func newTestPlacer(t *testing.T, cfg Config) *testPlacer {
	t.Helper()
	c := newClock()
	st := newClockStore(c)
	if cfg.Store == nil {
		cfg.Store = st
	}
	if cfg.ID == "" {
		cfg.ID = "m1"
	}
	cfg.Now = c.Now
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, p.Stop(ctx))
	})
	return &testPlacer{Placer: p, clock: c, store: st}
}

// step moves the clock by a tenth of a heartbeat interval and looks at the
// farms, as the monitor does.
func (tp *testPlacer) step() {
	tp.clock.advance(tp.cfg.HeartbeatInterval / 10)
	tp.syncFarms()
}

// holder is a test holder that records its loss.
type holder struct {
	Holder
	lost chan error
}

func newHolder(id, pool string) *holder {
	h := &holder{lost: make(chan error, 1)}
	h.Holder = Holder{ID: id, Pool: pool, Lost: func(err error) { h.lost <- err }}
	return h
}

func (tp *testPlacer) acquire(t *testing.T, h *holder, wait bool) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst, err := tp.Acquire(ctx, &h.Holder, wait, nil)
	require.NoError(t, err)
	return inst
}

// acquireLater asks for an instance for h in the background, waiting in
// the queue if need be (10 s at most); the channel gets it, nil after an
// error, which fails the test.
func (tp *testPlacer) acquireLater(t *testing.T, h *holder) <-chan *Instance {
	got := make(chan *Instance, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inst, err := tp.Acquire(ctx, &h.Holder, true, nil)
		assert.NoError(t, err)
		got <- inst
	}()
	return got
}

// placed waits for an instance of acquireLater and checks its pool.
func placed(t *testing.T, got <-chan *Instance, pool string) {
	t.Helper()
	select {
	case inst := <-got:
		require.NotNil(t, inst)
		require.Equal(t, pool, inst.Pool())
	case <-time.After(10 * time.Second):
		t.Fatal("a holder was not placed")
	}
}

// pool describes the pool named name.
func (tp *testPlacer) pool(name string) PoolInfo {
	for _, p := range tp.Snapshot().Pools {
		if p.Name == name {
			return p
		}
	}
	return PoolInfo{}
}

func (tp *testPlacer) farm(id string) (FarmInfo, bool) {
	for _, f := range tp.Farms() {
		if f.ID == id {
			return f, true
		}
	}
	return FarmInfo{}, false
}

// eventually polls cond until it holds: for what happens in placement's
// background goroutines (an instance stopped, a warm one started).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
