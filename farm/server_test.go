package farm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/worker"
)

var _ Relayer = (*proxy.Relay)(nil)

// The server, agent and leftovers tests need two more instance programs than
// main_test.go's: the reference worker and a farm that records its state.
// They run before TestMain, from init, under an environment variable of
// their own.
const roleEnv = "DROVER_FARM_TEST_ROLE"

func init() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	// Not for the processes a role starts: they have roles of their own.
	_ = os.Unsetenv(roleEnv)
	switch role {
	case "worker":
		os.Exit(runWorker())
	case "statefarm":
		os.Exit(runStateFarm())
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
	os.Exit(2)
}

// runWorker is the reference worker, until SIGTERM.
func runWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := worker.Run(ctx, worker.Config{}); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

// workerPool is a pool whose instances are the reference worker.
func workerPool(name string) PoolSpec {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return PoolSpec{
		Name:         name,
		Command:      exe,
		Env:          []string{roleEnv + "=worker", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")},
		StartTimeout: 20 * time.Second,
	}
}

const testToken = "farm-test-token-7f3a9c" // distinctive, to find it in logs

// capture returns a debug logger that writes to the test output and to the
// returned buffer.
func capture(t testing.TB) (*slog.Logger, *testutil.SyncBuffer) {
	buf := &testutil.SyncBuffer{}
	w := io.MultiWriter(buf, t.Output())
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

type testServer struct {
	f      *Farm
	s      *Server
	http   *httptest.Server
	client *http.Client
	logs   *testutil.SyncBuffer
}

func newTestServer(t *testing.T, fcfg Config, scfg ServerConfig) *testServer {
	t.Helper()
	log, logs := capture(t)
	fcfg.Logger = log
	f := newTestFarm(t, fcfg)
	relay := proxy.New(proxy.Options{Logger: log})
	scfg.Token = testToken
	scfg.Relay = relay
	scfg.Logger = log
	s, err := NewServer(f, scfg)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, relay.Shutdown(ctx))
		hs.Close()
		client.CloseIdleConnections()
		require.NoError(t, s.Close())
	})
	return &testServer{f: f, s: s, http: hs, client: client, logs: logs}
}

// do sends a request with the farm token (or the given Authorization value
// when auth is not nil) and returns the status and body.
func (ts *testServer) do(t *testing.T, method, path, body string, auth *string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.http.URL+path, rd)
	require.NoError(t, err)
	if auth == nil {
		req.Header.Set("Authorization", "Bearer "+testToken)
	} else if *auth != "" {
		req.Header.Set("Authorization", *auth)
	}
	resp, err := ts.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func ptr(s string) *string { return &s }

func TestServerNeedsTokenAndRelay(t *testing.T) {
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	_, err := NewServer(f, ServerConfig{Relay: proxy.New(proxy.Options{})})
	require.ErrorContains(t, err, "token")
	_, err = NewServer(f, ServerConfig{Token: "x"})
	require.ErrorContains(t, err, "relay")
}

func TestServerAuth(t *testing.T) {
	ts := newTestServer(t, Config{Slots: 2, Pools: []PoolSpec{childPool("p", "listen")}},
		ServerConfig{Require: func(context.Context, string, int) (bool, error) {
			t.Error("require called without the token")
			return false, nil
		}})
	routes := []struct{ method, path, body string }{
		{"POST", PathInstances, `{"pool":"p"}`},
		{"DELETE", PathInstances + "/p-1", ""},
		{"GET", PathStatus, ""},
		{"GET", PathInstance + "p-1", ""},
		{"GET", "/require/127.0.0.1/8181/1", ""},
		{"GET", "/metrics", ""},
		{"GET", "/no/such/route", ""},
	}
	for _, tc := range []struct {
		name, auth, query string
	}{
		{"no header", "", ""},
		{"wrong token", "Bearer " + testToken + "x", ""},
		{"prefix of the token", "Bearer " + testToken[:5], ""},
		{"no Bearer", testToken, ""},
		{"lower-case bearer", "bearer " + testToken, ""},
		{"basic", "Basic " + testToken, ""},
		{"token in the query outside /require", "", "?token=" + testToken},
		{"wrong token in the query", "", "?token=nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range routes {
				if tc.query != "" && strings.HasPrefix(r.path, "/require/") && strings.Contains(tc.query, testToken) {
					continue // accepted there, see TestServerRequire
				}
				code, body := ts.do(t, r.method, r.path+tc.query, r.body, ptr(tc.auth))
				require.Equal(t, http.StatusUnauthorized, code, "%s %s", r.method, r.path)
				require.JSONEq(t, `{"message":"missing or wrong token"}`, body)
			}
		})
	}
	require.Empty(t, ts.f.Instances(), "nothing started")
	require.Contains(t, ts.logs.String(), "unauthorized farm API request")
	require.NotContains(t, ts.logs.String(), testToken[:8], "the token is never logged")
}

func TestServerStartStopStatus(t *testing.T) {
	ts := newTestServer(t, Config{ID: "f1", Name: "farm one", Slots: 1,
		Pools: []PoolSpec{childPool("p", "listen")}}, ServerConfig{})

	code, body := ts.do(t, "GET", PathStatus, "", nil)
	require.Equal(t, http.StatusOK, code)
	var st FarmStatus
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Equal(t, FarmStatus{ID: "f1", Name: "farm one", Slots: 1, Free: 1, Pools: []string{"p"},
		Instances: []Instance{}}, st)

	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"bad json", `{"pool":`, http.StatusBadRequest},
		{"no pool", `{}`, http.StatusBadRequest},
		{"unknown pool", `{"pool":"nope"}`, http.StatusNotFound},
		{"model unsupported", `{"pool":"p","model":"m"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := ts.do(t, "POST", PathInstances, tc.body, nil)
			require.Equal(t, tc.code, code, body)
			require.Contains(t, body, `"message":`)
		})
	}

	code, body = ts.do(t, "POST", PathInstances, `{"pool":"p"}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	var inst Instance
	require.NoError(t, json.Unmarshal([]byte(body), &inst))
	killOnCleanup(t, inst.PID)
	require.Equal(t, "p", inst.Pool)
	require.Equal(t, "f1", inst.Farm)
	require.Equal(t, StateReady, inst.State)
	require.Empty(t, inst.URL, "the manager builds the URL")
	require.Equal(t, "pong "+inst.ID, ask(t, inst.Addr, "ping"))

	code, body = ts.do(t, "POST", PathInstances, `{"pool":"p"}`, nil)
	require.Equal(t, http.StatusTooManyRequests, code, "no free slot: %s", body)

	_, body = ts.do(t, "GET", PathStatus, "", nil)
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Equal(t, 0, st.Free)
	require.Len(t, st.Instances, 1)
	require.Equal(t, inst.ID, st.Instances[0].ID)

	code, _ = ts.do(t, "DELETE", PathInstances+"/"+inst.ID, "", nil)
	require.Equal(t, http.StatusNoContent, code)
	requireGone(t, inst.PID)
	code, body = ts.do(t, "DELETE", PathInstances+"/"+inst.ID, "", nil)
	require.Equal(t, http.StatusNotFound, code, body)

	ts.f.Drain()
	code, body = ts.do(t, "POST", PathInstances, `{"pool":"p"}`, nil)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	_, body = ts.do(t, "GET", PathStatus, "", nil)
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.True(t, st.Draining)
	require.Empty(t, st.Instances)
	require.Equal(t, 1, st.Free)
}

// dialInstance opens /instances/id on the test server.
func (ts *testServer) dialInstance(t *testing.T, id string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+testToken)
	u := "ws" + strings.TrimPrefix(ts.http.URL, "http") + PathInstance + id
	return websocket.DefaultDialer.Dial(u, h)
}

func TestServerRelaysNativeSession(t *testing.T) {
	ts := newTestServer(t, Config{Slots: 1, Pools: []PoolSpec{workerPool("w")}}, ServerConfig{})
	code, body := ts.do(t, "POST", PathInstances, `{"pool":"w"}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	var inst Instance
	require.NoError(t, json.Unmarshal([]byte(body), &inst))
	killOnCleanup(t, inst.PID)

	_, resp, err := ts.dialInstance(t, "w-nope")
	require.Error(t, err)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	ws, _, err := ts.dialInstance(t, inst.ID)
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"task","id":7,"data":{"command":"pid"}}`)))
	_, msg, err := ws.ReadMessage()
	require.NoError(t, err)
	require.JSONEq(t, fmt.Sprintf(`{"type":"result","id":7,"data":{"pid":%d,"instance":%q}}`, inst.PID, inst.ID), string(msg))
	_, msg, err = ws.ReadMessage()
	require.NoError(t, err)
	require.JSONEq(t, `{"type":"done","id":7}`, string(msg))

	// Binary frames pass unchanged.
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"task","id":"s","data":{"command":"stream","bytes":100000,"chunk":30000}}`)))
	var got int
	for {
		typ, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		if typ == websocket.BinaryMessage {
			got += len(msg)
			continue
		}
		if strings.Contains(string(msg), `"done"`) {
			break
		}
	}
	require.Equal(t, 100000, got)
	require.NotContains(t, ts.logs.String(), testToken[:8])
}

// recordingRelay is a Relayer that records the request it was given.
type recordingRelay struct {
	mu   sync.Mutex
	reqs []*http.Request
	ups  []string
}

func (r *recordingRelay) ServeWebSocket(w http.ResponseWriter, req *http.Request, upstream string) error {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.ups = append(r.ups, upstream)
	r.mu.Unlock()
	w.WriteHeader(http.StatusTeapot)
	return nil
}

func TestServerInstanceNeverSeesToken(t *testing.T) {
	log, logs := capture(t)
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}, Logger: log})
	rr := &recordingRelay{}
	s, err := NewServer(f, ServerConfig{Token: testToken, Relay: rr, Logger: log})
	require.NoError(t, err)
	defer s.Close()
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	req := httptest.NewRequest("GET", PathInstance+inst.ID, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Origin", "http://viewer.example")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	require.Equal(t, http.StatusTeapot, rec.Code)
	require.Len(t, rr.reqs, 1)
	require.Empty(t, rr.reqs[0].Header.Get("Authorization"), "the farm token stays with the farm")
	require.Equal(t, "http://viewer.example", rr.reqs[0].Header.Get("Origin"))
	require.Equal(t, "ws://"+inst.Addr+"/", rr.ups[0])
	require.Equal(t, "Bearer "+testToken, req.Header.Get("Authorization"), "the caller's request is not modified")
	require.NotContains(t, logs.String(), testToken[:8])
}

func TestEndpoint(t *testing.T) {
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("slow", "slow", delayEnv+"=1h")}})
	_, _, err := f.Endpoint("nope")
	require.ErrorIs(t, err, ErrNotFound)
	res, starting := startWatched(startCtx(t), t, f, "slow")
	_, _, err = f.Endpoint(starting.ID)
	require.ErrorIs(t, err, ErrNotFound, "a starting instance has no endpoint yet")
	require.NoError(t, f.StopInstance(startCtx(t), starting.ID))
	<-res
}

func TestServerStopsOrphans(t *testing.T) {
	const grace = 300 * time.Millisecond
	ts := newTestServer(t, Config{Slots: 2, Pools: []PoolSpec{workerPool("w")}},
		ServerConfig{OrphanGrace: grace})
	start := func() Instance {
		code, body := ts.do(t, "POST", PathInstances, `{"pool":"w"}`, nil)
		require.Equal(t, http.StatusOK, code, body)
		var inst Instance
		require.NoError(t, json.Unmarshal([]byte(body), &inst))
		killOnCleanup(t, inst.PID)
		return inst
	}
	orphan, used := start(), start()
	ws, _, err := ts.dialInstance(t, used.ID)
	require.NoError(t, err)

	requireGone(t, orphan.PID)
	time.Sleep(2 * grace)
	require.False(t, gone(used.PID), "an instance with a connection stays")
	require.Len(t, ts.f.Instances(), 1)

	require.NoError(t, ws.Close())
	requireGone(t, used.PID)
	require.Contains(t, ts.logs.String(), "stopping an instance nobody is connected to")
}

// A manager that stops waiting for a stop (its request's timeout, or it
// died mid-request) does not cut the instance's stop short: the instance
// still gets its stop grace and exits by itself.
func TestServerStopOutlivesItsRequest(t *testing.T) {
	ts := newTestServer(t, Config{ID: "f1", Slots: 1, StopGrace: time.Minute,
		Pools: []PoolSpec{childPool("p", "linger", delayEnv+"=400ms")}}, ServerConfig{})
	code, body := ts.do(t, "POST", PathInstances, `{"pool":"p"}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	var inst Instance
	require.NoError(t, json.Unmarshal([]byte(body), &inst))
	killOnCleanup(t, inst.PID)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, ts.http.URL+PathInstances+"/"+inst.ID, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	sent := make(chan error, 1)
	go func() {
		resp, err := ts.client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		sent <- err
	}()
	require.Eventually(t, func() bool {
		insts := ts.f.Instances()
		return len(insts) == 1 && insts[0].State == StateStopping
	}, waitFor, time.Millisecond, "the stop began")
	cancel() // the manager gives up on its request
	require.ErrorIs(t, <-sent, context.Canceled)

	requireGone(t, inst.PID)
	exited := `msg="instance exited" instance=` + inst.ID + ` `
	require.Eventually(t, func() bool { return strings.Contains(ts.logs.String(), exited) }, waitFor, time.Millisecond)
	logs := ts.logs.String()
	require.Regexp(t, `msg="instance exited" instance=`+inst.ID+` .*status="exit status 0"`, logs,
		"the instance ended its own stop")
	require.NotContains(t, logs, "killing")
}

func TestServerRequire(t *testing.T) {
	type call struct {
		url   string
		slots int
	}
	var mu sync.Mutex
	var calls []call
	ts := newTestServer(t, Config{ID: "f1", Slots: 4, Pools: []PoolSpec{childPool("p", "listen")}},
		ServerConfig{Require: func(_ context.Context, u string, slots int) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{u, slots})
			return true, nil
		}})
	for _, tc := range []struct {
		path  string
		code  int
		want  call
		slots int
	}{
		{"/require/10.1.2.3/8181/2", 200, call{"http://10.1.2.3:8181", 2}, 2},
		{"/require/10.1.2.3/8181/99", 200, call{"http://10.1.2.3:8181", 4}, 4},
		{"/require/10.1.2.3/8181", 200, call{"http://10.1.2.3:8181", 0}, 4},
		{"/require/10.1.2.3/8181/", 200, call{"http://10.1.2.3:8181", 0}, 4},
		{"/require/10.1.2.3/8181/all", 200, call{"http://10.1.2.3:8181", 0}, 4},
		{"/require/::1/8181/1", 200, call{"http://[::1]:8181", 1}, 1},
		{"/require/manager.internal/80/1", 200, call{"http://manager.internal:80", 1}, 1},
		{"/require/10.1.2.3/0/1", 400, call{}, 0},
		{"/require/10.1.2.3/http/1", 400, call{}, 0},
		{"/require/10.1.2.3/8181/-1", 400, call{}, 0},
		{"/require/10.1.2.3/8181/x", 400, call{}, 0},
		{"/require/a%20b/8181/1", 400, call{}, 0},
	} {
		t.Run(tc.path, func(t *testing.T) {
			mu.Lock()
			calls = nil
			mu.Unlock()
			// awv3 managers put the token in the query.
			code, body := ts.do(t, "GET", tc.path+"?token="+testToken, "", ptr(""))
			require.Equal(t, tc.code, code, body)
			mu.Lock()
			defer mu.Unlock()
			if tc.code != 200 {
				require.Empty(t, calls)
				return
			}
			require.Equal(t, []call{tc.want}, calls)
			require.JSONEq(t, fmt.Sprintf(`{"farm":"f1","manager":%q,"slots":%d,"registered":true}`,
				tc.want.url, tc.slots), body)
		})
	}
	code, _ := ts.do(t, "GET", "/require/10.1.2.3/8181/1", "", nil)
	require.Equal(t, http.StatusOK, code, "the header works too")
	require.NotContains(t, ts.logs.String(), testToken[:8])

	plain := newTestServer(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}}, ServerConfig{})
	code, _ = plain.do(t, "GET", "/require/10.1.2.3/8181/1", "", nil)
	require.Equal(t, http.StatusNotImplemented, code)
}

// runStateFarm is a farm process with a state directory
// (DROVER_FARM_TEST_STATE) for TestLeftoversKilledAtRestart. It starts two
// instances and a process in the first one's group, prints
// "PID PID DESCENDANT" and blocks until killed.
func runStateFarm() int {
	f, err := New(Config{
		Slots:    2,
		Pools:    []PoolSpec{childPool("p", "listen")},
		StateDir: os.Getenv("DROVER_FARM_TEST_STATE"),
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "statefarm:", err)
		return 1
	}
	var pids []string
	var first Instance
	for i := range 2 {
		inst, err := f.StartInstance(context.Background(), "p")
		if err != nil {
			fmt.Fprintln(os.Stderr, "statefarm:", err)
			return 1
		}
		if i == 0 {
			first = inst
		}
		pids = append(pids, strconv.Itoa(inst.PID))
	}
	// A descendant in the first instance's group, as one the instance
	// started itself would be. Its output goes nowhere: a write to a pipe
	// of this farm after its death would kill it with SIGPIPE.
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "statefarm:", err)
		return 1
	}
	f.state.flush() // the pids are printed once the state file has them
	gc := exec.Command(exe)
	gc.Env = append(os.Environ(), childEnv+"=sleep")
	gc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: first.PID}
	if err := gc.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "statefarm:", err)
		return 1
	}
	fmt.Println(strings.Join(pids, " "), gc.Process.Pid)
	time.Sleep(time.Hour)
	return 0
}

func TestServerLiveliness(t *testing.T) {
	ts := newTestServer(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}}, ServerConfig{})
	inst, err := ts.f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	// From this host no token is needed: instances report without one.
	code, body := ts.do(t, "POST", "/liveliness/nope?liveliness=ping", "", ptr(""))
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = ts.do(t, "POST", "/liveliness/"+inst.ID+"?liveliness=ping", "", ptr(""))
	require.Equal(t, http.StatusBadRequest, code, "not a stream instance: %s", body)

	// From elsewhere it is.
	req := httptest.NewRequest("POST", "/liveliness/"+inst.ID+"?liveliness=disconnect", nil)
	req.RemoteAddr = "192.0.2.7:4711"
	rec := httptest.NewRecorder()
	ts.s.ServeHTTP(rec, req)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	// And only liveliness reports go without it.
	code, _ = ts.do(t, "GET", PathStatus, "", ptr(""))
	require.Equal(t, http.StatusUnauthorized, code)
	require.Len(t, ts.f.Instances(), 1)
}

// With Direct, native instances are advertised at their own port; without
// it, the URL is left to the manager (the farm's one port).
func TestServerDirectURLs(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) {
			ts := newTestServer(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}},
				ServerConfig{Direct: direct, OrphanGrace: -1})
			code, body := ts.do(t, "POST", PathInstances, `{"pool":"p"}`, nil)
			require.Equal(t, http.StatusOK, code, body)
			var inst Instance
			require.NoError(t, json.Unmarshal([]byte(body), &inst))
			if direct {
				require.Equal(t, "ws://"+inst.Addr+"/", inst.URL)
			} else {
				require.Empty(t, inst.URL)
			}
		})
	}
}

// A manager that relays a viewer to a stream instance's own port (Direct)
// says so, and the farm keeps the instance past its initial-use time.
func TestServerStreamConnected(t *testing.T) {
	const initialUse = 300 * time.Millisecond
	pool := childPool("p", "listen")
	pool.Protocol = ProtocolStream
	pool.InitialUse = initialUse
	ts := newTestServer(t, Config{Slots: 1, Pools: []PoolSpec{pool}}, ServerConfig{Direct: true, OrphanGrace: -1})
	inst, err := ts.f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	code, body := ts.do(t, "POST", PathInstances+"/nope"+farmapi.PathConnected, "", nil)
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = ts.do(t, "POST", PathInstances+"/"+inst.ID+farmapi.PathConnected, "", ptr(""))
	require.Equal(t, http.StatusUnauthorized, code, "the token is needed: %s", body)
	code, body = ts.do(t, "POST", PathInstances+"/"+inst.ID+farmapi.PathConnected, "", nil)
	require.Equal(t, http.StatusNoContent, code, body)

	// Three initial-use periods: an instance nobody connected to is
	// stopped after one.
	for deadline := time.Now().Add(3 * initialUse); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		insts := ts.f.Instances()
		require.Len(t, insts, 1)
		require.Equal(t, StateReady, insts[0].State)
	}
}
