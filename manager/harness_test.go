package manager_test

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
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/forkthread"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/store"
	"github.com/drover-dev/drover/worker"
)

// The test binary doubles as the reference worker: the farm starts it with
// DROVER_TEST_WORKER=1.
func TestMain(m *testing.M) {
	if os.Getenv("DROVER_TEST_WORKER") == "1" {
		if err := worker.Run(context.Background(), worker.Config{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"), goleak.IgnoreTopFunction(forkthread.Goroutine))
}

type stackOpts struct {
	slots   int
	pools   []manager.Pool
	grace   time.Duration
	setup   func(*manager.Manager)
	maxMsg  int64
	janitor time.Duration
	store   store.Store // nil: the manager's own memory store
	limits  limits.Config
	auth    auth.RequestAuthenticator // nil: protected mode
}

type stack struct {
	t    testing.TB
	m    *manager.Manager
	farm *farm.Farm
	srv  *httptest.Server
}

func workerSpec(name string) farm.PoolSpec {
	return farm.PoolSpec{Name: name, Command: os.Args[0], Env: []string{"DROVER_TEST_WORKER=1"}, Protocol: farm.ProtocolNative}
}

func newStack(t testing.TB, o stackOpts) *stack {
	t.Helper()
	if o.slots == 0 {
		o.slots = 4
	}
	if o.pools == nil {
		o.pools = []manager.Pool{{Name: "default", Warm: 1}}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := manager.New(manager.Config{Pools: o.pools, ResumeGrace: o.grace, Logger: log,
		MaxMessageSize: o.maxMsg, JanitorInterval: o.janitor, Store: o.store, Limits: o.limits,
		Auth: o.auth})
	require.NoError(t, err)
	if o.setup != nil {
		o.setup(m)
	}
	specs := make([]farm.PoolSpec, 0, len(o.pools))
	for _, p := range o.pools {
		specs = append(specs, workerSpec(p.Name))
	}
	f, err := farm.New(farm.Config{Name: "test", Slots: o.slots, Pools: specs, Logger: log, OnExit: m.InstanceExited})
	require.NoError(t, err)
	m.AddFarm(f)
	srv := httptest.NewServer(m.Handler())
	st := &stack{t: t, m: m, farm: f, srv: srv}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
		srv.Close()
		require.NoError(t, f.Close(ctx))
	})
	return st
}

func (st *stack) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(st.srv.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// client is a test WebSocket client speaking protocol v1.
type client struct {
	t  testing.TB
	ws *websocket.Conn
}

type frame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Data     json.RawMessage `json:"data"`
	Session  string          `json:"session"`
	Instance string          `json:"instance"`
	Resume   string          `json:"resume"`
	Position int             `json:"position"`
	Event    string          `json:"event"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	binary []byte
}

func (st *stack) dial(query string) *client {
	st.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(st.wsURL(query), nil)
	require.NoError(st.t, err)
	c := &client{t: st.t, ws: ws}
	st.t.Cleanup(func() { _ = ws.Close() })
	return c
}

// open dials and waits for the welcome.
func (st *stack) open(query string) (*client, frame) {
	st.t.Helper()
	c := st.dial(query)
	for {
		// A slot may be busy warming an instance: the client queues briefly.
		if f := c.read(); f.Type != "queued" {
			require.Equal(st.t, "welcome", f.Type, "frame %+v", f)
			return c, f
		}
	}
}

func (c *client) read() frame {
	c.t.Helper()
	require.NoError(c.t, c.ws.SetReadDeadline(time.Now().Add(15*time.Second)))
	mt, b, err := c.ws.ReadMessage()
	require.NoError(c.t, err)
	if mt == websocket.BinaryMessage {
		return frame{Type: "binary", binary: b}
	}
	var f frame
	require.NoError(c.t, json.Unmarshal(b, &f), "frame %s", b)
	return f
}

func (c *client) expect(typ string) frame {
	c.t.Helper()
	f := c.read()
	require.Equal(c.t, typ, f.Type, "frame %+v", f)
	return f
}

func (c *client) send(s string) {
	c.t.Helper()
	require.NoError(c.t, c.ws.WriteMessage(websocket.TextMessage, []byte(s)))
}

// task sends a task and collects its results until done or error.
func (c *client) task(id, data string) (results []json.RawMessage, binary int, errFrame *frame) {
	c.t.Helper()
	c.send(`{"type":"task","id":` + id + `,"data":` + data + `}`)
	for {
		f := c.read()
		switch f.Type {
		case "result":
			require.JSONEq(c.t, id, string(f.ID))
			results = append(results, f.Data)
		case "binary":
			binary += len(f.binary)
		case "done":
			require.JSONEq(c.t, id, string(f.ID))
			return results, binary, nil
		case "error":
			return results, binary, &f
		default:
			c.t.Fatalf("unexpected frame %+v", f)
		}
	}
}

// one runs a task expected to give exactly one result.
func (c *client) one(data string) json.RawMessage {
	c.t.Helper()
	res, _, ef := c.task("1", data)
	require.Nil(c.t, ef, "task failed: %+v", ef)
	require.Len(c.t, res, 1)
	return res[0]
}

func (c *client) pid() int {
	c.t.Helper()
	var r struct {
		PID int `json:"pid"`
	}
	require.NoError(c.t, json.Unmarshal(c.one(`{"command":"pid"}`), &r))
	require.NotZero(c.t, r.PID)
	return r.PID
}

// closeErr reads until the connection closes and returns the close code.
func (c *client) closeCode() int {
	c.t.Helper()
	require.NoError(c.t, c.ws.SetReadDeadline(time.Now().Add(15*time.Second)))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		require.ErrorAs(c.t, err, &ce)
		return ce.Code
	}
}

func (st *stack) health() int {
	st.t.Helper()
	resp, err := http.Get(st.srv.URL + "/health")
	require.NoError(st.t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond until it holds: used for state that has no event to
// wait on (a process exit seen by the farm, a slot freed in the background).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
