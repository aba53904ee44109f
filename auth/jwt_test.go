package auth_test

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
)

// jwtSetup is an authenticator accepting an HS256 secret, an RSA key and
// an Ed25519 key from files, with an audience and an issuer.
type jwtSetup struct {
	a       *auth.Authenticator
	secret  []byte // as in the file, newline included
	rsa     *rsa.PrivateKey
	rsaPEM  []byte
	ed      ed25519.PrivateKey
	edPEM   []byte
	secrets []string // every secret the setup holds, for leak checks
}

func newJWTSetup(t *testing.T, cfg auth.Config) *jwtSetup {
	s := &jwtSetup{secret: newSecret(t), rsa: rsaKeys()[0], ed: newEd25519(t)}
	s.rsaPEM = pemPublic(t, &s.rsa.PublicKey)
	s.edPEM = pemPublic(t, s.ed.Public())
	cfg.JWT.SecretFiles = []string{writeFile(t, "hs.secret", s.secret)}
	cfg.JWT.KeyFiles = []string{writeFile(t, "rsa.pem", s.rsaPEM), writeFile(t, "ed.pem", s.edPEM)}
	cfg.JWT.Audience = "drover"
	cfg.JWT.Issuer = "https://idp.example"
	s.a = newAuth(t, cfg)
	s.secrets = []string{strings.TrimSpace(string(s.secret))}
	return s
}

func (s *jwtSetup) hs(t *testing.T, c jwt.MapClaims) string {
	return sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(s.secret))), c, "")
}

func TestJWT(t *testing.T) {
	s := newJWTSetup(t, auth.Config{JWT: auth.JWTConfig{Leeway: time.Minute}})
	other := rsaKeys()[1]
	hour := time.Hour
	tests := []struct {
		name string
		tok  func(t *testing.T) string
		want *auth.Principal // nil: refused with msg
		msg  string
	}{
		{"HS256", func(t *testing.T) string { return s.hs(t, claims(nil)) },
			&auth.Principal{User: "alice", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser}, Via: auth.ViaJWT}, ""},
		{"RS256", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, s.rsa, claims(func(c jwt.MapClaims) { c["tenant"] = "acme"; c["roles"] = []string{"admin", "user"} }), "")
		}, &auth.Principal{User: "alice", Tenant: "acme", Roles: []string{"admin", "user"}, Via: auth.ViaJWT}, ""},
		{"EdDSA, roles as a string", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodEdDSA, s.ed, claims(func(c jwt.MapClaims) { c["roles"] = "user viewer" }), "")
		}, &auth.Principal{User: "alice", Tenant: auth.DefaultTenant, Roles: []string{"user", "viewer"}, Via: auth.ViaJWT}, ""},
		{"one audience among several", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["aud"] = []string{"other", "drover"} }))
		}, &auth.Principal{User: "alice", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser}, Via: auth.ViaJWT}, ""},
		{"expired within the leeway", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-30 * time.Second).Unix() }))
		}, &auth.Principal{User: "alice", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser}, Via: auth.ViaJWT}, ""},

		{"expired", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-hour).Unix() }))
		}, nil, "the token has expired"},
		{"not valid yet", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(hour).Unix() }))
		}, nil, "the token is not valid yet"},
		{"no exp", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { delete(c, "exp") }))
		}, nil, "the token lacks a required claim (exp, or aud or iss where they are checked)"},
		{"wrong audience", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, s.rsa, claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" }), "")
		}, nil, "the token's audience is not accepted"},
		{"no audience", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { delete(c, "aud") }))
		}, nil, "the token lacks a required claim (exp, or aud or iss where they are checked)"},
		{"wrong issuer", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodEdDSA, s.ed, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), "")
		}, nil, "the token's issuer is not accepted"},
		{"RS256 signed by another key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, other, claims(nil), "")
		}, nil, "the token's signature is not valid"},
		{"HS256 signed by another secret", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, []byte("another secret of at least thirty-two bytes"), claims(nil), "")
		}, nil, "the token's signature is not valid"},
		{"EdDSA signed by another key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodEdDSA, newEd25519(t), claims(nil), "")
		}, nil, "the token's signature is not valid"},
		{"tampered claims", func(t *testing.T) string {
			tok := s.hs(t, claims(nil))
			parts := strings.Split(tok, ".")
			parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":9999999999,"aud":"drover","iss":"https://idp.example"}`))
			return strings.Join(parts, ".")
		}, nil, "the token's signature is not valid"},
		{"algorithm confusion: HS256 keyed with the RSA public key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, s.rsaPEM, claims(nil), "")
		}, nil, "the token's signature is not valid"},
		{"algorithm confusion: HS256 keyed with the Ed25519 public key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, []byte(s.ed.Public().(ed25519.PublicKey)), claims(nil), "")
		}, nil, "the token's signature is not valid"},
		{"alg none", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), "")
		}, nil, "the token's algorithm is not accepted"},
		{"alg HS512, not on the list", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS512, []byte(strings.TrimSpace(string(s.secret))), claims(nil), "")
		}, nil, "the token's algorithm is not accepted"},
		{"alg PS256 with the RSA key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodPS256, s.rsa, claims(nil), "")
		}, nil, "the token's algorithm is not accepted"},
		{"unknown alg", func(t *testing.T) string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"XX256","typ":"JWT"}`))
			b := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice"}`))
			return h + "." + b + ".c2ln"
		}, nil, "the token's algorithm is not accepted"},
		{"malformed", func(t *testing.T) string { return "not.a.jwt" }, nil, "the token is malformed"},
		{"no subject", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { delete(c, "sub") }))
		}, nil, `the token has no "sub" claim naming the user`},
		{"roles of the wrong type", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["roles"] = 7 }))
		}, nil, `the token's "roles" claim is not a list of roles`},
		{"tenant of the wrong type", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["tenant"] = []string{"a", "b"} }))
		}, nil, `the token's "tenant" claim is not a tenant`},
		{"empty tenant", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["tenant"] = "" }))
		}, nil, `the token's "tenant" claim is not a tenant`},
		{"tenant with a control character", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["tenant"] = "acme\nadmin" }))
		}, nil, `the token's "tenant" claim is not a tenant`},
		{"user with a control character", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["sub"] = "alice\x1b[31m" }))
		}, nil, `the token's "sub" claim is not a user name`},
		{"a role with a space", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["roles"] = []string{"user", "ad min"} }))
		}, nil, `the token's "roles" claim is not a list of roles`},
		{"exp of the wrong type", func(t *testing.T) string {
			return s.hs(t, claims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }))
		}, nil, "the token has a claim of the wrong type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.tok(t)
			p, err := s.a.Authenticate(bearerReq(tok))
			if tt.want != nil {
				require.Nil(t, err)
				require.Equal(t, tt.want, p)
				return
			}
			require.Nil(t, p)
			require.NotNil(t, err)
			require.Equal(t, http.StatusUnauthorized, err.Status)
			require.Equal(t, "unauthorized", err.Code)
			require.Equal(t, tt.msg, err.Message)
			require.NotContains(t, err.Message, tok)
		})
	}
}

// TestJWTClaimNames: the claims a principal is read from are configurable,
// and audience and issuer are checked only when configured.
func TestJWTClaimNames(t *testing.T) {
	secret := newSecret(t)
	a := newAuth(t, auth.Config{JWT: auth.JWTConfig{
		SecretFiles: []string{writeFile(t, "s", secret)},
		UserClaim:   "email", TenantClaim: "org", RolesClaim: "scope",
	}})
	tok := sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(secret))), jwt.MapClaims{
		"email": "bob@example.com", "org": "acme", "scope": "user admin", "sub": "ignored",
		"exp": time.Now().Add(time.Minute).Unix(), "aud": "anything", "iss": "anyone",
	}, "")
	p, err := a.Authenticate(bearerReq(tok))
	require.Nil(t, err)
	require.Equal(t, &auth.Principal{User: "bob@example.com", Tenant: "acme", Roles: []string{"user", "admin"}, Via: auth.ViaJWT}, p)
	require.True(t, p.Admin())
}

// jwk is one member of a test JWKS.
func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func jwksFile(t *testing.T, keys ...map[string]string) string {
	b, err := json.Marshal(map[string]any{"keys": keys})
	require.NoError(t, err)
	return writeFile(t, "jwks.json", b)
}

func TestJWKS(t *testing.T) {
	r1, r2 := rsaKeys()[0], rsaKeys()[1]
	ed := newEd25519(t)
	oct := []byte("an oct key of at least thirty-two bytes, for HS256")
	file := jwksFile(t,
		rsaJWK("r1", &r1.PublicKey),
		rsaJWK("r2", &r2.PublicKey),
		map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": "e1", "x": base64.RawURLEncoding.EncodeToString(ed.Public().(ed25519.PublicKey))},
		map[string]string{"kty": "oct", "kid": "h1", "k": base64.RawURLEncoding.EncodeToString(oct)},
		// skipped: other key types, algorithms and uses
		map[string]string{"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AAAA", "y": "AAAA"},
		map[string]string{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
		map[string]string{"kty": "RSA", "kid": "rs512", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
	)
	a := newAuth(t, auth.Config{JWT: auth.JWTConfig{JWKSFile: file}})
	ok := func(t *testing.T, tok string) {
		p, err := a.Authenticate(bearerReq(tok))
		require.Nil(t, err)
		require.Equal(t, "alice", p.User)
	}
	refused := func(t *testing.T, tok, msg string) {
		p, err := a.Authenticate(bearerReq(tok))
		require.Nil(t, p)
		require.NotNil(t, err)
		require.Equal(t, msg, err.Message)
	}
	t.Run("kid picks the RSA key", func(t *testing.T) {
		ok(t, sign(t, jwt.SigningMethodRS256, r1, claims(nil), "r1"))
		ok(t, sign(t, jwt.SigningMethodRS256, r2, claims(nil), "r2"))
	})
	t.Run("kid names another RSA key", func(t *testing.T) {
		refused(t, sign(t, jwt.SigningMethodRS256, r1, claims(nil), "r2"), "the token's signature is not valid")
	})
	t.Run("no kid: every key of the algorithm", func(t *testing.T) {
		ok(t, sign(t, jwt.SigningMethodRS256, r2, claims(nil), ""))
	})
	t.Run("unknown kid: every key of the algorithm", func(t *testing.T) {
		ok(t, sign(t, jwt.SigningMethodRS256, r2, claims(nil), "rotated-away"))
	})
	t.Run("Ed25519", func(t *testing.T) {
		ok(t, sign(t, jwt.SigningMethodEdDSA, ed, claims(nil), "e1"))
	})
	t.Run("oct", func(t *testing.T) {
		ok(t, sign(t, jwt.SigningMethodHS256, oct, claims(nil), "h1"))
	})
	t.Run("kid of an RSA key on an HS256 token keyed with its modulus", func(t *testing.T) {
		refused(t, sign(t, jwt.SigningMethodHS256, r1.N.Bytes(), claims(nil), "r1"), "the token's signature is not valid")
	})
}

// TestNewErrors: a file that cannot be used is an error naming the file
// and never its contents.
func TestNewErrors(t *testing.T) {
	small, err := rsa.GenerateKey(randReader{}, 1024)
	require.NoError(t, err)
	der := pemPublic(t, &small.PublicKey)
	shortSecret := "short-secret-XYZ"
	okSecret := writeFile(t, "ok.secret", newSecret(t))
	tests := []struct {
		name    string
		cfg     auth.JWTConfig
		content string // must not appear in the error
		want    string // the error contains it
	}{
		{"missing secret file", auth.JWTConfig{SecretFiles: []string{"/nonexistent/s"}}, "", "/nonexistent/s"},
		{"short secret", auth.JWTConfig{SecretFiles: []string{writeFile(t, "short", []byte(shortSecret))}}, shortSecret, "shorter than 32 bytes"},
		{"key file not PEM", auth.JWTConfig{KeyFiles: []string{writeFile(t, "k.pem", []byte("hello-not-pem"))}}, "hello-not-pem", "no PEM block"},
		{"private key", auth.JWTConfig{KeyFiles: []string{writeFile(t, "priv.pem", privatePEM(t))}}, "MII", "private key"},
		{"small RSA key", auth.JWTConfig{KeyFiles: []string{writeFile(t, "small.pem", der)}}, "MII", "1024 bits"},
		{"jwks not JSON", auth.JWTConfig{SecretFiles: []string{okSecret}, JWKSFile: writeFile(t, "j.json", []byte("{garbage-XYZ"))}, "garbage-XYZ", "not a JSON Web Key Set"},
		{"jwks without usable keys", auth.JWTConfig{JWKSFile: writeFile(t, "j.json", []byte(`{"keys":[{"kty":"EC"}]}`))}, "", "no usable key"},
		{"jwks short oct key", auth.JWTConfig{JWKSFile: writeFile(t, "j.json", []byte(`{"keys":[{"kty":"oct","kid":"k","k":"c2hvcnQtb2N0LVhZWg"}]}`))}, "c2hvcnQtb2N0LVhZWg", "shorter than 32 bytes"},
		{"jwks bad base64", auth.JWTConfig{JWKSFile: writeFile(t, "j.json", []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"!!notbase64XYZ"}]}`))}, "notbase64XYZ", `"x" is not base64url`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.New(auth.Config{JWT: tt.cfg})
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			files := append(append(tt.cfg.SecretFiles, tt.cfg.KeyFiles...), tt.cfg.JWKSFile)
			named := false
			for _, f := range files {
				named = named || f != "" && f != okSecret && strings.Contains(err.Error(), f)
			}
			require.True(t, named, "the error names the file: %v", err)
			if tt.content != "" {
				require.NotContains(t, err.Error(), tt.content)
			}
		})
	}
	_, err = auth.New(auth.Config{KeysFile: writeFile(t, "keys.json", []byte("{not json"))})
	require.ErrorContains(t, err, "keys.json")
}

func privatePEM(t *testing.T) []byte {
	der, err := x509MarshalPKCS8(newEd25519(t))
	require.NoError(t, err)
	return pemBlock("PRIVATE KEY", der)
}

// TestReload: new keys take effect at once, old ones stop working, and
// authentications running meanwhile see either set, never a torn one.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	secretFile := dir + "/hs.secret"
	oldSecret, newSecretB := newSecret(t), newSecret(t)
	require.NoError(t, os.WriteFile(secretFile, oldSecret, 0o600))
	a := newAuth(t, auth.Config{JWT: auth.JWTConfig{SecretFiles: []string{secretFile}}})
	key := func(b []byte) []byte { return []byte(strings.TrimSpace(string(b))) }
	oldTok := sign(t, jwt.SigningMethodHS256, key(oldSecret), claims(nil), "")
	newTok := sign(t, jwt.SigningMethodHS256, key(newSecretB), claims(nil), "")
	_, err := a.Authenticate(bearerReq(oldTok))
	require.Nil(t, err)

	// A broken file keeps the old keys.
	require.NoError(t, os.WriteFile(secretFile, []byte("short"), 0o600))
	require.ErrorContains(t, a.Reload(), secretFile)
	_, err = a.Authenticate(bearerReq(oldTok))
	require.Nil(t, err)

	stop := make(chan struct{})
	done := make(chan int)
	for range 4 {
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				p, err := a.Authenticate(bearerReq(oldTok))
				p2, err2 := a.Authenticate(bearerReq(newTok))
				// One of the two passes at any time; both may while
				// the first call ran before the swap and the second after.
				if (p == nil) == (err == nil) || (p2 == nil) == (err2 == nil) {
					t.Error("principal and error both set or both nil")
				}
				n++
			}
		}()
	}
	require.NoError(t, os.WriteFile(secretFile, newSecretB, 0o600))
	require.NoError(t, a.Reload())
	close(stop)
	for range 4 {
		<-done
	}
	_, err = a.Authenticate(bearerReq(oldTok))
	require.NotNil(t, err)
	require.Equal(t, "the token's signature is not valid", err.Message)
	p, err := a.Authenticate(bearerReq(newTok))
	require.Nil(t, err)
	require.Equal(t, "alice", p.User)
}

// TestReloadKeyFile: Reload reads the API key file too; when it cannot,
// neither the keys nor the JWT keys change.
func TestReloadKeyFile(t *testing.T) {
	dir := t.TempDir()
	keysFile, secretFile := dir+"/keys.json", dir+"/hs.secret"
	oldSecret, newSecretB := newSecret(t), newSecret(t)
	require.NoError(t, os.WriteFile(secretFile, oldSecret, 0o600))
	a := newAuth(t, auth.Config{KeysFile: keysFile, JWT: auth.JWTConfig{SecretFiles: []string{secretFile}}})
	key, _, err := a.Keys().Create(t.Context(), auth.APIKey{Name: "k"})
	require.NoError(t, err)
	oldTok := sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(oldSecret))), claims(nil), "")

	require.NoError(t, os.WriteFile(secretFile, newSecretB, 0o600))
	good, err := os.ReadFile(keysFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keysFile, []byte("{"), 0o600))
	require.ErrorContains(t, a.Reload(), keysFile)
	_, aerr := a.Authenticate(bearerReq(oldTok))
	require.Nil(t, aerr, "the JWT keys stay as they were")
	_, aerr = a.Authenticate(bearerReq(key))
	require.Nil(t, aerr, "so do the API keys")

	require.NoError(t, os.WriteFile(keysFile, good, 0o600))
	require.NoError(t, a.Reload())
	_, aerr = a.Authenticate(bearerReq(oldTok))
	require.NotNil(t, aerr)
	_, aerr = a.Authenticate(bearerReq(key))
	require.Nil(t, aerr)
}
