package drover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/forkthread"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/worker"
	"github.com/drover-dev/drover/worker/viewer"
)

// The test binary is also the instance program of the native and stream
// pools: the farm starts it with childEnv set.
const childEnv = "DROVER_ROOT_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
	case "worker":
		if err := worker.Run(context.Background(), worker.Config{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "stream":
		os.Exit(streamChild())
	case "viewer":
		if err := viewer.Run(context.Background(), "", viewer.Config{Dir: os.Getenv("VIEWER_MODELS")}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"), goleak.IgnoreTopFunction(forkthread.Goroutine))
}

// streamChild echoes WebSocket messages on $DROVER_PORT, SC-server style;
// the farm's port probe finds it ready. To the text message "hops" it
// answers with the X-Forwarded-For header of its connection: every relay
// on the way adds an address to it.
func streamChild() int {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("DROVER_PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var up websocket.Upgrader
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if typ == websocket.TextMessage && string(msg) == "hops" {
				msg = []byte(r.Header.Get("X-Forwarded-For"))
			}
			if err := ws.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	return 0
}

func child(mode string, spec farm.PoolSpec) farm.PoolSpec {
	spec.Command = os.Args[0]
	spec.Env = append(spec.Env, childEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	spec.StartTimeout = 20 * time.Second // a -race child on a loaded machine starts slowly
	return spec
}

func catPath(t *testing.T) string {
	t.Helper()
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	return cat
}

func start(t *testing.T, cfg drover.Config) *drover.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	srv, err := drover.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	})
	require.NoError(t, srv.Start())
	return srv
}

func wsURL(srv *drover.Server, path string) string { return "ws://" + srv.Addr().String() + path }

// Every protocol through one call, the pools declared once: native
// instances dialled directly, stdio ones adapted behind the local farm's
// server, stream ones relayed by the manager to their own ports.
func TestEveryProtocolThroughOneCall(t *testing.T) {
	srv := start(t, drover.Config{
		Farm: farm.Config{Slots: 3},
		Pools: []drover.Pool{
			{Pool: manager.Pool{Name: "native"}, PoolSpec: child("worker", farm.PoolSpec{})},
			{Pool: manager.Pool{Name: "cat"}, PoolSpec: farm.PoolSpec{Command: catPath(t),
				Protocol: farm.ProtocolStdio, IdleGap: 50 * time.Millisecond}},
			{PoolSpec: child("stream", farm.PoolSpec{Name: "stream", Protocol: farm.ProtocolStream})},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("native", func(t *testing.T) {
		s, err := client.Dial(ctx, wsURL(srv, "/ws"), client.Options{Pool: "native"})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Logout()) }()
		res, err := s.Execute(ctx, json.RawMessage(`{"command":"echo","n":1}`))
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.JSONEq(t, `{"command":"echo","n":1}`, string(res[0].Data))
	})
	t.Run("stdio", func(t *testing.T) {
		s, err := client.Dial(ctx, wsURL(srv, "/ws"), client.Options{Pool: "cat"})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Logout()) }()
		res, err := s.Execute(ctx, json.RawMessage(`{"hello":"cat"}`))
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.JSONEq(t, `{"hello":"cat"}`, string(res[0].Data))
	})
	t.Run("stream", func(t *testing.T) {
		ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(srv, "/stream?pool=stream"), nil)
		require.NoError(t, err)
		defer ws.Close()
		require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}))
		typ, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, websocket.BinaryMessage, typ)
		require.Equal(t, []byte{1, 2, 3}, msg)
	})
	t.Run("in process", func(t *testing.T) {
		s, err := srv.Manager().Open(ctx, manager.OpenOptions{Pool: "cat"})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Close()) }()
		res, err := s.Execute(ctx, []byte(`{"in":"process"}`))
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.JSONEq(t, `{"in":"process"}`, string(res[0].Data))
	})
}

// Stop ends sessions with a close frame, stops every instance, closes Done
// and the listener, and answers every later call alike.
func TestStopEndsEverything(t *testing.T) {
	srv, err := drover.New(drover.Config{
		Addr:  "127.0.0.1:0",
		Farm:  farm.Config{Slots: 2},
		Pools: []drover.Pool{{PoolSpec: farm.PoolSpec{Name: "cat", Command: catPath(t), Protocol: farm.ProtocolStdio}}},
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	require.NoError(t, srv.Start(), "a second Start does nothing")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(srv, "/ws"), nil)
	require.NoError(t, err)
	defer ws.Close()
	var welcome struct{ Type, Instance string }
	require.NoError(t, ws.ReadJSON(&welcome))
	require.Equal(t, "welcome", welcome.Type)
	insts := srv.Farm().Instances()
	require.Len(t, insts, 1)
	pid := insts[0].PID
	require.Positive(t, pid)

	select {
	case <-srv.Done():
		t.Fatal("Done closed while serving")
	default:
	}
	require.NoError(t, srv.Stop(ctx))
	<-srv.Done()
	var ce *websocket.CloseError
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			require.ErrorAs(t, err, &ce)
			break
		}
	}
	require.Equal(t, websocket.CloseGoingAway, ce.Code)
	require.Empty(t, srv.Farm().Instances())
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the instance process is gone")
	_, err = net.Dial("tcp", srv.Addr().String())
	require.Error(t, err, "the listener is closed")

	require.NoError(t, srv.Stop(ctx), "a second Stop answers as the first")
	require.ErrorIs(t, srv.Start(), drover.ErrStopped)
}

// A server that never started stops too, and a failed New leaves nothing
// behind: here the manager refuses its config after the listener and the
// farm were made.
func TestStopWithoutStartAndRollback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	pools := []drover.Pool{{PoolSpec: farm.PoolSpec{Name: "cat", Command: catPath(t), Protocol: farm.ProtocolStdio}}}

	_, err = drover.New(drover.Config{Addr: addr, Pools: pools, Manager: manager.Config{DefaultPool: "nope"}})
	require.ErrorContains(t, err, `default pool "nope" is not configured`)

	srv, err := drover.New(drover.Config{Addr: addr, Pools: pools})
	require.NoError(t, err, "the failed New released its address")
	select {
	case <-srv.Done():
		t.Fatal("Done closed before Stop")
	default:
	}
	require.NoError(t, srv.Stop(context.Background()))
	<-srv.Done()
	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err, "Stop released the address")
	require.NoError(t, ln.Close())
}

// Pools are declared once; a pool nothing can serve fails at setup, not in
// the queue.
func TestPoolsAreCheckedAtSetup(t *testing.T) {
	cat := farm.PoolSpec{Command: "/bin/cat", Protocol: farm.ProtocolStdio}
	for _, tc := range []struct {
		name string
		cfg  drover.Config
		err  string
		is   error
	}{
		{name: "no pools", err: "drover: no pools configured"},
		{name: "no name", cfg: drover.Config{Pools: []drover.Pool{{PoolSpec: cat}}}, err: "a pool has no name"},
		{
			name: "two names",
			cfg: drover.Config{Pools: []drover.Pool{{Pool: manager.Pool{Name: "a"},
				PoolSpec: farm.PoolSpec{Name: "b", Command: "/bin/cat"}}}},
			err: `drover: pool "a" is also named "b": name it once`,
		},
		{
			name: "nothing starts its instances",
			cfg:  drover.Config{Pools: []drover.Pool{{Pool: manager.Pool{Name: "cad", Warm: 1}}}},
			err:  `drover: no farm serves pool "cad"`,
			is:   drover.ErrNoFarm,
		},
		{
			name: "pools declared twice",
			cfg: drover.Config{Pools: []drover.Pool{{Pool: manager.Pool{Name: "a"}, PoolSpec: cat}},
				Manager: manager.Config{Pools: []manager.Pool{{Name: "a"}}}},
			err: "declare pools once",
		},
		{
			name: "the farm refuses a spec",
			cfg:  drover.Config{Pools: []drover.Pool{{Pool: manager.Pool{Name: "x"}, PoolSpec: farm.PoolSpec{Protocol: "carrier-pigeon"}}}},
			err:  `pool "x"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := drover.New(tc.cfg)
			require.Nil(t, srv)
			require.ErrorContains(t, err, tc.err)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
		})
	}
}

// A pool without a farm half is for farms on other machines, which a farm
// token admits; there is no local farm then.
func TestRemoteOnlyPool(t *testing.T) {
	srv := start(t, drover.Config{
		Manager: manager.Config{FarmToken: "remote-token-0123456789"},
		Pools:   []drover.Pool{{Pool: manager.Pool{Name: "cad"}}},
	})
	require.Nil(t, srv.Farm())
	// Registering needs the farm token (listing farms is an admin's, which
	// a loopback caller is while no admin token is set).
	resp, err := http.Post("http://"+srv.Addr().String()+"/api/v1/farms", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the farm API is on, behind the token")
	require.Empty(t, srv.Manager().Status().Farms)
}

// Without an address the embedder serves the handler itself.
func TestNoAddr(t *testing.T) {
	srv, err := drover.New(drover.Config{Pools: []drover.Pool{{Pool: manager.Pool{Name: "cat"},
		PoolSpec: farm.PoolSpec{Command: catPath(t), Protocol: farm.ProtocolStdio}}}})
	require.NoError(t, err)
	require.Nil(t, srv.Addr())
	err = srv.Start()
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "Handler"), err.Error())
	require.NoError(t, srv.Stop(context.Background()))
	require.False(t, errors.Is(srv.Stop(context.Background()), context.Canceled))
}
