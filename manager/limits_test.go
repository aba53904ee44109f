package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// asUser gives each session the principal its query names (?user=NAME),
// as an auth connect hook would from a token.
func asUser(m *manager.Manager) {
	m.OnConnect(middleware.ConnectFunc(func(_ context.Context, r *middleware.ConnectRequest) error {
		if u := r.Query.Get("user"); u != "" {
			r.Info.User = u
			auth.SetSession(r.Info, &auth.Principal{User: u, Tenant: "acme", Roles: []string{auth.RoleUser}})
		}
		return nil
	}))
}

// refused reads the error frame and the close of a refused WebSocket.
func (c *client) refused() (code, msg string, closeCode int) {
	c.t.Helper()
	f := c.expect("error")
	require.NotNil(c.t, f.Error)
	return f.Error.Code, f.Error.Message, c.closeCode()
}

// TestSessionsPerUser: a quota of 2 refuses a user's third session, on
// every door, and not another user's; the third goes through once one of
// the two has ended.
func TestSessionsPerUser(t *testing.T) {
	st := newStack(t, stackOpts{slots: 5, setup: asUser, limits: limits.Config{SessionsPerUser: 2}})
	a1, _ := st.open("user=alice")
	a2, _ := st.open("user=alice")

	code, msg, cc := st.dial("user=alice").refused()
	require.Equal(t, session.CodeQuotaExceeded, code)
	require.Equal(t, "you already have 2 sessions open, the most allowed", msg)
	require.Equal(t, websocket.ClosePolicyViolation, cc)

	// REST and in-process doors count the same sessions.
	resp, err := http.Get(st.srv.URL + "/login?user=alice")
	require.NoError(t, err)
	var login struct{ Status, Code string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&login))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Retry-After"), "a quota clears when a session ends, not after a time")
	require.Equal(t, "rejected", login.Status)
	require.Equal(t, session.CodeQuotaExceeded, login.Code)
	req := httptest.NewRequest(http.MethodGet, "/?user=alice", nil)
	_, err = st.m.Open(context.Background(), manager.OpenOptions{HTTP: req, Wait: true})
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeQuotaExceeded, se.Code)

	// Another user is not affected.
	b, _ := st.open("user=bob")
	b.one(`{"command":"echo"}`)

	// A dropped connection keeps the session (resumable): still two.
	a2.ws.Close()
	code, _, _ = st.dial("user=alice").refused()
	require.Equal(t, session.CodeQuotaExceeded, code)

	// One ends: the third opens, and is the last again.
	a1.send(`{"type":"logout"}`)
	require.Equal(t, websocket.CloseNormalClosure, a1.closeCode())
	a3, _ := st.open("user=alice")
	a3.one(`{"command":"echo"}`)
	code, _, _ = st.dial("user=alice").refused()
	require.Equal(t, session.CodeQuotaExceeded, code)
	require.Equal(t, 5.0, st.metric(`drover_manager_limited_total{limit="quota",what="session"}`))
}

// TestSessionSlotReleasedOnEveryEnd: the slot comes back however the
// session ends: a resume window that runs out, an instance that dies, a
// REST logout, an in-process Close.
func TestSessionSlotReleasedOnEveryEnd(t *testing.T) {
	st := newStack(t, stackOpts{slots: 3, grace: 200 * time.Millisecond, setup: asUser,
		limits: limits.Config{SessionsPerUser: 1}})
	quotaFull := func() bool {
		c := st.dial("user=alice")
		f := c.read()
		if f.Type == "error" {
			require.Equal(t, session.CodeQuotaExceeded, f.Error.Code)
			return true
		}
		_ = c.ws.Close()
		return false
	}

	// The resume grace runs out.
	c, _ := st.open("user=alice")
	require.True(t, quotaFull())
	c.ws.Close()
	eventually(t, "the detached session to expire", func() bool { return len(st.m.Status().Sessions) == 0 })

	// The instance dies.
	c, _ = st.open("user=alice")
	c.send(`{"type":"task","id":1,"data":{"command":"crash"}}`)
	for f := c.read(); f.Type != "event"; f = c.read() {
	}
	c.closeCode()

	// REST logout.
	var login struct{ Status, ID string }
	getJSON(t, st.srv.URL+"/login?user=alice&wait=true", &login)
	require.Equal(t, "permitted", login.Status)
	require.True(t, quotaFull())
	var out struct{ Status string }
	getJSON(t, st.srv.URL+"/logout/"+login.ID, &out)
	require.Equal(t, "disconnected", out.Status)

	// In-process Close.
	req := httptest.NewRequest(http.MethodGet, "/?user=alice", nil)
	s, err := st.m.Open(context.Background(), manager.OpenOptions{HTTP: req, Wait: true})
	require.NoError(t, err)
	require.True(t, quotaFull())
	require.NoError(t, s.Close())
	c, _ = st.open("user=alice")
	c.one(`{"command":"echo"}`)
}

// TestSessionRate: new sessions past a user's rate, and past an
// address's, are refused with rate_limited and a time to wait.
func TestSessionRate(t *testing.T) {
	st := newStack(t, stackOpts{slots: 6, setup: asUser, limits: limits.Config{
		SessionRate:   limits.Rate{PerSecond: 0.001, Burst: 2},
		SessionIPRate: limits.Rate{PerSecond: 0.001, Burst: 6}}})
	st.open("user=alice")
	st.open("user=alice")
	code, msg, cc := st.dial("user=alice").refused()
	require.Equal(t, session.CodeRateLimited, code)
	require.Contains(t, msg, "too many new sessions; try again in ")
	require.Equal(t, websocket.CloseTryAgainLater, cc)

	// REST login: 429 with Retry-After.
	resp, err := http.Get(st.srv.URL + "/login?user=alice")
	require.NoError(t, err)
	var login struct{ Status, Code, Message string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&login))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", resp.Header.Get("Retry-After"))
	require.Greater(t, ra, 100, "a token comes back every 1000 s")
	require.Equal(t, "rejected", login.Status)
	require.Equal(t, session.CodeRateLimited, login.Code)

	// In-process.
	req := httptest.NewRequest(http.MethodGet, "/?user=alice", nil)
	_, err = st.m.Open(context.Background(), manager.OpenOptions{HTTP: req, Remote: "192.0.2.7:1234"})
	d, ok := manager.RetryAfter(err)
	require.True(t, ok, "err %v", err)
	require.Greater(t, d, 100*time.Second)

	// Bob has his own bucket. The address (all of them 127.0.0.1) has
	// six sessions in its bucket: the address is checked first, so alice
	// took four (two refused by her own bucket), and bob takes two.
	b, welcome := st.open("user=bob")
	var ok2 struct{ Status string }
	getJSON(t, st.srv.URL+"/login?user=bob", &ok2)
	require.Equal(t, "permitted", ok2.Status)
	// The address is checked at the door, before authentication: a 429
	// instead of the upgrade.
	_, resp, err = websocket.DefaultDialer.Dial(st.wsURL("user=carol"), nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	var refusal struct{ Code, Message string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&refusal))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Equal(t, session.CodeRateLimited, refusal.Code)
	require.Contains(t, refusal.Message, "too many new sessions from your address")
	// An in-process session from that address is refused too.
	_, err = st.m.Open(context.Background(), manager.OpenOptions{
		HTTP: httptest.NewRequest(http.MethodGet, "/?user=dave", nil), Remote: "127.0.0.1:9"})
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeRateLimited, se.Code)

	// A resume is no new session: it goes through with every bucket empty.
	b.ws.Close()
	b = st.dial("user=bob&resume=" + welcome.Resume)
	f := b.read()
	require.Equal(t, "welcome", f.Type, "%+v %+v", f, f.Error)
	b.one(`{"command":"echo"}`)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// echoLatencies runs n echo tasks one after the other, one every 10 ms
// (well within the rate of TestTaskFlood), and returns their round trips;
// every one must succeed.
func (c *client) echoLatencies(n int) []time.Duration {
	c.t.Helper()
	out := make([]time.Duration, 0, n)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		<-tick.C
		start := time.Now()
		res, _, ef := c.task(strconv.Itoa(i+1), `{"command":"echo"}`)
		require.Nil(c.t, ef, "task %d failed: %+v", i, ef)
		require.Len(c.t, res, 1)
		out = append(out, time.Since(start))
	}
	return out
}

// TestTaskFlood: a user flooding tasks past the rate gets rate_limited
// errors, every task one answer, and the session goes on; another user's
// tasks meanwhile all succeed, about as fast as before the flood.
func TestTaskFlood(t *testing.T) {
	st := newStack(t, stackOpts{setup: asUser, limits: limits.Config{
		TaskRate: limits.Rate{PerSecond: 200, Burst: 50}}})
	alice, _ := st.open("user=alice")
	bob, _ := st.open("user=bob")
	bob.echoLatencies(10) // warm up
	before := median(bob.echoLatencies(50))

	// Alice pipelines 5000 tasks a second, 25 times her rate, in bursts of
	// 50, until bob is done; then a ping, whose pong comes after every
	// answer: the tasks of a session are answered in order. Another
	// goroutine reads. (Unpaced, a client in this process would take the
	// CPU from the manager and bob alike: that would time the machine.)
	stop := make(chan struct{})
	sentc := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sentc <- n }()
		task := []byte(`{"type":"task","id":1,"data":{"command":"echo"}}`)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				_ = alice.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`))
				return
			case <-tick.C:
			}
			for range 50 {
				if alice.ws.WriteMessage(websocket.TextMessage, task) != nil {
					return
				}
				n++
			}
		}
	}()
	type tally struct{ done, limited, other int }
	answers := make(chan tally, 1)
	go func() {
		var n tally
		defer func() { answers <- n }()
		for {
			_ = alice.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, b, err := alice.ws.ReadMessage()
			switch {
			case err != nil, bytes.HasPrefix(b, []byte(`{"type":"pong"`)):
				return
			case bytes.HasPrefix(b, []byte(`{"type":"done"`)):
				n.done++
			case bytes.HasPrefix(b, []byte(`{"type":"error"`)):
				if bytes.Contains(b, []byte(`"code":"rate_limited"`)) {
					n.limited++
				} else {
					n.other++
				}
			}
		}
	}()

	during := median(bob.echoLatencies(50))
	close(stop)
	sent := <-sentc
	got := <-answers
	t.Logf("alice sent %d tasks: %d done, %d rate limited; bob's median %v before, %v during the flood",
		sent, got.done, got.limited, before, during)
	require.Equal(t, sent, got.done+got.limited+got.other, "every task one answer")
	require.Zero(t, got.other)
	require.Positive(t, got.limited)
	require.Positive(t, got.done)
	require.Less(t, got.done, sent/2, "the flood mostly refused")
	require.LessOrEqual(t, during, 5*before+5*time.Millisecond, "bob's latency during alice's flood")
	require.Equal(t, float64(got.limited), st.metric(`drover_manager_limited_total{limit="rate",what="task"}`))

	// Alice's session goes on once she waits as she was told (a task
	// comes back every 5 ms).
	time.Sleep(50 * time.Millisecond)
	alice.one(`{"command":"echo"}`)
}

// TestTasksInFlight: a session's task past the limit of tasks in flight
// gets quota_exceeded at once; the one in flight is not disturbed, and the
// next after it runs.
func TestTasksInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	hold := func(m *manager.Manager) {
		asUser(m)
		m.Use(middleware.Func(func(ctx context.Context, tk *session.Task, w session.ResultWriter, next middleware.Handler) error {
			if bytes.Contains(tk.Data, []byte(`"hold"`)) {
				entered <- struct{}{}
				<-release
				tk.Data = []byte(`{"command":"echo","held":true}`)
			}
			return next.ServeTask(ctx, tk, w)
		}))
	}
	st := newStack(t, stackOpts{setup: hold, limits: limits.Config{TasksInFlight: 1}})
	var login struct{ Status, ID string }
	getJSON(t, st.srv.URL+"/login?user=alice&wait=true", &login)
	require.Equal(t, "permitted", login.Status)
	execute := func(data string) (int, string) {
		resp, err := http.Post(st.srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(data))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	type answer struct {
		status int
		body   string
	}
	first := make(chan answer, 1)
	go func() {
		s, b := execute(`{"command":"hold"}`)
		first <- answer{s, b}
	}()
	<-entered
	status, body := execute(`{"command":"echo"}`)
	require.Equal(t, http.StatusTooManyRequests, status, body)
	require.JSONEq(t, `{"code":"quota_exceeded","message":"this session has 1 task in flight, the most allowed"}`, body)
	close(release)
	a := <-first
	require.Equal(t, http.StatusOK, a.status, a.body)
	require.JSONEq(t, `[{"command":"echo","held":true}]`, a.body)
	status, body = execute(`{"command":"echo"}`)
	require.Equal(t, http.StatusOK, status, body)

	// The same in process.
	req := httptest.NewRequest(http.MethodGet, "/?user=bob", nil)
	s, err := st.m.Open(context.Background(), manager.OpenOptions{HTTP: req, Wait: true})
	require.NoError(t, err)
	defer s.Close()
	release = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Execute(context.Background(), []byte(`{"command":"hold"}`))
		done <- err
	}()
	<-entered
	_, err = s.Execute(context.Background(), []byte(`{"command":"echo"}`))
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeQuotaExceeded, se.Code)
	close(release)
	require.NoError(t, <-done)
}

// queryUser authenticates every request as the user its query names
// (?user=NAME), as a token would.
func queryUser() auth.RequestAuthenticator {
	return auth.AuthenticatorFunc(func(r *http.Request) (*auth.Principal, *auth.Error) {
		u := r.URL.Query().Get("user")
		if u == "" {
			return nil, auth.Unauthorized("this needs a credential")
		}
		return &auth.Principal{User: u, Tenant: "acme", Roles: []string{auth.RoleUser}, Via: auth.ViaJWT}, nil
	})
}

// TestSessionSlotMovesWithSession: a session resumed through another
// manager leaves the first manager's count and joins the second's.
func TestSessionSlotMovesWithSession(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 3, auth: queryUser(), limits: limits.Config{SessionsPerUser: 1}})
	m0, m1 := ss.mgrs[0], ss.mgrs[1]
	old, w := m0.open("user=alice")
	code, _, _ := m0.dial("user=alice").refused()
	require.Equal(t, session.CodeQuotaExceeded, code)

	c, w2 := m1.open("user=alice&resume=" + w.Resume)
	require.Equal(t, w.Session, w2.Session)
	c.one(`{"command":"echo"}`)
	code, _, _ = m1.dial("user=alice").refused()
	require.Equal(t, session.CodeQuotaExceeded, code, "the session counts where it is now")
	// The first manager lets go (and closes the old connection) once it
	// hears of the move; its count is then clear.
	require.Equal(t, websocket.ClosePolicyViolation, old.closeCode())
	c0, _ := m0.open("user=alice")
	c0.one(`{"command":"echo"}`)
}

// TestRESTTaskRate: a REST task past the rate is a 429 with Retry-After;
// an in-process session without an address or a user is not limited per
// user.
func TestRESTTaskRate(t *testing.T) {
	st := newStack(t, stackOpts{setup: asUser, limits: limits.Config{TaskRate: limits.Rate{PerSecond: 0.001, Burst: 1}}})
	var login struct{ Status, ID string }
	getJSON(t, st.srv.URL+"/login?user=alice&wait=true", &login)
	require.Equal(t, "permitted", login.Status)
	post := func() *http.Response {
		resp, err := http.Post(st.srv.URL+"/execute/"+login.ID, "application/json", strings.NewReader(`{"command":"echo"}`))
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	require.Equal(t, http.StatusOK, post().StatusCode)
	resp := post()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, ra, 100)

	s, err := st.m.Open(context.Background(), manager.OpenOptions{Wait: true})
	require.NoError(t, err)
	defer s.Close()
	for range 3 {
		_, err := s.Execute(context.Background(), []byte(`{"command":"echo"}`))
		require.NoError(t, err)
	}
}

// TestClientIPIsThePeer: a forwarding header does not change the address
// routes on the manager's router see (the conversion API's limits per
// address key on it): anyone can send one.
func TestClientIPIsThePeer(t *testing.T) {
	st := newStack(t, stackOpts{})
	st.m.Router().GET("/test-client-ip", func(c *gin.Context) { c.String(http.StatusOK, c.ClientIP()) })
	req, err := http.NewRequest(http.MethodGet, st.srv.URL+"/test-client-ip", nil)
	require.NoError(t, err)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Real-Ip", "203.0.113.10")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", string(b))
}

// TestAddressRateBeforeAuth: the rate of new sessions per address is
// checked before the credential: guessing tokens from one address is
// slowed like opening sessions.
func TestAddressRateBeforeAuth(t *testing.T) {
	st := newStack(t, stackOpts{auth: queryUser(), limits: limits.Config{
		SessionIPRate: limits.Rate{PerSecond: 0.001, Burst: 2}}})
	get := func(path string) *http.Response {
		resp, err := http.Get(st.srv.URL + path)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	require.Equal(t, http.StatusUnauthorized, get("/login").StatusCode)
	_, resp, err := websocket.DefaultDialer.Dial(st.wsURL(""), nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp = get("/login?user=alice")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "even with a good credential now")
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Equal(t, http.StatusOK, get("/health").StatusCode, "other routes are not sessions")
}

// metric reads one sample of /metrics, by its name and labels as the text
// format writes them.
func (st *stack) metric(series string) float64 {
	st.t.Helper()
	resp, err := http.Get(st.srv.URL + "/metrics")
	require.NoError(st.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(st.t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(st.t, err)
			return f
		}
	}
	st.t.Fatalf("no %s in /metrics", series)
	return 0
}

// TestRoleFilterOverWebSocket: a command the session's roles may not run
// is answered forbidden and never reaches the instance; the session goes
// on.
func TestRoleFilterOverWebSocket(t *testing.T) {
	st := newStack(t, stackOpts{setup: func(m *manager.Manager) {
		asUser(m) // role "user"
		m.Use(middleware.RoleFilter(middleware.RoleRule{Roles: []string{auth.RoleUser}, Deny: []string{"crash"}}))
	}})
	c, _ := st.open("user=alice")
	pid := c.pid()
	_, _, ef := c.task("7", `{"command":"crash"}`)
	require.NotNil(t, ef)
	require.Equal(t, session.CodeForbidden, ef.Error.Code)
	require.Equal(t, `the command "crash" is not allowed for your role`, ef.Error.Message)
	require.JSONEq(t, "7", string(ef.ID))
	require.Equal(t, pid, c.pid(), "the instance did not crash")
}
