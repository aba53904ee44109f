package manager_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/store"
)

const sharedFarmToken = "shared-test-farm-token-51c0"

// sharedStack is two managers sharing one store, and one farm served over
// HTTP whose agent registers with the first manager only.
type sharedStack struct {
	t     *testing.T
	store *flakyStore
	mgrs  [2]*stack
	farm  *farm.Farm
}

type sharedOpts struct {
	slots    int
	handOff  bool
	stopLast bool // the test shuts manager 0 down itself
	// setup, when set, runs on each manager before it serves.
	setup  func(i int, m *manager.Manager)
	limits limits.Config
	auth   auth.RequestAuthenticator // nil: protected mode
}

func newSharedStack(t *testing.T, o sharedOpts) *sharedStack {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ss := &sharedStack{t: t, store: &flakyStore{Store: store.NewMemory()}}
	f, err := farm.New(farm.Config{ID: "farm-1", Slots: o.slots, Pools: []farm.PoolSpec{workerSpec("default")},
		Logger: log.With("component", "farm")})
	require.NoError(t, err)
	ss.farm = f
	relay := proxy.New(proxy.Options{Logger: log})
	fsrv, err := farm.NewServer(f, farm.ServerConfig{Token: sharedFarmToken, Relay: relay, Logger: log})
	require.NoError(t, err)
	farmHTTP := httptest.NewServer(fsrv)

	for i := range ss.mgrs {
		m, err := manager.New(manager.Config{
			ID:                fmt.Sprintf("m%d", i),
			Store:             ss.store,
			Pools:             []manager.Pool{{Name: "default"}},
			FarmToken:         sharedFarmToken,
			HeartbeatInterval: 100 * time.Millisecond,
			ResumeGrace:       10 * time.Second,
			HandOffOnShutdown: o.handOff,
			Logger:            log.With("component", fmt.Sprintf("manager-%d", i)),
			Limits:            o.limits,
			Auth:              o.auth,
		})
		require.NoError(t, err)
		if o.setup != nil {
			o.setup(i, m)
		}
		ss.mgrs[i] = &stack{t: t, m: m, farm: f, srv: httptest.NewServer(m.Handler())}
	}
	agent, err := farm.NewAgent(farm.AgentConfig{Farm: f, Managers: []string{ss.mgrs[0].srv.URL},
		Token: sharedFarmToken, AdvertiseURL: farmHTTP.URL, RetryMin: 20 * time.Millisecond,
		RetryMax: 100 * time.Millisecond, Logger: log.With("component", "agent")})
	require.NoError(t, err)
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(actx) }()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i, st := range ss.mgrs {
			if i > 0 || !o.stopLast {
				require.NoError(t, st.m.Shutdown(ctx))
			}
			st.srv.Close()
		}
		stopAgent()
		require.NoError(t, <-agentDone)
		farmHTTP.Close()
		require.NoError(t, relay.Shutdown(ctx))
		require.NoError(t, fsrv.Close())
		require.NoError(t, f.Close(ctx))
	})
	// Both managers see the farm: the second adopts it from the store.
	for _, st := range ss.mgrs {
		eventually(t, "the farm to be seen by "+st.m.ID(), func() bool {
			return st.m.Capacity().Slots == o.slots && len(st.m.Status().Farms) == 1
		})
	}
	return ss
}

// flakyStore is a store that can be made unreachable.
type flakyStore struct {
	store.Store
	down          atomic.Bool
	capacityReads atomic.Int64
}

var errFlaky = fmt.Errorf("%w: switched off by the test", store.ErrUnavailable)

func (f *flakyStore) check() error {
	if f.down.Load() {
		return errFlaky
	}
	return nil
}

func (f *flakyStore) Farms(ctx context.Context) ([]store.Farm, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.Farms(ctx)
}

func (f *flakyStore) Reserve(ctx context.Context, farm string, s store.Slot) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Reserve(ctx, farm, s)
}

func (f *flakyStore) UpdateSlot(ctx context.Context, farm string, s store.Slot, from store.SlotState) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.UpdateSlot(ctx, farm, s, from)
}

func (f *flakyStore) FreeSlot(ctx context.Context, farm, slot string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.FreeSlot(ctx, farm, slot)
}

func (f *flakyStore) Capacity(ctx context.Context) (store.Capacity, error) {
	f.capacityReads.Add(1)
	if err := f.check(); err != nil {
		return store.Capacity{}, err
	}
	return f.Store.Capacity(ctx)
}

func (f *flakyStore) TouchFarm(ctx context.Context, id string, draining bool) (store.Farm, error) {
	if err := f.check(); err != nil {
		return store.Farm{}, err
	}
	return f.Store.TouchFarm(ctx, id, draining)
}

func (f *flakyStore) PutSession(ctx context.Context, s store.Session, ttl time.Duration) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.PutSession(ctx, s, ttl)
}

func (f *flakyStore) Slots(ctx context.Context, farm string) ([]store.Slot, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.Slots(ctx, farm)
}

func TestSharedFarmAndCapacity(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 4})
	// A session through the manager the farm did not register with.
	c, _ := ss.mgrs[1].open("")
	c.one(`{"command":"set","key":"k","value":1}`)
	require.JSONEq(t, `{"key":"k","value":1}`, string(c.one(`{"command":"get","key":"k"}`)))
	ss.mgrs[0].open("")
	for _, st := range ss.mgrs {
		capa := st.m.Capacity()
		require.Equal(t, 4, capa.Slots)
		require.Equal(t, 2, capa.Busy, "both managers count every manager's sessions")
	}
	c3, _ := ss.mgrs[1].open("")
	c3.one(`{"command":"echo"}`)
	// 3 of 4 busy: 75% < 90%. The fourth makes both managers unhealthy.
	require.Equal(t, 200, ss.mgrs[0].health())
	ss.mgrs[0].open("")
	require.Equal(t, 503, ss.mgrs[0].health())
	require.Equal(t, 503, ss.mgrs[1].health())

	// /metrics shows the same shared view, from one store read a scrape.
	before := ss.store.capacityReads.Load()
	res, err := http.Get(ss.mgrs[1].srv.URL + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "\ndrover_manager_capacity_slots 4\n")
	require.Contains(t, string(body), "\ndrover_manager_capacity_busy 4\n")
	require.Equal(t, int64(1), ss.store.capacityReads.Load()-before, "one capacity read a scrape")
}

func TestSharedPlacementNeverOverbinds(t *testing.T) {
	const slots, clients = 6, 30
	ss := newSharedStack(t, sharedOpts{slots: slots})
	var (
		mu        sync.Mutex
		welcomed  = map[string]int{} // instance → sessions
		refused   int
		wg        sync.WaitGroup
		conns     []*websocket.Conn
		dialError error
	)
	for i := range clients {
		wg.Go(func() {
			ws, _, err := websocket.DefaultDialer.Dial(ss.mgrs[i%2].wsURL("wait=false"), nil)
			if err != nil {
				mu.Lock()
				dialError = err
				mu.Unlock()
				return
			}
			f := (&client{t: t, ws: ws}).read()
			mu.Lock()
			defer mu.Unlock()
			conns = append(conns, ws)
			switch f.Type {
			case "welcome":
				welcomed[f.Instance]++
			case "error":
				refused++
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, ws := range conns {
			_ = ws.Close()
		}
	})
	require.NoError(t, dialError)
	require.Len(t, welcomed, slots, "every slot serves one session")
	for inst, n := range welcomed {
		require.Equal(t, 1, n, "instance %s bound twice", inst)
	}
	require.Equal(t, clients-slots, refused)
	require.Len(t, ss.farm.Instances(), slots, "the farm runs one instance per session, no more")
}

func TestSharedResumeOnOtherManager(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2})
	c, w := ss.mgrs[0].open("")
	c.one(`{"command":"set","key":"k","value":"kept"}`)
	pid := c.pid()

	// The first client is still connected: the session moves anyway, as
	// the token proves the client, and the old connection is closed.
	c2, w2 := ss.mgrs[1].open("resume=" + w.Resume)
	require.Equal(t, w.Session, w2.Session)
	require.Equal(t, w.Instance, w2.Instance)
	require.Equal(t, websocket.ClosePolicyViolation, c.closeCode())
	require.JSONEq(t, `{"key":"k","value":"kept"}`, string(c2.one(`{"command":"get","key":"k"}`)))
	require.Equal(t, pid, c2.pid(), "the same instance process")
	require.Empty(t, ss.mgrs[0].m.Status().Sessions, "the old manager let go")
	require.Len(t, ss.mgrs[1].m.Status().Sessions, 1)

	// And back again, after a drop.
	require.NoError(t, c2.ws.NetConn().Close())
	eventually(t, "the session to detach", func() bool {
		s := ss.mgrs[1].m.Status().Sessions
		return len(s) == 1 && s[0].State == "detached"
	})
	c3, w3 := ss.mgrs[0].open("resume=" + w.Resume)
	require.Equal(t, w.Session, w3.Session)
	require.JSONEq(t, `{"key":"k","value":"kept"}`, string(c3.one(`{"command":"get","key":"k"}`)))
	require.Len(t, ss.farm.Instances(), 1)
}

func TestSharedHandOffOnShutdown(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2, handOff: true, stopLast: true})
	c, w := ss.mgrs[0].open("")
	c.one(`{"command":"set","key":"k","value":42}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, ss.mgrs[0].m.Shutdown(ctx))
	require.Equal(t, websocket.CloseServiceRestart, c.closeCode())
	require.Len(t, ss.farm.Instances(), 1, "the instance outlives its manager")

	c2, w2 := ss.mgrs[1].open("resume=" + w.Resume)
	require.Equal(t, w.Session, w2.Session)
	require.JSONEq(t, `{"key":"k","value":42}`, string(c2.one(`{"command":"get","key":"k"}`)))
}

func TestSharedStoreOutage(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 3})
	st := ss.mgrs[0]
	c, _ := st.open("")
	c.one(`{"command":"set","key":"k","value":"v"}`)

	ss.store.down.Store(true)
	eventually(t, "/health to say 503", func() bool { return st.health() == 503 })
	// The running session is not affected.
	require.JSONEq(t, `{"key":"k","value":"v"}`, string(c.one(`{"command":"get","key":"k"}`)))
	// A new one fails with a clear error.
	n := st.dial("")
	f := n.read()
	require.Equal(t, "error", f.Type)
	require.Equal(t, "unavailable", f.Error.Code)
	require.Equal(t, websocket.CloseTryAgainLater, n.closeCode())
	// The session ends while the store is away: its slot is freed later.
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"logout"}`)))
	require.Equal(t, websocket.CloseNormalClosure, c.closeCode())

	ss.store.down.Store(false)
	eventually(t, "/health to recover", func() bool { return st.health() == 200 })
	eventually(t, "the store to free the slot of the ended session", func() bool {
		return st.m.Capacity().Busy == 0 && len(ss.farm.Instances()) == 0
	})
	c2, _ := st.open("")
	c2.one(`{"command":"echo"}`)
	require.Equal(t, 1, ss.mgrs[1].m.Capacity().Busy)
}

func TestSharedEventStream(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2})
	resp, err := http.Get(ss.mgrs[1].srv.URL + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	lines := bufio.NewScanner(resp.Body)
	next := func(want store.EventType) store.Event {
		t.Helper()
		for lines.Scan() {
			data, ok := strings.CutPrefix(lines.Text(), "data: ")
			if !ok {
				continue
			}
			var e store.Event
			require.NoError(t, json.Unmarshal([]byte(data), &e))
			if e.Type == want {
				return e
			}
		}
		t.Fatalf("event stream ended before %s: %v", want, lines.Err())
		return store.Event{}
	}
	// A session placed by the other manager shows on this one's stream.
	c, w := ss.mgrs[0].open("")
	e := next(store.EventSessionOpened)
	require.Equal(t, w.Session, e.Session)
	require.Equal(t, "m0", e.Manager)
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"logout"}`)))
	require.Equal(t, w.Session, next(store.EventSessionEnded).Session)
	require.Equal(t, "farm-1", next(store.EventSlotFreed).Farm)
}

// TestSharedREST: an awv3 REST session is served by whichever manager a
// request reaches, on the same instance.
func TestSharedREST(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2})
	var login struct{ Status, ID string }
	resp, err := http.Get(ss.mgrs[0].srv.URL + "/login")
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&login))
	resp.Body.Close()
	require.Equal(t, "permitted", login.Status)

	exec := func(st *stack, task string) string {
		t.Helper()
		resp, err := http.Post(st.srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(task))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		return string(b)
	}
	exec(ss.mgrs[1], `{"command":"set","key":"k","value":"rest"}`)
	require.Contains(t, exec(ss.mgrs[0], `{"command":"get","key":"k"}`), `"rest"`)
	require.Contains(t, exec(ss.mgrs[1], `{"command":"get","key":"k"}`), `"rest"`)
	require.Len(t, ss.farm.Instances(), 1, "one instance served all three")

	resp, err = http.Get(ss.mgrs[0].srv.URL + "/logout/" + login.ID)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	eventually(t, "the instance to stop", func() bool { return len(ss.farm.Instances()) == 0 })
	resp, err = http.Post(ss.mgrs[1].srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "a logged-out session is gone everywhere")
}

// A resume request whose client has gone by the time the manager reads it
// (it waited in the socket of a manager that was frozen, and the client
// went to another) does not take the session from the manager serving it:
// the client does not answer the manager's ping.
func TestSharedResumeGivenUpIsNotTaken(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2})
	c, w := ss.mgrs[0].open("")
	c.one(`{"command":"set","key":"k","value":"kept"}`)

	conn, err := net.Dial("tcp", strings.TrimPrefix(ss.mgrs[1].srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET /ws?resume=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", w.Resume)
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // gone: it will never answer
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	rest, err := io.ReadAll(conn) // until the manager closes the connection
	require.NoError(t, err)
	require.NotContains(t, string(rest), `"welcome"`, "the manager took the session for a client that is gone")

	require.JSONEq(t, `{"key":"k","value":"kept"}`, string(c.one(`{"command":"get","key":"k"}`)),
		"the session goes on where it was")
	require.Len(t, ss.mgrs[0].m.Status().Sessions, 1)
	require.Empty(t, ss.mgrs[1].m.Status().Sessions)
}
