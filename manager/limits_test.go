package manager_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

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
	code, msg, _ = st.dial("user=carol").refused()
	require.Equal(t, session.CodeRateLimited, code)
	require.Contains(t, msg, "too many new sessions from your address")

	// A resume is no new session: it goes through with every bucket empty.
	b.ws.Close()
	b = st.dial("user=bob&resume=" + welcome.Resume)
	f := b.read()
	require.Equal(t, "welcome", f.Type, "%+v %+v", f, f.Error)
	b.one(`{"command":"echo"}`)
}
