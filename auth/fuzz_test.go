package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
)

// FuzzAuthenticate: whatever Authorization and Sec-WebSocket-Protocol
// values come in, Authenticate neither panics nor admits one that carries
// no valid credential. The secrets are made fresh for each run, so no
// input can hold them.
func FuzzAuthenticate(f *testing.F) {
	secret := newSecret(f)
	cfg := auth.Config{
		AdminTokens: []string{string(newSecret(f))},
		KeysFile:    filepath.Join(f.TempDir(), "keys.json"),
		JWT:         auth.JWTConfig{SecretFiles: []string{writeFile(f, "hs", secret)}, KeyFiles: []string{writeFile(f, "ed.pem", pemPublic(f, newEd25519(f).Public()))}},
		Logger:      discardLogger(),
	}
	a, err := auth.New(cfg)
	require.NoError(f, err)
	_, _, err = a.Keys().Create(f.Context(), auth.APIKey{Name: "fuzz"})
	require.NoError(f, err)
	// A valid token signed with another secret, to mutate.
	forged := sign(f, jwt.SigningMethodHS256, []byte("another secret, of thirty-two bytes or more"), jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()}, "")
	for _, s := range [][2]string{
		{"", ""},
		{"Bearer " + forged, ""},
		{"", "drover, bearer." + forged},
		{"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", ""},
		{"Bearer drv_0123456789abcdef_AAAA", "bearer.drv_0123456789abcdef_AAAA"},
		{"bearer  a.b.c", "bearer., bearer.x.y.z"},
		{"Basic Zm9vOmJhcg==", ",,,"},
		{"Bearer " + strings.Repeat("a.", 1000), "bearer." + strings.Repeat("%", 100)},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, authz, proto string) {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.Header.Set("Authorization", authz)
		r.Header.Set("Sec-WebSocket-Protocol", proto)
		p, aerr := a.Authenticate(r)
		if p != nil {
			t.Fatalf("admitted %+v", p)
		}
		if aerr != nil && (aerr.Status != http.StatusUnauthorized || aerr.Message == "") {
			t.Fatalf("error %+v", aerr)
		}
		_ = auth.Subprotocol(r)
	})
}

// FuzzCSAPIArgAccessKey: any header value; a key comes only out of a JSON
// object of bounded size that has it.
func FuzzCSAPIArgAccessKey(f *testing.F) {
	for _, s := range []string{`{"accessKey":"k"}`, `{"accessKey":1}`, `{"AccessKey":"k","x":[{}]}`, `[]`, `"accessKey"`, `{`, ``, `{"accessKey":"\u0000"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		k := auth.CSAPIArgAccessKey(h)
		if k == "" {
			return
		}
		if len(h) > 8<<10 || !json.Valid([]byte(h)) || !strings.HasPrefix(strings.TrimLeft(h, " \t\r\n"), "{") {
			t.Fatalf("key %q out of %q", k, h)
		}
	})
}
