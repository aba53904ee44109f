package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// restErr is the body of a REST error.
type restErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func getErr(t *testing.T, method, url string) (int, restErr) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var e restErr
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	return resp.StatusCode, e
}

// Every REST error body carries a code and a message.
func TestRESTErrorBodies(t *testing.T) {
	st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default", Warm: 0}}})
	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"logout of an unknown session", "GET", "/logout/nope", 404, session.CodeNotFound},
		{"execute in an unknown session", "POST", "/execute/nope", 404, session.CodeNotFound},
		{"an unknown route", "GET", "/no/such/route", 404, session.CodeNotFound},
		{"a bad login id", "GET", "/login/" + strings.Repeat("x", 129), 400, session.CodeBadRequest},
		{"a bad wait", "GET", "/login?wait=maybe", 400, session.CodeBadRequest},
		{"a stream without a WebSocket", "GET", "/stream", 400, session.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e := getErr(t, tc.method, st.srv.URL+tc.path)
			require.Equal(t, tc.status, status)
			require.Equal(t, tc.code, e.Code)
			require.NotEmpty(t, e.Message)
		})
	}
	// A rejected login says why.
	var login struct{ Status, ID string }
	getJSON(t, st.srv.URL+"/login", &login)
	require.Equal(t, "permitted", login.Status)
	var rejected struct{ Status, Code, Message string }
	getJSON(t, st.srv.URL+"/login", &rejected)
	require.Equal(t, "rejected", rejected.Status)
	require.Equal(t, session.CodeNoCapacity, rejected.Code)
	require.NotEmpty(t, rejected.Message)
}

// The three doors refuse bad connect options the same way: bad_request,
// and on a WebSocket the close of session.DisconnectBadOptions.
func TestBadConnectOptions(t *testing.T) {
	st := newStack(t, stackOpts{})
	for _, q := range []string{"wait=maybe", "pool=a&pool=b", "labels=a%00=b", "resume=" + strings.Repeat("t", 300)} {
		t.Run(q, func(t *testing.T) {
			c := st.dial(q)
			f := c.expect("error")
			require.Equal(t, session.CodeBadRequest, f.Error.Code)
			require.Contains(t, f.Error.Message, "connect option")
			require.Equal(t, session.DisconnectBadOptions.Code, c.closeCode())

			status, e := getErr(t, "GET", st.srv.URL+"/login?"+q)
			require.Equal(t, http.StatusBadRequest, status)
			require.Equal(t, f.Error, &struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}{e.Code, e.Message}, "the same answer at every door")

			_, resp, err := websocket.DefaultDialer.Dial(st.wsURL("")[:len(st.wsURL(""))-len("/ws")]+"/stream?"+q, nil)
			require.ErrorIs(t, err, websocket.ErrBadHandshake)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		})
	}
	require.Empty(t, st.m.Status().Sessions, "no session was opened")
	// wait takes the words of strconv.ParseBool at every door.
	c := st.dial("wait=0&labels=")
	require.NotEqual(t, "error", c.read().Type)
}

// A task a middleware makes without a Session runs in the session of the
// task it came with.
func TestMiddlewareTaskWithoutSession(t *testing.T) {
	st := newStack(t, stackOpts{setup: func(m *manager.Manager) {
		m.Use(middleware.Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next middleware.Handler) error {
			if err := next.ServeTask(ctx, &session.Task{Data: []byte(`{"command":"echo","extra":true}`)}, w); err != nil {
				return err
			}
			return next.ServeTask(ctx, t, w)
		}))
	}})
	c, _ := st.open("")
	res, _, ef := c.task("1", `{"command":"echo"}`)
	require.Nil(t, ef, "%+v", ef)
	require.Len(t, res, 2)
	require.JSONEq(t, `{"command":"echo","extra":true}`, string(res[0]))
}

// The disconnect hook gets the typed reason.
func TestDisconnectHookGetsTheTableEntry(t *testing.T) {
	got := make(chan session.Disconnect, 4)
	st := newStack(t, stackOpts{janitor: 20 * time.Millisecond, pools: []manager.Pool{
		{Name: "default"}, {Name: "idle", IdleTimeout: 100 * time.Millisecond}},
		setup: func(m *manager.Manager) {
			m.OnDisconnect(middleware.DisconnectFunc(func(_ *session.Info, d session.Disconnect) { got <- d }))
		}})
	next := func() session.Disconnect {
		t.Helper()
		select {
		case d := <-got:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("the disconnect hook did not run")
			return session.Disconnect{}
		}
	}
	c, _ := st.open("")
	c.send(`{"type":"logout"}`)
	require.Equal(t, session.DisconnectLogout, next())

	c, _ = st.open("")
	require.NoError(t, c.ws.WriteMessage(websocket.BinaryMessage, []byte{1}))
	require.Equal(t, websocket.CloseUnsupportedData, c.closeCode())
	require.Equal(t, session.DisconnectBinaryFrame, next())

	c, _ = st.open("pool=idle")
	require.Equal(t, websocket.CloseNormalClosure, c.closeCode())
	require.Equal(t, session.DisconnectIdleTimeout, next())

	s, err := st.m.Open(context.Background(), manager.OpenOptions{})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, session.DisconnectLogout, next())
}

// brokenFarm fails every start the way a remote farm that cannot be
// reached does: with an address and a farm id in the error chain.
type brokenFarm struct{}

func (brokenFarm) ID() string      { return "vm-8f3a" }
func (brokenFarm) Slots() int      { return 2 }
func (brokenFarm) Pools() []string { return []string{"default"} }
func (brokenFarm) StartInstance(context.Context, string) (farmapi.Instance, error) {
	return farmapi.Instance{}, errors.New("farm vm-8f3a: POST http://10.9.8.7:42269/api/v1/instances: " +
		"dial tcp 10.9.8.7:42269: connect: connection refused")
}
func (brokenFarm) StopInstance(context.Context, string) error { return nil }

// What reaches a client is a code and a plain sentence: no address, farm
// id or error chain, at any door.
func TestClientErrorsArePlain(t *testing.T) {
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default", QueueTimeout: time.Second}}})
	require.NoError(t, err)
	m.AddFarm(brokenFarm{})
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, m.Shutdown(context.Background()))
	})
	plain := func(what, msg string) {
		t.Helper()
		for _, leak := range []string{"10.9.8.7", "vm-8f3a", "dial tcp", "POST", "connection refused"} {
			require.NotContains(t, msg, leak, "%s: %q", what, msg)
		}
		require.NotEmpty(t, msg)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?wait=false", nil)
	require.NoError(t, err)
	defer ws.Close()
	c := &client{t: t, ws: ws}
	var f frame
	for f = c.read(); f.Type == "queued"; f = c.read() {
	}
	require.Equal(t, "error", f.Type)
	plain("error frame", f.Error.Message)
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
	for {
		if _, _, err = ws.ReadMessage(); err != nil {
			break
		}
	}
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	plain("close reason", ce.Text)

	var login struct{ Status, Code, Message string }
	getJSON(t, srv.URL+"/login", &login)
	require.Equal(t, "rejected", login.Status)
	plain("REST login", login.Message)

	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/stream?wait=false", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	plain("stream refusal", string(body))
}
