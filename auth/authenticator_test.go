package auth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
)

const adminToken = "admin-token-of-the-test-0123456789"

// keySetup is an authenticator with an admin token, an API key file and
// an HS256 secret, and a key of each kind.
type keySetup struct {
	a          *auth.Authenticator
	store      auth.KeyStore
	key        string // a read-write key of tenant acme
	roKey      string // a read-only key
	revoked    string // a revoked key
	jwt        string // a JWT of alice
	secret     []byte
	keyID      string
	logs       interface{ String() string }
	allSecrets []string
}

func newKeySetup(t *testing.T, cfg auth.Config) *keySetup {
	ctx := context.Background()
	s := &keySetup{secret: newSecret(t)}
	cfg.AdminTokens = []string{adminToken}
	cfg.KeysFile = filepath.Join(t.TempDir(), "keys.json")
	cfg.JWT.SecretFiles = []string{writeFile(t, "hs", s.secret)}
	log, buf := logBuffer()
	cfg.Logger, s.logs = log, buf
	s.a = newAuth(t, cfg)
	s.store = s.a.Keys()
	require.NotNil(t, s.store)
	var k auth.APIKey
	var err error
	s.key, k, err = s.store.Create(ctx, auth.APIKey{Name: "ci", Tenant: "acme"})
	require.NoError(t, err)
	s.keyID = k.ID
	s.roKey, _, err = s.store.Create(ctx, auth.APIKey{Name: "dashboard", ReadOnly: true})
	require.NoError(t, err)
	s.revoked, k, err = s.store.Create(ctx, auth.APIKey{Name: "gone"})
	require.NoError(t, err)
	require.NoError(t, s.store.Revoke(ctx, k.ID))
	s.jwt = sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(s.secret))), jwt.MapClaims{
		"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "tenant": "acme",
	}, "")
	s.allSecrets = []string{adminToken, s.key, s.roKey, s.revoked, s.jwt, strings.TrimSpace(string(s.secret))}
	return s
}

func csAPIArg(key string) string {
	b, _ := json.Marshal(map[string]any{"accessKey": key, "webhook": "https://example.com/hook"})
	return string(b)
}

// TestCredentialSources: every place a token is read from, and which wins.
func TestCredentialSources(t *testing.T) {
	s := newKeySetup(t, auth.Config{})
	ci := &auth.Principal{User: "key:ci", Tenant: "acme", Roles: []string{auth.RoleUser}, Via: auth.ViaAPIKey, KeyID: s.keyID}
	admin := &auth.Principal{User: "admin", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleAdmin, auth.RoleUser}, Via: auth.ViaAdminToken}
	alice := &auth.Principal{User: "alice", Tenant: "acme", Roles: []string{auth.RoleUser}, Via: auth.ViaJWT}
	tests := []struct {
		name   string
		target string
		h      http.Header
		want   *auth.Principal
		msg    string // when want is nil
	}{
		{"header, api key", "/", http.Header{"Authorization": {"Bearer " + s.key}}, ci, ""},
		{"header, lower-case scheme", "/", http.Header{"Authorization": {"bearer " + s.key}}, ci, ""},
		{"header, admin token", "/", http.Header{"Authorization": {"Bearer " + adminToken}}, admin, ""},
		{"header, jwt", "/", http.Header{"Authorization": {"Bearer " + s.jwt}}, alice, ""},
		{"subprotocol", "/ws", http.Header{"Sec-Websocket-Protocol": {"drover, bearer." + s.jwt}}, alice, ""},
		{"subprotocol, two headers", "/ws", http.Header{"Sec-Websocket-Protocol": {"drover", "bearer." + s.key}}, ci, ""},
		{"query", "/ws?access_token=" + url.QueryEscape(s.key), nil, ci, ""},
		{"token is not the query parameter", "/ws?token=" + url.QueryEscape(s.key), nil, nil, ""},
		{"CS-API-Arg", "/api/upload", http.Header{"Cs-Api-Arg": {csAPIArg(s.key)}}, ci, ""},
		{"CS-API-Arg, admin token", "/api/upload", http.Header{"Cs-Api-Arg": {csAPIArg(adminToken)}}, admin, ""},
		{"CS-API-Arg not JSON", "/api/upload", http.Header{"Cs-Api-Arg": {"accessKey=" + s.key}}, nil, ""},
		{"header before the query", "/?access_token=" + url.QueryEscape(s.revoked), http.Header{"Authorization": {"Bearer " + s.key}}, ci, ""},
		{"header before the subprotocol", "/", http.Header{"Authorization": {"Bearer " + s.jwt}, "Sec-Websocket-Protocol": {"bearer." + s.revoked}}, alice, ""},
		{"subprotocol before the query", "/?access_token=" + url.QueryEscape(s.revoked), http.Header{"Sec-Websocket-Protocol": {"bearer." + s.key}}, ci, ""},
		{"query before CS-API-Arg", "/?access_token=" + url.QueryEscape(s.key), http.Header{"Cs-Api-Arg": {csAPIArg(s.revoked)}}, ci, ""},
		{"basic auth is no credential", "/", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}, nil, ""},
		{"empty bearer is no credential", "/", http.Header{"Authorization": {"Bearer "}}, nil, ""},
		{"revoked key", "/", http.Header{"Authorization": {"Bearer " + s.revoked}}, nil, "unknown or revoked API key"},
		{"revoked key in CS-API-Arg", "/", http.Header{"Cs-Api-Arg": {csAPIArg(s.revoked)}}, nil, "unknown or revoked API key"},
		{"unknown key", "/", http.Header{"Authorization": {"Bearer drv_0123456789abcdef_nope"}}, nil, "unknown or revoked API key"},
		{"near admin token", "/", http.Header{"Authorization": {"Bearer " + adminToken + "x"}}, nil, "the token is not valid"},
		{"token too long", "/", http.Header{"Authorization": {"Bearer " + strings.Repeat("a.", 9000)}}, nil, "the token is too long"},
		{"opaque token", "/", http.Header{"Authorization": {"Bearer hello"}}, nil, "the token is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.a.Authenticate(request(tt.target, tt.h))
			require.Equal(t, tt.want, p)
			if tt.msg == "" {
				require.Nil(t, err)
				return
			}
			require.NotNil(t, err)
			require.Equal(t, http.StatusUnauthorized, err.Status)
			require.Equal(t, tt.msg, err.Message)
		})
	}
}

func TestReadOnlyKey(t *testing.T) {
	s := newKeySetup(t, auth.Config{})
	p, err := s.a.Authenticate(bearerReq(s.roKey))
	require.Nil(t, err)
	require.True(t, p.ReadOnly)
	require.False(t, p.CanWrite())
	require.Equal(t, "key:dashboard", p.User)
	require.Equal(t, auth.DefaultTenant, p.Tenant)
	p, err = s.a.Authenticate(bearerReq(s.key))
	require.Nil(t, err)
	require.True(t, p.CanWrite())
}

// TestCSAPIArgWithoutKeys: without an API key store the accessKey is not
// read, as hc-caas servers without keys ignore it.
func TestCSAPIArgWithoutKeys(t *testing.T) {
	a := newAuth(t, auth.Config{AdminTokens: []string{adminToken}, AllowAnonymous: true})
	p, err := a.Authenticate(request("/", http.Header{"Cs-Api-Arg": {csAPIArg("drv_0123456789abcdef_whatever")}}))
	require.Nil(t, err)
	require.Equal(t, auth.ViaAnonymous, p.Via)
}

func TestQueryParam(t *testing.T) {
	s := newKeySetup(t, auth.Config{QueryParam: "key"})
	p, err := s.a.Authenticate(request("/?key="+url.QueryEscape(s.key), nil))
	require.Nil(t, err)
	require.Equal(t, "key:ci", p.User)
	p, err = s.a.Authenticate(request("/?access_token="+url.QueryEscape(s.key), nil))
	require.Nil(t, err)
	require.Nil(t, p)
	a := newAuth(t, auth.Config{QueryParam: "jwt"})
	require.Equal(t, "/ws?jwt=REDACTED&x=1", a.Scrub(&url.URL{Path: "/ws", RawQuery: "jwt=" + s.jwt + "&x=1"}))
	require.Equal(t, "jwt=REDACTED&access_token=REDACTED", a.ScrubQuery("jwt=a&access_token=b"))
}

func TestSubprotocol(t *testing.T) {
	for _, tt := range []struct {
		h    []string
		want string
	}{
		{nil, ""},
		{[]string{"drover"}, "drover"},
		{[]string{"bearer.abc, drover"}, "drover"},
		{[]string{"drover, bearer.abc"}, "drover"},
		{[]string{" bearer.abc ,  drover.v2 , drover"}, "drover.v2"},
		{[]string{"bearer.abc", "drover"}, "drover"},
		{[]string{"bearer.abc"}, ""},
		{[]string{", ,"}, ""},
	} {
		r := request("/ws", http.Header{"Sec-Websocket-Protocol": tt.h})
		require.Equal(t, tt.want, auth.Subprotocol(r), "%q", tt.h)
	}
}

func TestCSAPIArgAccessKey(t *testing.T) {
	for _, tt := range []struct{ h, want string }{
		{`{"accessKey":"k1"}`, "k1"},
		{`{"accessKey":"k1","webhook":"http://x","extra":{"a":[1,2]}}`, "k1"},
		{`{"webhook":"http://x"}`, ""},
		{`{"accessKey":7}`, ""},
		{`{"accessKey":null}`, ""},
		{`["accessKey"]`, ""},
		{`{"accessKey":"k1"`, ""},
		{``, ""},
		{`{"accessKey":"` + strings.Repeat("a", 9000) + `"}`, ""},
	} {
		require.Equal(t, tt.want, auth.CSAPIArgAccessKey(tt.h), "%.40q", tt.h)
	}
}

// TestProtectedMode: without user authentication, callers without a
// credential are admitted from this machine only, unless anonymous
// callers are allowed.
func TestProtectedMode(t *testing.T) {
	loopAdmin := &auth.Principal{User: "anonymous", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser, auth.RoleAdmin}, Via: auth.ViaLoopback}
	loopUser := &auth.Principal{User: "anonymous", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser}, Via: auth.ViaLoopback}
	anon := &auth.Principal{User: "anonymous", Tenant: auth.DefaultTenant, Roles: []string{auth.RoleUser}, Via: auth.ViaAnonymous}
	secretFile := writeFile(t, "hs", newSecret(t))
	tests := []struct {
		name   string
		cfg    auth.Config
		remote string
		h      http.Header
		want   *auth.Principal
	}{
		{"loopback v4", auth.Config{}, "127.0.0.1:5000", nil, loopAdmin},
		{"loopback 127/8", auth.Config{}, "127.1.2.3:5000", nil, loopAdmin},
		{"loopback v6", auth.Config{}, "[::1]:5000", nil, loopAdmin},
		{"loopback v4 in v6", auth.Config{}, "[::ffff:127.0.0.1]:5000", nil, loopAdmin},
		{"loopback with admin tokens: no admin role", auth.Config{AdminTokens: []string{adminToken}}, "127.0.0.1:5000", nil, loopUser},
		{"remote", auth.Config{}, "192.0.2.1:5000", nil, nil},
		{"private remote", auth.Config{}, "10.0.0.7:5000", nil, nil},
		{"no port", auth.Config{}, "127.0.0.1", nil, nil},
		{"forwarded for", auth.Config{}, "127.0.0.1:5000", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, nil},
		{"forwarded for loopback is still forwarded", auth.Config{}, "127.0.0.1:5000", http.Header{"X-Forwarded-For": {"127.0.0.1"}}, nil},
		{"forwarded", auth.Config{}, "[::1]:5000", http.Header{"Forwarded": {"for=192.0.2.1"}}, nil},
		{"real ip", auth.Config{}, "127.0.0.1:5000", http.Header{"X-Real-Ip": {"192.0.2.1"}}, nil},
		{"anonymous allowed, remote", auth.Config{AllowAnonymous: true}, "192.0.2.1:5000", nil, anon},
		{"anonymous allowed, forwarded", auth.Config{AllowAnonymous: true}, "127.0.0.1:5000", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, anon},
		{"anonymous allowed, loopback", auth.Config{AllowAnonymous: true}, "127.0.0.1:5000", nil, loopAdmin},
		{"enforced by JWT, loopback", auth.Config{AllowAnonymous: true, JWT: auth.JWTConfig{SecretFiles: []string{secretFile}}}, "127.0.0.1:5000", nil, nil},
		{"enforced by keys, loopback", auth.Config{AllowAnonymous: true, KeysFile: filepath.Join(t.TempDir(), "k.json")}, "127.0.0.1:5000", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, tt.cfg)
			r := request("/", tt.h)
			r.RemoteAddr = tt.remote
			p, err := a.Authenticate(r)
			require.Nil(t, err)
			require.Equal(t, tt.want, p)
		})
	}
	require.False(t, newAuth(t, auth.Config{AdminTokens: []string{adminToken}}).Enforced(), "admin tokens alone do not authenticate users")
	require.True(t, newAuth(t, auth.Config{JWT: auth.JWTConfig{SecretFiles: []string{secretFile}}}).Enforced())

	t.Run("a bad credential is refused in protected mode too", func(t *testing.T) {
		r := bearerReq("nope")
		r.RemoteAddr = "127.0.0.1:5000"
		p, err := newAuth(t, auth.Config{}).Authenticate(r)
		require.Nil(t, p)
		require.NotNil(t, err)
	})
}

// TestNoSecretInErrorsOrLogs: whatever is refused, neither the error a
// client gets nor the log says a token, key or secret.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	s := newKeySetup(t, auth.Config{JWT: auth.JWTConfig{Audience: "drover"}})
	key := []byte(strings.TrimSpace(string(s.secret)))
	expired := sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "aud": "drover", "exp": time.Now().Add(-time.Hour).Unix()}, "")
	wrongAud := sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "aud": "x", "exp": time.Now().Add(time.Hour).Unix()}, "")
	badSig := sign(t, jwt.SigningMethodHS256, []byte("not the secret but long enough to sign, really"), jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}, "")
	forgedKey := s.key[:len(s.key)-4] + "AAAA"
	tokens := []string{s.revoked, expired, wrongAud, badSig, forgedKey, adminToken + "x", s.jwt /* no aud: refused */, "opaque-credential-XYZ", "a.b.c"}
	var msgs []string
	for _, tok := range tokens {
		for _, r := range []*http.Request{
			bearerReq(tok),
			request("/ws", http.Header{"Sec-Websocket-Protocol": {"drover, bearer." + tok}}),
			request("/?access_token="+url.QueryEscape(tok), nil),
			request("/", http.Header{"Cs-Api-Arg": {csAPIArg(tok)}}),
		} {
			p, err := s.a.Authenticate(r)
			require.Nil(t, p, "%.20s", tok)
			require.NotNil(t, err, "%.20s", tok)
			msgs = append(msgs, err.Message, err.Error(), err.Session().Error())
		}
	}
	logs := s.logs.String()
	require.Contains(t, logs, "credential refused", "the test reads the debug lines")
	secrets := append(append([]string{}, s.allSecrets...), tokens[:len(tokens)-1]...)
	for _, sec := range secrets {
		require.NotContains(t, logs, sec)
		for _, m := range msgs {
			require.NotContains(t, m, sec)
		}
		// The random part of a key alone is a secret as well.
		if strings.HasPrefix(sec, "drv_") {
			require.NotContains(t, logs, sec[len(sec)-43:])
		}
		// So is a JWT's signature.
		if parts := strings.Split(sec, "."); len(parts) == 3 {
			require.NotContains(t, logs, parts[2])
		}
	}
}

// TestNoJWTKeys: without JWT keys a JWT is refused, whatever it says.
func TestNoJWTKeys(t *testing.T) {
	a := newAuth(t, auth.Config{KeysFile: filepath.Join(t.TempDir(), "k.json")})
	tok := sign(t, jwt.SigningMethodHS256, []byte("a secret of thirty-two bytes or more, really"), claims(nil), "")
	p, err := a.Authenticate(bearerReq(tok))
	require.Nil(t, p)
	require.NotNil(t, err)
	require.Equal(t, "JWTs are not accepted here", err.Message)
	tok = sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), "")
	p, err = a.Authenticate(bearerReq(tok))
	require.Nil(t, p)
	require.NotNil(t, err)
}
