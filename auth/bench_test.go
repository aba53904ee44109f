package auth_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
)

// BenchmarkAuthenticate: the cost every request pays, per kind of
// credential.
func BenchmarkAuthenticate(b *testing.B) {
	secret := newSecret(b)
	ed := newEd25519(b)
	a := newAuth(b, auth.Config{
		AdminTokens: []string{adminToken},
		KeysFile:    filepath.Join(b.TempDir(), "keys.json"),
		Logger:      discardLogger(),
		JWT: auth.JWTConfig{SecretFiles: []string{writeFile(b, "hs", secret)},
			KeyFiles: []string{writeFile(b, "ed.pem", pemPublic(b, ed.Public())), writeFile(b, "rsa.pem", pemPublic(b, &rsaKeys()[0].PublicKey))}},
	})
	key, _, err := a.Keys().Create(b.Context(), auth.APIKey{Name: "bench"})
	require.NoError(b, err)
	c := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "roles": []string{"user"}}
	for _, bc := range []struct{ name, tok string }{
		{"admin", adminToken},
		{"api-key", key},
		{"HS256", sign(b, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(secret))), c, "")},
		{"RS256", sign(b, jwt.SigningMethodRS256, rsaKeys()[0], c, "")},
		{"EdDSA", sign(b, jwt.SigningMethodEdDSA, ed, c, "")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := request("/", http.Header{"Authorization": {"Bearer " + bc.tok}})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err.Message)
				}
			}
		})
	}
}
