package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

var secretRE = regexp.MustCompile(`^drv_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)

// testKeyStore is what every KeyStore must do.
func testKeyStore(t *testing.T, s auth.KeyStore) {
	ctx := context.Background()

	secret, k, err := s.Create(ctx, auth.APIKey{Name: "ci"})
	require.NoError(t, err)
	require.Regexp(t, secretRE, secret)
	require.Contains(t, secret, k.ID)
	require.Equal(t, auth.DefaultTenant, k.Tenant)
	require.Equal(t, []string{auth.RoleUser}, k.Roles)
	require.False(t, k.ReadOnly)
	require.False(t, k.Revoked)
	require.False(t, k.Created.IsZero())

	roSecret, ro, err := s.Create(ctx, auth.APIKey{Name: "viewer of acme", Tenant: "acme", Roles: []string{"user", "viewer"}, ReadOnly: true, Revoked: true, ID: "ignored"})
	require.NoError(t, err)
	require.NotEqual(t, "ignored", ro.ID)
	require.False(t, ro.Revoked)
	require.NotEqual(t, secret, roSecret)

	got, err := s.Lookup(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, k, got)
	got, err = s.Lookup(ctx, roSecret)
	require.NoError(t, err)
	require.Equal(t, ro, got)
	require.True(t, got.ReadOnly)
	require.Equal(t, "acme", got.Tenant)

	t.Run("wrong secrets", func(t *testing.T) {
		forged := secret[:len(secret)-4] + "AAAA"
		if forged == secret {
			forged = secret[:len(secret)-4] + "BBBB"
		}
		for _, bad := range []string{
			forged,                                   // the id of a key, another random part
			"drv_" + ro.ID + secret[len("drv_")+16:], // the id of one key, the random part of another
			"drv_0123456789abcdef_xyz",               // an unknown id
			"drv_" + k.ID,                            // no random part
			"drv_" + k.ID + "_",
			secret + "x",
			strings.ToUpper(secret),
			"", "drv_", "garbage",
		} {
			_, err := s.Lookup(ctx, bad)
			require.ErrorIs(t, err, auth.ErrUnknownKey, "%q", bad)
		}
	})

	// List orders keys by creation, then by id: two keys made within one
	// millisecond (Created's precision) come in the order of their ids.
	listed := []auth.APIKey{k, ro}
	if ro.Created.Equal(k.Created) && ro.ID < k.ID {
		listed = []auth.APIKey{ro, k}
	}
	t.Run("list", func(t *testing.T) {
		keys, err := s.List(ctx)
		require.NoError(t, err)
		require.Equal(t, listed, keys)
	})

	t.Run("revoke", func(t *testing.T) {
		require.NoError(t, s.Revoke(ctx, k.ID))
		_, err := s.Lookup(ctx, secret)
		require.ErrorIs(t, err, auth.ErrUnknownKey)
		require.NoError(t, s.Revoke(ctx, k.ID), "revoking twice")
		require.ErrorIs(t, s.Revoke(ctx, "0123456789abcdef"), auth.ErrUnknownKey)
		require.ErrorIs(t, s.Revoke(ctx, "../etc"), auth.ErrUnknownKey)
		keys, err := s.List(ctx)
		require.NoError(t, err)
		require.Len(t, keys, 2)
		for i, want := range listed {
			require.Equal(t, want.ID, keys[i].ID)
			require.Equal(t, want.ID == k.ID, keys[i].Revoked, "only %s is revoked", k.ID)
		}
		_, err = s.Lookup(ctx, roSecret)
		require.NoError(t, err, "the other key still works")
	})

	t.Run("invalid keys", func(t *testing.T) {
		for _, k := range []auth.APIKey{
			{},
			{Name: strings.Repeat("n", 65)},
			{Name: "tab\there"},
			{Name: "ok", Tenant: "bad\x00tenant"},
			{Name: "ok", Roles: []string{"two words"}},
			{Name: "ok", Roles: []string{""}},
			{Name: "bad\xffutf8"},
		} {
			_, _, err := s.Create(ctx, k)
			require.ErrorIs(t, err, auth.ErrInvalidKey, "%+v", k)
		}
		_, _, err := s.Create(ctx, auth.APIKey{Name: strings.Repeat("é", 64)})
		require.NoError(t, err, "64 characters, more bytes")
	})
}

func TestFileKeyStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	s, err := auth.NewFileKeyStore(path)
	require.NoError(t, err)
	keys, err := s.List(context.Background())
	require.NoError(t, err)
	require.Empty(t, keys, "a missing file is an empty store")
	testKeyStore(t, s)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	t.Run("another store on the same file", func(t *testing.T) {
		ctx := context.Background()
		other, err := auth.NewFileKeyStore(path)
		require.NoError(t, err)
		secret, k, err := other.Create(ctx, auth.APIKey{Name: "made elsewhere"})
		require.NoError(t, err)
		got, err := s.Lookup(ctx, secret)
		require.NoError(t, err, "the change of the file is seen")
		require.Equal(t, k, got)
		require.NoError(t, s.Revoke(ctx, k.ID))
		_, err = other.Lookup(ctx, secret)
		require.ErrorIs(t, err, auth.ErrUnknownKey)
	})

	t.Run("the file holds no secret", func(t *testing.T) {
		ctx := context.Background()
		secret, _, err := s.Create(ctx, auth.APIKey{Name: "leak check"})
		require.NoError(t, err)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NotContains(t, string(b), secret)
		require.NotContains(t, string(b), secret[len(secret)-43:])
	})

	t.Run("a corrupt file keeps the keys read", func(t *testing.T) {
		ctx := context.Background()
		secret, _, err := s.Create(ctx, auth.APIKey{Name: "survivor"})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, []byte(`{"keys": [`), 0o600))
		require.ErrorContains(t, s.Reload(), path)
		_, err = s.Lookup(ctx, secret)
		require.NoError(t, err)
		_, _, err = s.Create(ctx, auth.APIKey{Name: "not now"})
		require.ErrorContains(t, err, path, "a write would lose what the file holds")
		_, err = auth.NewFileKeyStore(path)
		require.ErrorContains(t, err, path)
	})
}

func TestRedisKeyStore(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	prefix := redistest.Prefix()
	s := auth.NewRedisKeyStore(c, prefix)
	testKeyStore(t, s)

	ctx := context.Background()
	t.Run("managers share keys", func(t *testing.T) {
		other := auth.NewRedisKeyStore(srv.Client(t), prefix)
		secret, k, err := other.Create(ctx, auth.APIKey{Name: "shared"})
		require.NoError(t, err)
		got, err := s.Lookup(ctx, secret)
		require.NoError(t, err)
		require.Equal(t, k, got)
		require.NoError(t, s.Revoke(ctx, k.ID))
		_, err = other.Lookup(ctx, secret)
		require.ErrorIs(t, err, auth.ErrUnknownKey)
	})
	t.Run("another prefix, other keys", func(t *testing.T) {
		secret, _, err := s.Create(ctx, auth.APIKey{Name: "mine"})
		require.NoError(t, err)
		_, err = auth.NewRedisKeyStore(c, redistest.Prefix()).Lookup(ctx, secret)
		require.ErrorIs(t, err, auth.ErrUnknownKey)
	})
	t.Run("redis holds no secret", func(t *testing.T) {
		secret, _, err := s.Create(ctx, auth.APIKey{Name: "leak check"})
		require.NoError(t, err)
		keys, err := c.Keys(ctx, prefix+"*").Result()
		require.NoError(t, err)
		require.NotEmpty(t, keys)
		for _, key := range keys {
			require.NotContains(t, key, secret[len(secret)-43:])
			if typ := c.Type(ctx, key).Val(); typ == "hash" {
				for f, v := range c.HGetAll(ctx, key).Val() {
					require.NotContains(t, v, secret[len(secret)-43:], f)
				}
			}
		}
	})
	t.Run("redis down", func(t *testing.T) {
		// A client that does not retry, so that the outage shows at once.
		nc := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
		t.Cleanup(func() { _ = nc.Close() })
		ks := auth.NewRedisKeyStore(nc, prefix)
		secret, _, err := ks.Create(ctx, auth.APIKey{Name: "outage"})
		require.NoError(t, err)
		a := newAuth(t, auth.Config{Keys: ks})
		srv.Stop()
		p, aerr := a.Authenticate(bearerReq(secret))
		require.Nil(t, p)
		require.NotNil(t, aerr)
		require.Equal(t, 503, aerr.Status)
		require.Equal(t, "unavailable", aerr.Code)
		require.NotContains(t, aerr.Message, srv.Addr())
		_, err = ks.Lookup(ctx, secret)
		require.Error(t, err)
		require.NotErrorIs(t, err, auth.ErrUnknownKey)
	})
}
