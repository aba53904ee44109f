package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// A wss:// upstream is dialled over TLS, verified with Options.TLS.
func TestRelayTLSUpstream(t *testing.T) {
	var handler atomic.Pointer[http.Handler]
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(tlsUp.Close)
	roots := x509.NewCertPool()
	roots.AddCert(tlsUp.Certificate())

	e := newEnv(t, Options{TLS: &tls.Config{RootCAs: roots}}, withTarget(func(_ *env, r *http.Request) string {
		return "wss://" + tlsUp.Listener.Addr().String() + r.URL.RequestURI()
	}))
	handler.Store(&e.up.srv.Config.Handler)
	c := e.dial(t, "/echo")
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("over tls")))
	_, p, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "over tls", string(p))
	require.NoError(t, c.Close())
	require.NoError(t, e.nextErr(t))

	// An upstream whose certificate the relay does not trust: 502.
	e = newEnv(t, Options{}, withTarget(func(_ *env, r *http.Request) string {
		return "wss://" + tlsUp.Listener.Addr().String() + r.URL.RequestURI()
	}))
	handler.Store(&e.up.srv.Config.Handler)
	_, resp, err := websocket.DefaultDialer.Dial(e.url("/echo"), nil)
	require.Error(t, err)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	require.ErrorIs(t, e.nextErr(t), ErrBadHandshake)
}
