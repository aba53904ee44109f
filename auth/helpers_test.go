package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// RSA keys take a while to make; the tests share two.
var rsaKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ks[i] = k
	}
	return ks
})

// writeFile writes b to a new file in a temporary directory of t.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// newSecret is a random HS256 secret, as an operator would make it.
func newSecret(t testing.TB) []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(base64.StdEncoding.EncodeToString(b) + "\n")
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return priv
}

// claims are valid claims for a token of user alice, changed by set.
func claims(set func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
		"aud": "drover",
		"iss": "https://idp.example",
	}
	if set != nil {
		set(c)
	}
	return c
}

// sign makes a token; kid is its kid header unless "".
func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// request is a GET from a remote (non-loopback) address with header h.
func request(target string, h http.Header) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	return r
}

func bearerReq(tok string) *http.Request {
	return request("/", http.Header{"Authorization": {"Bearer " + tok}})
}

// logBuffer is a debug logger writing to a buffer the test can read.
func logBuffer() (*slog.Logger, *testutil.SyncBuffer) {
	var b testutil.SyncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

func newAuth(t testing.TB, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(cfg)
	require.NoError(t, err)
	return a
}

// randReader is crypto/rand for rsa.GenerateKey.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }

func x509MarshalPKCS8(k any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k) }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
