package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// runKeys runs `drover keys ARGS` in this process and returns its output.
func runKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runDrover(t, append([]string{"keys"}, args...)...)
}

// runDrover runs `drover ARGS` in this process and returns its output.
func runDrover(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// status is the status code of GET url with the bearer token (none: "").
func bearerStatus(t *testing.T, url, token string) int {
	t.Helper()
	return getJSON(t, url, token, nil)
}

// drover up with an admin token, an API key file and a JWT secret file:
// `drover keys` makes, lists and revokes keys; a key works until revoked;
// a SIGHUP with a new JWT secret takes effect while a session opened with
// the old one goes on; no secret reaches the log.
func TestUpKeysAndJWTReload(t *testing.T) {
	const admin = "keys-admin-token-61c2f0"
	secret1, secret2 := "keys-jwt-secret-one-4d7e2a90b1c35f68", "keys-jwt-secret-two-a0c91e7d3b5f2468"
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "jwt.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret1), 0o600))
	p := startDrover(t, "up", nil, regexp.MustCompile(`ws://([0-9.:]+)/ws`), "up", "--addr", "127.0.0.1:0",
		"--data", filepath.Join(dir, "data"), "--instances", "2", "--warm", "0", "--job-slots", "0",
		"--admin-token", admin, "--auth-jwt-secret", secretFile, "--auth-jwt-audience", "keys-test",
		"--log-level", "debug")
	base := "http://" + p.base
	items := base + "/api/items"
	mint := func(secret string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "carol", "tenant": "acme",
			"aud": "keys-test", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		require.NoError(t, err)
		return s
	}
	jwt1, jwt2 := mint(secret1), mint(secret2)

	require.Equal(t, http.StatusUnauthorized, bearerStatus(t, items, ""), "users authenticate now, loopback or not")
	_, err := runKeys(t, "list", "--url", base)
	require.ErrorContains(t, err, "401", "keys need the admin token")

	out, err := runKeys(t, "create", "--url", base, "--admin-token", admin, "--name", "ci", "--tenant", "acme")
	require.NoError(t, err, out)
	m := regexp.MustCompile(`(?m)^secret: (\S+)$`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	key := m[1]
	id := regexp.MustCompile(`^key (\S+) `).FindStringSubmatch(out)[1]
	require.Equal(t, http.StatusOK, bearerStatus(t, items, key))
	out, err = runDrover(t, "call", "--url", "ws://"+p.base+"/ws", "--token", key, `{"command":"echo","via":"key"}`)
	require.NoError(t, err, out)
	require.Contains(t, out, `"via":"key"`, "drover call authenticates with --token")
	out, err = runKeys(t, "list", "--url", base, "--admin-token", admin)
	require.NoError(t, err, out)
	require.Contains(t, out, id)
	require.NotContains(t, out, key)

	// A session opened with the first secret's token, as a browser sends it.
	d := websocket.Dialer{Subprotocols: []string{"drover", "bearer." + jwt1}}
	ws, resp, err := d.Dial("ws://"+p.base+"/ws", nil)
	require.NoError(t, err)
	defer ws.Close()
	require.Equal(t, "drover", resp.Header.Get("Sec-Websocket-Protocol"))
	task := func() string {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"task","id":1,"data":{"command":"echo","v":7}}`)))
		for {
			var f struct {
				Type string `json:"type"`
			}
			require.NoError(t, ws.SetReadDeadline(time.Now().Add(20*time.Second)))
			require.NoError(t, ws.ReadJSON(&f))
			if f.Type == "result" || f.Type == "error" {
				return f.Type
			}
		}
	}
	require.Equal(t, "result", task())
	require.Equal(t, http.StatusOK, bearerStatus(t, items, jwt1))
	require.Equal(t, http.StatusUnauthorized, bearerStatus(t, items, jwt2))

	// SIGHUP with the second secret: the new tokens count, the old do not,
	// and the session goes on.
	require.NoError(t, os.WriteFile(secretFile, []byte(secret2), 0o600))
	p.signal(t, syscall.SIGHUP)
	require.Eventually(t, func() bool { return bearerStatus(t, items, jwt2) == http.StatusOK },
		10*time.Second, 20*time.Millisecond)
	require.Equal(t, http.StatusUnauthorized, bearerStatus(t, items, jwt1))
	require.Equal(t, "result", task(), "the session opened before the reload goes on")

	out, err = runKeys(t, "revoke", id, "--url", base, "--admin-token", admin)
	require.NoError(t, err, out)
	require.Equal(t, http.StatusUnauthorized, bearerStatus(t, items, key))

	log := p.out.String()
	require.Contains(t, log, "audit")
	for _, secret := range []string{admin, secret1, secret2, key, jwt1, jwt2} {
		require.False(t, strings.Contains(log, secret), "a secret in drover's output")
	}
}
