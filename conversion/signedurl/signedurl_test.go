package signedurl

import (
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var secret = []byte("signedurl-test-secret-8f3a61c2")

func signerAt(t testing.TB, now time.Time) *Signer {
	s, err := New(secret)
	require.NoError(t, err)
	s.now = func() time.Time { return now }
	return s
}

func TestNewRefusesShortSecret(t *testing.T) {
	_, err := New([]byte("short"))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "short")
}

// TestVerify: a URL verifies with its own method, path and query until it
// expires; any change of one of them is refused.
func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := signerAt(t, now)
	g := Grant{Method: "PUT", Path: "/api/direct/items/ab-1/original/0f.stl", Expires: now.Add(15 * time.Minute), Limit: 1000}
	q := s.Query(g)
	vals, err := url.ParseQuery(q)
	require.NoError(t, err)
	with := func(k, v string) string {
		c := url.Values{}
		for kk, vv := range vals {
			c[kk] = append([]string(nil), vv...)
		}
		c.Set(k, v)
		return c.Encode()
	}
	sig := vals.Get(ParamSignature)
	flipped := []byte(sig)
	flipped[3] ^= 1
	if flipped[3] == sig[3] || !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", rune(flipped[3])) {
		flipped[3] = 'A' + (sig[3]-'A'+1)%26
	}
	other, err := New([]byte("another-secret-of-sixteen-bytes"))
	require.NoError(t, err)

	for _, tc := range []struct {
		name         string
		method, path string
		query        string
		at           time.Time
		want         error
	}{
		{"as signed", "PUT", g.Path, q, now, nil},
		{"a second before expiry", "PUT", g.Path, q, g.Expires.Add(-time.Second), nil},
		{"at expiry", "PUT", g.Path, q, g.Expires, ErrExpired},
		{"after expiry", "PUT", g.Path, q, g.Expires.Add(time.Hour), ErrExpired},
		{"other method", "GET", g.Path, q, now, ErrSignature},
		{"other path", "PUT", "/api/direct/items/ab-2/original/0f.stl", q, now, ErrSignature},
		{"path with a suffix", "PUT", g.Path + "x", q, now, ErrSignature},
		{"later expiry", "PUT", g.Path, with(ParamExpires, "1900000000"), now, ErrSignature},
		{"larger limit", "PUT", g.Path, with(ParamLimit, "1001"), now, ErrSignature},
		{"no limit", "PUT", g.Path, with(ParamLimit, "0"), now, ErrSignature},
		{"altered signature", "PUT", g.Path, with(ParamSignature, string(flipped)), now, ErrSignature},
		{"another server's signature", "PUT", g.Path, other.Query(g), now, ErrSignature},
		{"leading zero", "PUT", g.Path, with(ParamLimit, "01000"), now, ErrMalformed},
		{"plus sign", "PUT", g.Path, with(ParamExpires, "+"+vals.Get(ParamExpires)), now, ErrMalformed},
		{"negative limit", "PUT", g.Path, with(ParamLimit, "-1"), now, ErrMalformed},
		{"extra parameter", "PUT", g.Path, q + "&x=1", now, ErrMalformed},
		{"repeated parameter", "PUT", g.Path, q + "&limit=1000", now, ErrMalformed},
		{"no signature", "PUT", g.Path, strings.Split(q, "&signature=")[0], now, ErrMalformed},
		{"padded signature", "PUT", g.Path, with(ParamSignature, base64.URLEncoding.EncodeToString(make([]byte, 32))), now, ErrMalformed},
		{"short signature", "PUT", g.Path, with(ParamSignature, sig[:20]), now, ErrMalformed},
		{"empty", "PUT", g.Path, "", now, ErrMalformed},
		{"bad escape", "PUT", g.Path, q + "&%zz", now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.now = func() time.Time { return tc.at }
			got, err := s.Verify(tc.method, tc.path, tc.query)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.NotContains(t, err.Error(), sig)
				return
			}
			require.NoError(t, err)
			require.Equal(t, g.Limit, got.Limit)
			require.True(t, got.Expires.Equal(g.Expires))
		})
	}
}

// TestLengthPrefixedFields: fields cannot trade bytes: a method and path
// pair that concatenates to the same string signs differently.
func TestLengthPrefixedFields(t *testing.T) {
	s := signerAt(t, time.Unix(0, 0))
	require.NotEqual(t, s.mac("PUT", "/a\n1:x", 5, 0), s.mac("PUT\n4:/a", "1:x", 5, 0))
}

// TestSecretFile: the first call generates and keeps a secret, later ones
// and concurrent ones read the same; a damaged file is an error that does
// not quote it.
func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "url-secret")
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		wg.Go(func() {
			b, err := LoadOrCreateSecret(path)
			require.NoError(t, err)
			got[i] = b
		})
	}
	wg.Wait()
	for _, b := range got {
		require.Len(t, b, secretLen)
		require.Equal(t, got[0], b)
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	again, err := LoadOrCreateSecret(path)
	require.NoError(t, err)
	require.Equal(t, got[0], again)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left")

	require.NoError(t, os.WriteFile(path, []byte("not-hex-but-secret-words\n"), 0o600))
	_, err = LoadOrCreateSecret(path)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret-words")
}

// FuzzVerify: no query makes Verify panic or accept what was not signed;
// what it accepts re-signs to the same query.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	s := signerAt(f, now)
	good := Grant{Method: "GET", Path: "/api/direct/items/x/outputs/m.glb", Expires: now.Add(time.Minute)}
	f.Add("GET", good.Path, s.Query(good))
	f.Add("PUT", good.Path, s.Query(good))
	f.Add("GET", good.Path, "expires=1&limit=0&signature=")
	f.Add("GET", "/", "expires=99999999999999999999&limit=0&signature=AAAA")
	f.Add("GET", "/", "expires=1800000060&expires=1800000060&limit=0")
	f.Add("GET", "/", "%")
	f.Fuzz(func(t *testing.T, method, path, query string) {
		g, err := s.Verify(method, path, query)
		if err != nil {
			return
		}
		// Only the grant fuzzing started from can verify: the fuzzer
		// cannot forge HMAC-SHA256.
		if method != good.Method || path != good.Path || g.Limit != 0 || !g.Expires.Equal(good.Expires) {
			t.Fatalf("accepted a URL nobody signed: %s %q %q", method, path, query)
		}
		requery, err := url.ParseQuery(s.Query(g))
		require.NoError(t, err)
		parsed, err := url.ParseQuery(query)
		require.NoError(t, err)
		require.Equal(t, requery, parsed)
	})
}
