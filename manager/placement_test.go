package manager_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/session"
)

// remoteFarm is a farm served over HTTP in this process, registered with
// a manager by its agent, as `drover farm` is.
type remoteFarm struct {
	f    *farm.Farm
	http *httptest.Server
}

// newRemoteFarm starts farm id with slots of the default pool, registered
// with the manager at mgrURL; it is closed at cleanup, after the manager.
func newRemoteFarm(t *testing.T, id string, slots int, mgrURL string, log *slog.Logger) *remoteFarm {
	t.Helper()
	f, err := farm.New(farm.Config{ID: id, Slots: slots, Pools: []farm.PoolSpec{workerSpec("default")},
		Logger: log.With("component", id)})
	require.NoError(t, err)
	relay := proxy.New(proxy.Options{Logger: log})
	fsrv, err := farm.NewServer(f, farm.ServerConfig{Token: sharedFarmToken, Relay: relay, Logger: log})
	require.NoError(t, err)
	farmHTTP := httptest.NewServer(fsrv)
	agent, err := farm.NewAgent(farm.AgentConfig{Farm: f, Managers: []string{mgrURL}, Token: sharedFarmToken,
		AdvertiseURL: farmHTTP.URL, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Logger: log.With("component", id+"-agent")})
	require.NoError(t, err)
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(actx) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopAgent()
		<-agentDone // its manager may be gone or refuse it: that is not this test's point
		farmHTTP.Close()
		require.NoError(t, relay.Shutdown(ctx))
		require.NoError(t, fsrv.Close())
		require.NoError(t, f.Close(ctx))
	})
	return &remoteFarm{f: f, http: farmHTTP}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newFarmlessStack is a manager with remote farms only; farms are added
// with newRemoteFarm.
func newFarmlessStack(t *testing.T, pools []manager.Pool) *stack {
	t.Helper()
	m, err := manager.New(manager.Config{Pools: pools, FarmToken: sharedFarmToken,
		HeartbeatInterval: 100 * time.Millisecond, Logger: testLogger().With("component", "manager")})
	require.NoError(t, err)
	st := &stack{t: t, m: m, srv: httptest.NewServer(m.Handler())}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
		st.srv.Close()
	})
	return st
}

// TestUnreachableFarmNewSessionsWelcome: a farm whose API the manager
// cannot reach (its process was killed, though its heartbeats have not
// stopped yet) fails no new session: each is started on the other farm,
// or queued when that is full, and no client sees an internal error.
func TestUnreachableFarmNewSessionsWelcome(t *testing.T) {
	st := newFarmlessStack(t, []manager.Pool{{Name: "default"}})
	log := testLogger()
	a := newRemoteFarm(t, "farm-a", 2, st.srv.URL, log) // the lower id: tried first
	newRemoteFarm(t, "farm-b", 2, st.srv.URL, log)
	eventually(t, "both farms", func() bool { return st.m.Capacity().Slots == 4 })

	a.http.Close() // connections to farm-a are refused from now on
	var onB []*client
	for range 2 {
		c, w := st.open("")
		require.Equal(t, "farm-b", farmOf(st.m, w.Instance))
		onB = append(onB, c)
	}

	// farm-b is full: a client that does not wait hears no_capacity, one
	// that waits is queued and gets the slot a logout frees.
	nw := st.dial("wait=false")
	f := nw.expect("error")
	require.Equal(t, session.CodeNoCapacity, f.Error.Code, "%+v", f.Error)
	require.Equal(t, "no free instance", f.Error.Message)
	queued := st.dial("")
	require.Equal(t, "queued", queued.read().Type)
	onB[0].send(`{"type":"logout"}`)
	// The queue may repeat the client's position before a slot frees.
	w := queued.read()
	for w.Type == "queued" {
		w = queued.read()
	}
	require.Equal(t, "welcome", w.Type, "frame %+v", w)
	require.Equal(t, "farm-b", farmOf(st.m, w.Instance))
	queued.one(`{"command":"echo"}`)
}

// TestNoFarmServesPool: a pool the manager knows but no registered farm
// serves fails at once, with a message that names the pool and nothing of
// the farms.
func TestNoFarmServesPool(t *testing.T) {
	f, err := farm.New(farm.Config{Slots: 1, Pools: []farm.PoolSpec{workerSpec("default")}})
	require.NoError(t, err)
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "cad"}, {Name: "default"}}})
	require.NoError(t, err)
	m.AddFarm(f) // serves "default" only
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		require.NoError(t, m.Shutdown(context.Background()))
		srv.Close()
		require.NoError(t, f.Close(context.Background()))
	})
	begin := time.Now()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?pool=cad", nil)
	require.NoError(t, err)
	defer ws.Close()
	c := &client{t: t, ws: ws}
	fr := c.expect("error")
	require.Equal(t, session.CodeNotFound, fr.Error.Code)
	require.Equal(t, `no farm serves pool "cad"`, fr.Error.Message)
	require.Less(t, time.Since(begin), 5*time.Second, "at once, not after the queue timeout")

	_, err = m.Open(context.Background(), manager.OpenOptions{Pool: "cad", Wait: true})
	require.ErrorIs(t, err, manager.ErrNoFarm)
}

func farmOf(m *manager.Manager, instance string) string {
	for _, in := range m.Status().Instances {
		if in.ID == instance {
			return in.Farm
		}
	}
	return ""
}
