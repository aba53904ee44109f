package app

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// When the authenticator has an API key store, and where the keys live.
func TestAuthenticatorKeyStore(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	build := func(c AuthConfig, data, redis string) *auth.Authenticator {
		t.Helper()
		var cl cleanup.Stack
		t.Cleanup(func() { require.NoError(t, cl.Run(context.Background())) })
		a, err := c.authenticator("adm-token-0a1b", data, redis, log, &cl)
		require.NoError(t, err)
		return a
	}
	loopback := httptest.NewRequest("GET", "/", nil)
	loopback.RemoteAddr = "127.0.0.1:4000"

	// Nothing configured: protected mode, no keys.
	data := t.TempDir()
	a := build(AuthConfig{}, data, "")
	require.Nil(t, a.Keys())
	require.False(t, a.Enforced())
	p, aerr := a.Authenticate(loopback)
	require.Nil(t, aerr)
	require.True(t, p.HasRole(auth.RoleUser))
	require.False(t, p.Admin(), "the admin token is set: loopback is a user")
	_, err := os.Stat(filepath.Join(data, defaultKeysFile))
	require.ErrorIs(t, err, os.ErrNotExist, "no key file made")

	// A keys file named: keys there, users must authenticate.
	file := filepath.Join(t.TempDir(), "sub", "keys.json")
	a = build(AuthConfig{KeysFile: file}, data, "")
	require.NotNil(t, a.Keys())
	require.True(t, a.Enforced())
	_, k, err := a.Keys().Create(context.Background(), auth.APIKey{Name: "ci"})
	require.NoError(t, err)
	_, err = os.Stat(file)
	require.NoError(t, err)

	// The default file, once it exists, is used without being named.
	require.NoError(t, os.Rename(file, filepath.Join(data, defaultKeysFile)))
	a = build(AuthConfig{}, data, "")
	require.NotNil(t, a.Keys())
	keys, err := a.Keys().List(context.Background())
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, k.ID, keys[0].ID)

	// JWTs configured: a key store too, in Redis when there is one.
	secret := filepath.Join(t.TempDir(), "jwt.secret")
	require.NoError(t, os.WriteFile(secret, []byte("a-secret-of-at-least-32-bytes-0123456789"), 0o600))
	rs := redistest.Start(t)
	a = build(AuthConfig{JWTSecrets: []string{secret}}, t.TempDir(), rs.URL())
	require.IsType(t, &auth.RedisKeyStore{}, a.Keys())
	_, _, err = a.Keys().Create(context.Background(), auth.APIKey{Name: "shared"})
	require.NoError(t, err)
	p, aerr = a.Authenticate(loopback)
	require.Nil(t, aerr)
	require.Nil(t, p, "users authenticate, loopback or not")
}
