package manager_test

import (
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

func TestStreamRefusals(t *testing.T) {
	st := newStack(t, stackOpts{slots: 2})
	resp, err := http.Get(st.srv.URL + "/stream")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "not a WebSocket")

	url := "ws" + st.srv.URL[len("http"):] + "/stream"
	_, resp, err = websocket.DefaultDialer.Dial(url+"?pool=nope", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// The default pool speaks the native protocol: its instance is started,
	// found not to be a stream instance, and released.
	_, resp, err = websocket.DefaultDialer.Dial(url+"?pool=default", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	eventually(t, "the session to end", func() bool { return len(st.m.Status().Sessions) == 0 })
	st.open("") // capacity is back
}
