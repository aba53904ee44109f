package wsframe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// DialTLS verifies a wss server with the configuration's roots; Dial with
// the system's, which do not know a test server's certificate.
func TestDialTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte("over tls"))
		_, _, _ = ws.ReadMessage()
	}))
	defer srv.Close()
	url := "wss" + strings.TrimPrefix(srv.URL, "https") + "/"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, _, err := Dial(ctx, url, nil)
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown)

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cfg := &tls.Config{RootCAs: roots}
	conn, rest, err := DialTLS(ctx, url, nil, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.Empty(t, cfg.ServerName, "the caller's configuration is not changed")
	rd := Reader{R: bufio.NewReader(io.MultiReader(bytes.NewReader(rest), conn)), Limit: 1 << 10}
	op, msg, err := rd.Next(nil)
	require.NoError(t, err)
	require.Equal(t, OpText, op)
	require.Equal(t, "over tls", string(msg))
}
