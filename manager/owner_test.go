package manager_test

import (
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/session"
)

// A session belongs to who opened it, on every manager sharing the store:
// another user with its resume token finds nothing to resume, here or on
// the other manager, and the session goes on untouched; its owner resumes
// it through either.
func TestSessionOwnerAcrossManagers(t *testing.T) {
	ss := newSharedStack(t, sharedOpts{slots: 2, auth: queryUser()})
	m0, m1 := ss.mgrs[0], ss.mgrs[1]
	c, w := m0.open("user=alice")
	c.one(`{"command":"set","key":"k","value":"alice's"}`)

	for _, st := range []*stack{m0, m1} {
		code, _, closeCode := st.dial("user=bob&resume=" + w.Resume).refused()
		require.Equal(t, session.CodeNotFound, code, "as unknown as a token that matches nothing")
		require.Equal(t, websocket.ClosePolicyViolation, closeCode)
	}
	require.JSONEq(t, `{"key":"k","value":"alice's"}`, string(c.one(`{"command":"get","key":"k"}`)),
		"the session is untouched")
	require.Len(t, m0.m.Status().Sessions, 1)

	c2, w2 := m1.open("user=alice&resume=" + w.Resume)
	require.Equal(t, w.Session, w2.Session)
	require.JSONEq(t, `{"key":"k","value":"alice's"}`, string(c2.one(`{"command":"get","key":"k"}`)))

	// REST: Bob cannot run tasks with Alice's REST id on either manager.
	resp, err := http.Get(m0.srv.URL + "/login/rest-of-alice?user=alice")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	for _, st := range []*stack{m1, m0} {
		resp, err := http.Post(st.srv.URL+"/execute/rest-of-alice?user=bob", "application/json", nil)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
	}
	resp, err = http.Get(m1.srv.URL + "/logout/rest-of-alice?user=alice")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, "Alice logs out through the other manager")
}
