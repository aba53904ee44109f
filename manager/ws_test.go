package manager_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/manager"
)

// scriptFarm is a farm of one instance, a native-protocol server in this
// process that answers every task with serve, writing raw frames.
type scriptFarm struct {
	srv *httptest.Server
}

func newScriptFarm(t *testing.T, serve func(conn *websocket.Conn, task []byte)) *scriptFarm {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, task, err := ws.ReadMessage()
			if err != nil {
				return
			}
			serve(ws, task)
		}
	}))
	t.Cleanup(srv.Close)
	return &scriptFarm{srv: srv}
}

func (f *scriptFarm) ID() string      { return "script" }
func (f *scriptFarm) Slots() int      { return 1 }
func (f *scriptFarm) Pools() []string { return []string{"default"} }
func (f *scriptFarm) StartInstance(_ context.Context, pool string) (farm.Instance, error) {
	return farm.Instance{ID: "script-1", Pool: pool, Farm: "script",
		Addr: strings.TrimPrefix(f.srv.URL, "http://"), State: farm.StateReady, Started: time.Now()}, nil
}
func (f *scriptFarm) StopInstance(context.Context, string) error { return nil }

// TestStreamedResultIsNotHeldBack: the instance sends a result and, in the
// same write, the start of a large binary frame whose rest comes later.
// The manager reads both at once, yet must not keep the result back until
// the binary frame is complete.
func TestStreamedResultIsNotHeldBack(t *testing.T) {
	rest := make(chan struct{})
	big := make([]byte, 100_000)
	f := newScriptFarm(t, func(ws *websocket.Conn, _ []byte) {
		b := wsframe.AppendFrame(nil, wsframe.OpText, []byte(`{"type":"result","id":1,"data":"first"}`), nil)
		b = wsframe.AppendFrame(b, wsframe.OpBinary, big, nil)
		cut := len(b) - len(big) + 1000
		_, _ = ws.NetConn().Write(b[:cut])
		<-rest
		_, _ = ws.NetConn().Write(b[cut:])
		_, _ = ws.NetConn().Write(wsframe.AppendFrame(nil, wsframe.OpText, []byte(`{"type":"done","id":1}`), nil))
	})
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default"}}})
	require.NoError(t, err)
	m.AddFarm(f)
	srv := httptest.NewServer(m.Handler())
	defer func() {
		close(rest)
		srv.Close()
		require.NoError(t, m.Shutdown(context.Background()))
	}()
	c := &client{t: t}
	c.ws, _, err = websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	require.NoError(t, err)
	defer c.ws.Close()
	for c.read().Type != "welcome" {
	}
	c.send(`{"type":"task","id":"t","data":{}}`)
	r := c.expect("result")
	require.JSONEq(t, `"first"`, string(r.Data))
	rest <- struct{}{}
	require.Len(t, c.expect("binary").binary, len(big))
	require.JSONEq(t, `"t"`, string(c.expect("done").ID))
}
