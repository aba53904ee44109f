package manager_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

func TestStickySessionsAndSeparateInstances(t *testing.T) {
	st := newStack(t, stackOpts{slots: 3})
	a, wa := st.open("")
	b, wb := st.open("")
	require.NotEqual(t, wa.Instance, wb.Instance)
	require.NotEqual(t, wa.Session, wb.Session)
	require.NotEmpty(t, wa.Resume)

	a.one(`{"command":"set","key":"k","value":"from-a"}`)
	b.one(`{"command":"set","key":"k","value":"from-b"}`)
	require.JSONEq(t, `{"key":"k","value":"from-a"}`, string(a.one(`{"command":"get","key":"k"}`)))
	require.JSONEq(t, `{"key":"k","value":"from-b"}`, string(b.one(`{"command":"get","key":"k"}`)))
	require.NotEqual(t, a.pid(), b.pid())
}

func TestTasksRunInOrderWithBinaryResults(t *testing.T) {
	st := newStack(t, stackOpts{slots: 1})
	c, _ := st.open("")
	// Pipelined: the second task is sent before the first is done.
	c.send(`{"type":"task","id":"slow","data":{"command":"sleep","ms":50}}`)
	c.send(`{"type":"task","id":"fast","data":{"command":"echo","n":1}}`)
	r := c.expect("result")
	require.JSONEq(t, `"slow"`, string(r.ID))
	require.JSONEq(t, `"slow"`, string(c.expect("done").ID))
	require.JSONEq(t, `"fast"`, string(c.expect("result").ID))
	require.JSONEq(t, `"fast"`, string(c.expect("done").ID))

	_, n, ef := c.task(`7`, `{"command":"stream","bytes":300000,"chunk":65536}`)
	require.Nil(t, ef)
	require.Equal(t, 300000, n)
}

func TestHealthFollowsBusySlots(t *testing.T) {
	st := newStack(t, stackOpts{slots: 10, pools: []manager.Pool{{Name: "default", Warm: 0}}})
	require.Equal(t, http.StatusOK, st.health())
	var clients []*client
	for range 8 {
		c, _ := st.open("")
		clients = append(clients, c)
	}
	require.Equal(t, http.StatusOK, st.health(), "8 of 10 busy")
	ninth, _ := st.open("")
	require.Equal(t, http.StatusServiceUnavailable, st.health(), "9 of 10 busy")

	ninth.send(`{"type":"logout"}`)
	require.Equal(t, websocket.CloseNormalClosure, ninth.closeCode())
	eventually(t, "capacity back under 90%", func() bool { return st.m.Capacity().Busy == 8 })
	require.Equal(t, http.StatusOK, st.health())
	_ = clients
}

func TestNoCapacityHealth(t *testing.T) {
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default"}}})
	require.NoError(t, err)
	defer func() { require.NoError(t, m.Shutdown(context.Background())) }()
	rec := httpGet(m, "/health")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "no farm means no capacity")
	require.Contains(t, rec.Body.String(), "no capacity")
}

func TestQueueAndWaitFalse(t *testing.T) {
	st := newStack(t, stackOpts{slots: 10, pools: []manager.Pool{{Name: "default", Warm: 2}}})
	var first *client
	for i := range 10 {
		c, _ := st.open("")
		if i == 0 {
			first = c
		}
	}
	// wait=false: an error frame and close 1013 at once.
	nw := st.dial("wait=false")
	f := nw.expect("error")
	require.Equal(t, session.CodeNoCapacity, f.Error.Code)
	require.Equal(t, websocket.CloseTryAgainLater, nw.closeCode())

	// The 11th client waits, then gets the slot the first one frees.
	eleventh := st.dial("")
	q := eleventh.expect("queued")
	require.Equal(t, 1, q.Position)
	first.send(`{"type":"logout"}`)
	w := eleventh.expect("welcome")
	require.NotEmpty(t, w.Instance)
	eleventh.one(`{"command":"echo"}`)
}

func TestQueuePositionsMove(t *testing.T) {
	st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default"}}})
	holder, _ := st.open("")
	a := st.dial("")
	require.Equal(t, 1, a.expect("queued").Position)
	b := st.dial("")
	require.Equal(t, 2, b.expect("queued").Position)
	// a gives up: b moves to the front.
	require.NoError(t, a.ws.Close())
	require.Equal(t, 1, b.expect("queued").Position)
	holder.send(`{"type":"logout"}`)
	b.expect("welcome")
}

func TestCrashMidTask(t *testing.T) {
	st := newStack(t, stackOpts{slots: 2, pools: []manager.Pool{{Name: "default", Warm: 1}}})
	c, w := st.open("")
	c.send(`{"type":"task","id":1,"data":{"command":"crash","code":3}}`)
	f := c.expect("error")
	require.JSONEq(t, `1`, string(f.ID))
	require.Equal(t, session.CodeInstanceLost, f.Error.Code)
	ev := c.expect("event")
	require.Equal(t, "instance_lost", ev.Event)
	c.closeCode()

	eventually(t, "the crashed instance to be replaced", func() bool {
		s := st.m.Status()
		if len(s.Instances) == 0 {
			return false
		}
		for _, in := range s.Instances {
			if in.ID == w.Instance {
				return false
			}
		}
		return s.Capacity.Idle >= 1
	})
	n, _ := st.open("")
	n.one(`{"command":"echo"}`)
}

func TestFailAndUnknownCommandKeepInstance(t *testing.T) {
	st := newStack(t, stackOpts{})
	c, _ := st.open("")
	pid := c.pid()
	_, _, ef := c.task("2", `{"command":"fail"}`)
	require.NotNil(t, ef)
	require.Equal(t, session.CodeTaskFailed, ef.Error.Code)
	_, _, ef = c.task("3", `{"command":"nope"}`)
	require.Equal(t, session.CodeBadRequest, ef.Error.Code)
	require.Equal(t, pid, c.pid())
}

func TestTaskTimeout(t *testing.T) {
	st := newStack(t, stackOpts{pools: []manager.Pool{{Name: "default", TaskTimeout: 300 * time.Millisecond}}})
	c, _ := st.open("")
	_, _, ef := c.task(`"t"`, `{"command":"sleep","ms":450}`)
	require.NotNil(t, ef)
	require.Equal(t, session.CodeTimeout, ef.Error.Code)
	// The next task waits for the instance to finish the abandoned one and
	// gets its own result, not the late one.
	require.JSONEq(t, `{"command":"echo","x":2}`, string(c.one(`{"command":"echo","x":2}`)))
}

func TestResume(t *testing.T) {
	st := newStack(t, stackOpts{grace: 400 * time.Millisecond})
	c, w := st.open("")
	c.one(`{"command":"set","key":"k","value":42}`)
	require.NoError(t, c.ws.NetConn().Close()) // no close frame

	eventually(t, "the session to be detached", func() bool {
		for _, s := range st.m.Status().Sessions {
			if s.ID == w.Session && s.State == "detached" {
				return true
			}
		}
		return false
	})
	r, w2 := st.open("resume=" + w.Resume)
	require.Equal(t, w.Session, w2.Session)
	require.Equal(t, w.Instance, w2.Instance)
	require.JSONEq(t, `{"key":"k","value":42}`, string(r.one(`{"command":"get","key":"k"}`)))

	// Drop again and stay away past the window: the session is released.
	require.NoError(t, r.ws.NetConn().Close())
	eventually(t, "the session to be released", func() bool { return len(st.m.Status().Sessions) == 0 })
	late := st.dial("resume=" + w.Resume)
	require.Equal(t, session.CodeNotFound, late.expect("error").Error.Code)
	require.Equal(t, websocket.ClosePolicyViolation, late.closeCode())
	eventually(t, "the instance to be stopped", func() bool {
		for _, in := range st.m.Status().Instances {
			if in.ID == w.Instance {
				return false
			}
		}
		return true
	})
}

func TestRESTExecuteAndLogout(t *testing.T) {
	st := newStack(t, stackOpts{slots: 2, pools: []manager.Pool{{Name: "default", Warm: 0}}})
	var login struct{ Op, Status, ID string }
	getJSON(t, st.srv.URL+"/login", &login)
	require.Equal(t, "system", login.Op)
	require.Equal(t, "permitted", login.Status)
	require.NotEmpty(t, login.ID)
	require.Equal(t, 1, st.m.Capacity().Busy)

	resp, err := http.Post(st.srv.URL+"/execute/"+login.ID, "application/json",
		strings.NewReader(`{"command":"results","n":3}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.JSONEq(t, `[{"i":0},{"i":1},{"i":2}]`, string(body))

	// The session id is a secret: /status must not show it.
	status := httpGet(st.m, "/status").Body.String()
	require.NotContains(t, status, login.ID)

	var chosen struct{ Status, ID string }
	getJSON(t, st.srv.URL+"/login/my-own-id", &chosen)
	require.Equal(t, "permitted", chosen.Status)
	require.Equal(t, "my-own-id", chosen.ID)
	var third struct{ Status string }
	getJSON(t, st.srv.URL+"/login", &third)
	require.Equal(t, "rejected", third.Status, "both slots are taken")

	var out struct{ Status string }
	getJSON(t, st.srv.URL+"/logout/"+login.ID, &out)
	require.Equal(t, "disconnected", out.Status)
	eventually(t, "the slot to be freed", func() bool { return st.m.Capacity().Busy == 1 })

	resp, err = http.Post(st.srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// Errors carry a status that fits: 504 on timeout, 400 on bad JSON.
	resp, err = http.Post(st.srv.URL+"/execute/my-own-id", "application/json", strings.NewReader(`{nope`))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestRESTTimeoutIs504(t *testing.T) {
	st := newStack(t, stackOpts{pools: []manager.Pool{{Name: "default", TaskTimeout: 50 * time.Millisecond}}})
	var login struct{ ID string }
	getJSON(t, st.srv.URL+"/login", &login)
	resp, err := http.Post(st.srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(`{"command":"sleep","ms":300}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	require.Contains(t, string(body), `"message"`)
}

func TestMiddleware(t *testing.T) {
	var disconnects = make(chan string, 4)
	st := newStack(t, stackOpts{setup: func(m *manager.Manager) {
		m.OnConnect(middleware.ConnectFunc(func(_ context.Context, r *middleware.ConnectRequest) error {
			if r.Query.Get("user") == "mallory" {
				return session.NewError(session.CodeUnauthorized, "go away")
			}
			r.Info.User = r.Query.Get("user")
			return nil
		}))
		m.OnDisconnect(middleware.DisconnectFunc(func(info *session.Info, _ session.Disconnect) { disconnects <- info.User }))
		m.Use(middleware.Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next middleware.Handler) error {
			var d struct {
				Command string `json:"command"`
			}
			_ = json.Unmarshal(t.Data, &d)
			switch d.Command {
			case "secret": // discard
				return nil
			case "hello": // answer it here
				return w.WriteResult([]byte(`{"hello":"` + t.Session.User + `"}`))
			case "shout": // rewrite
				t.Data = []byte(`{"command":"echo","shouted":true}`)
			case "twice": // an extra task first; its results reach the client
				if err := next.ServeTask(ctx, &session.Task{Data: []byte(`{"command":"echo","extra":true}`), Session: t.Session}, w); err != nil {
					return err
				}
				t.Data = []byte(`{"command":"echo","main":true}`)
			}
			return next.ServeTask(ctx, t, w)
		}))
	}})
	bad := st.dial("user=mallory")
	require.Equal(t, session.CodeUnauthorized, bad.expect("error").Error.Code)
	require.Equal(t, websocket.ClosePolicyViolation, bad.closeCode())

	c, _ := st.open("user=ann")
	res, _, ef := c.task("1", `{"command":"secret"}`)
	require.Nil(t, ef)
	require.Empty(t, res, "discarded: done without results")
	require.JSONEq(t, `{"hello":"ann"}`, string(c.one(`{"command":"hello"}`)))
	require.JSONEq(t, `{"command":"echo","shouted":true}`, string(c.one(`{"command":"shout"}`)))
	res, _, ef = c.task("2", `{"command":"twice"}`)
	require.Nil(t, ef)
	require.Len(t, res, 2)
	require.JSONEq(t, `{"command":"echo","extra":true}`, string(res[0]))
	require.JSONEq(t, `{"command":"echo","main":true}`, string(res[1]))

	c.send(`{"type":"logout"}`)
	select {
	case u := <-disconnects:
		require.Equal(t, "ann", u)
	case <-time.After(10 * time.Second):
		t.Fatal("disconnect hook not called")
	}
}

func TestBadFrames(t *testing.T) {
	st := newStack(t, stackOpts{slots: 5, maxMsg: 1 << 20})
	other, _ := st.open("")
	c, _ := st.open("")
	for _, tc := range []struct{ name, frame string }{
		{"not json", `hello`},
		{"unknown type", `{"type":"bogus","id":1}`},
		{"missing id", `{"type":"task","data":{}}`},
		{"object id", `{"type":"task","id":{},"data":{}}`},
		{"no type", `{"id":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.frame)
			f := c.expect("error")
			require.Equal(t, session.CodeBadRequest, f.Error.Code)
		})
	}
	c.one(`{"command":"echo"}`) // still serving

	// Invalid UTF-8 closes with 1007.
	u, _ := st.open("")
	require.NoError(t, u.ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"task\",\"id\":1,\"data\":\"\xff\"}")))
	require.Equal(t, websocket.CloseInvalidFramePayloadData, u.closeCode())

	// Binary frames from a client close with 1003.
	bin, _ := st.open("")
	require.NoError(t, bin.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}))
	require.Equal(t, websocket.CloseUnsupportedData, bin.closeCode())

	// A 10 MiB message closes with 1009. Only the frame header is sent (a
	// masked text frame announcing 10 MiB): the server must refuse it from
	// the header alone, and with nothing unread on its side its close
	// reaches us as a close frame, not a reset.
	big, _ := st.open("")
	hdr := []byte{0x81, 0x80 | 127}
	hdr = binary.BigEndian.AppendUint64(hdr, 10<<20)
	hdr = append(hdr, 1, 2, 3, 4) // mask key
	_, err := big.ws.NetConn().Write(hdr)
	require.NoError(t, err)
	require.Equal(t, websocket.CloseMessageTooBig, big.closeCode())
	other.one(`{"command":"echo"}`) // everyone else is still served
}

func TestInProcessSession(t *testing.T) {
	st := newStack(t, stackOpts{})
	s, err := st.m.Open(context.Background(), manager.OpenOptions{})
	require.NoError(t, err)
	res, err := s.Execute(context.Background(), []byte(`{"command":"results","n":2}`))
	require.NoError(t, err)
	require.Len(t, res, 2)
	res, err = s.Execute(context.Background(), []byte(`{"command":"stream","bytes":10,"chunk":4}`))
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.Len(t, res[2].Binary, 2)
	_, err = s.Execute(context.Background(), []byte(`{"command":"fail"}`))
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeTaskFailed, se.Code)
	require.NoError(t, s.Close())
	_, err = st.m.Open(context.Background(), manager.OpenOptions{Pool: "nope"})
	require.ErrorIs(t, err, manager.ErrUnknownPool)
}

func TestIdleTimeoutAndLifetime(t *testing.T) {
	st := newStack(t, stackOpts{janitor: 20 * time.Millisecond, pools: []manager.Pool{
		{Name: "default", IdleTimeout: 150 * time.Millisecond},
		{Name: "short", MaxLifetime: 200 * time.Millisecond},
	}})
	c, _ := st.open("")
	require.Equal(t, "idle_timeout", c.expect("event").Event)
	require.Equal(t, websocket.CloseNormalClosure, c.closeCode())
	s, _ := st.open("pool=short")
	require.Equal(t, "max_lifetime", s.expect("event").Event)
}

func TestReusePool(t *testing.T) {
	st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default", Release: manager.ReleaseReuse,
		Reset: map[string]any{"command": "reset"}}}})
	a, wa := st.open("")
	a.one(`{"command":"set","key":"k","value":1}`)
	a.send(`{"type":"logout"}`)
	a.closeCode()
	_, wb := st.open("")
	require.Equal(t, wa.Instance, wb.Instance, "reuse hands the same instance out again")
}

// TestReuseResetsState: with release: reuse, what the next session on the
// instance finds is what the pool's reset leaves (issue #9, fault 6).
func TestReuseResetsState(t *testing.T) {
	tests := []struct {
		name  string
		reset any
		// found is what the next session's get finds.
		found string
	}{
		{name: "reset task", reset: map[string]any{"command": "reset"}, found: `{"key":"k","value":null}`},
		{name: "none", reset: manager.ResetNone, found: `{"key":"k","value":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default", Release: manager.ReleaseReuse,
				Reset: tt.reset}}})
			a, wa := st.open("")
			pid := a.pid()
			a.one(`{"command":"set","key":"k","value":1}`)
			a.send(`{"type":"logout"}`)
			a.closeCode()

			b, wb := st.open("")
			require.Equal(t, wa.Instance, wb.Instance)
			require.Equal(t, pid, b.pid(), "the same process")
			require.JSONEq(t, tt.found, string(b.one(`{"command":"get","key":"k"}`)))
		})
	}
}

func TestReuseNeedsReset(t *testing.T) {
	_, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "cad", Release: manager.ReleaseReuse}}})
	require.ErrorContains(t, err, `pool "cad": release: reuse needs a reset`)

	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "cad", Release: manager.ReleaseReuse,
		Reset: manager.ResetNone}}})
	require.NoError(t, err, "reset: none says it")
	require.NoError(t, m.Shutdown(context.Background()))
}

func TestShutdownSendsCloseFrames(t *testing.T) {
	st := newStack(t, stackOpts{})
	c, _ := st.open("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = st.m.Shutdown(ctx) }()
	require.Equal(t, "shutdown", c.expect("event").Event)
	require.Equal(t, websocket.CloseGoingAway, c.closeCode())
}

func httpGet(m *manager.Manager, path string) *httptest.ResponseRecorder {
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, req)
	return rec
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
}
