package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/golang-jwt/jwt/v5"

	"github.com/drover-dev/drover/internal/lib/bearer"
)

// Authenticator checks the credential of a request: the admin token, an
// API key or a JWT. It is safe for concurrent use, Reload included.
type Authenticator struct {
	cfg    Config
	log    *slog.Logger
	admin  bearer.Checker
	keys   KeyStore      // nil: no API keys
	file   *FileKeyStore // the store read from cfg.KeysFile, for Reload
	parser *jwt.Parser   // its options come from cfg; the keys do not
	jwt    atomic.Pointer[jwtKeys]
}

var _ RequestAuthenticator = (*Authenticator)(nil)

// New reads the key files cfg names. Errors name the file that failed,
// never what is in it.
func New(cfg Config) (*Authenticator, error) {
	cfg = cfg.withDefaults()
	a := &Authenticator{cfg: cfg, log: cfg.Logger, admin: bearer.NewChecker(cfg.AdminTokens...), keys: cfg.Keys}
	if a.keys == nil && cfg.KeysFile != "" {
		f, err := NewFileKeyStore(cfg.KeysFile)
		if err != nil {
			return nil, err
		}
		a.keys, a.file = f, f
	}
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(cfg.JWT.Leeway)}
	if cfg.JWT.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWT.Audience))
	}
	if cfg.JWT.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWT.Issuer))
	}
	a.parser = jwt.NewParser(opts...)
	k, err := loadJWTKeys(cfg.JWT)
	if err != nil {
		return nil, err
	}
	a.jwt.Store(k)
	return a, nil
}

// Enforced reports whether users must authenticate: JWT keys or an API
// key store are configured. When they are not, callers without a
// credential are admitted as anonymous from loopback, or from anywhere
// with Config.AllowAnonymous (see Authenticate).
func (a *Authenticator) Enforced() bool { return a.cfg.JWT.Configured() || a.keys != nil }

// Keys is the API key store, nil when there is none.
func (a *Authenticator) Keys() KeyStore { return a.keys }

// Reload reads the JWT key files and the API key file again, as on a
// SIGHUP. On an error the keys in use stay as they were.
func (a *Authenticator) Reload() error {
	k, err := loadJWTKeys(a.cfg.JWT)
	if err != nil {
		return err
	}
	if a.file != nil {
		if err := a.file.Reload(); err != nil {
			return err
		}
	}
	a.jwt.Store(k)
	return nil
}

// Authenticate implements RequestAuthenticator. It reads the first
// credential it finds, in this order: an "Authorization: Bearer" header;
// a "bearer.<token>" entry of Sec-WebSocket-Protocol; the query parameter
// Config.QueryParam; the accessKey of a CS-API-Arg header (read only when
// an API key store is configured: hc-caas servers without access keys
// ignore it, and so does drover).
//
// The token is then tried as the admin token, an API key ("drv_…") and a
// JWT, in that order. A request without a credential gets a nil principal
// and a nil error while users must authenticate (Enforced); otherwise it
// is anonymous: from loopback (without forwarding headers: a proxy on
// this machine forwards others), or from anywhere with
// Config.AllowAnonymous.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, *Error) {
	tok, from := a.credential(r)
	if tok == "" {
		return a.anonymous(r), nil
	}
	p, err, detail := a.check(r.Context(), tok, from)
	if err != nil {
		// detail is golang-jwt's error, which names claims and
		// algorithms, never the token.
		a.log.Debug("auth: credential refused", "from", from, "reason", err.Message, "remote", r.RemoteAddr, "err", detail)
		return nil, err
	}
	return p, nil
}

// credential is r's token and where it was found.
func (a *Authenticator) credential(r *http.Request) (string, string) {
	if t := bearerToken(r); t != "" {
		return t, fromHeader
	}
	if t := subprotocolToken(r); t != "" {
		return t, fromSubprotocol
	}
	if t := r.URL.Query().Get(a.cfg.QueryParam); t != "" {
		return t, fromQuery
	}
	if a.keys != nil {
		if t := CSAPIArgAccessKey(r.Header.Get(CSAPIArgHeader)); t != "" {
			return t, fromCSAPIArg
		}
	}
	return "", ""
}

// maxToken bounds the tokens checked: real ones are far shorter, and a
// JWT of megabytes would cost its decoding.
const maxToken = 16 << 10

// check says whose token tok is. When it does not check out, detail says
// more than the error, for the log.
func (a *Authenticator) check(ctx context.Context, tok, from string) (p *Principal, err *Error, detail error) {
	if len(tok) > maxToken {
		return nil, Unauthorized("the token is too long"), nil
	}
	if a.admin.Valid(tok) {
		return &Principal{User: "admin", Tenant: DefaultTenant, Roles: []string{RoleAdmin, RoleUser}, Via: ViaAdminToken}, nil, nil
	}
	if strings.HasPrefix(tok, secretPrefix) {
		p, err := a.checkKey(ctx, tok, from)
		return p, err, nil
	}
	if strings.Count(tok, ".") == 2 {
		return a.checkJWT(tok)
	}
	return nil, Unauthorized("the token is not valid"), nil
}

func (a *Authenticator) checkKey(ctx context.Context, tok, from string) (*Principal, *Error) {
	if a.keys == nil {
		return nil, Unauthorized(ErrUnknownKey.Error())
	}
	k, err := a.keys.Lookup(ctx, tok)
	switch {
	case errors.Is(err, ErrUnknownKey):
		return nil, Unauthorized(ErrUnknownKey.Error())
	case err != nil:
		a.log.Warn("auth: api key lookup failed", "from", from, "err", err)
		return nil, Unavailable("API keys cannot be checked right now; try again later")
	}
	return &Principal{
		User:     "key:" + k.Name,
		Tenant:   k.Tenant,
		Roles:    slices.Clone(k.Roles),
		ReadOnly: k.ReadOnly,
		Via:      ViaAPIKey,
		KeyID:    k.ID,
	}, nil
}

func (a *Authenticator) checkJWT(tok string) (*Principal, *Error, error) {
	keys := a.jwt.Load()
	if len(keys.keys) == 0 {
		return nil, Unauthorized("JWTs are not accepted here"), nil
	}
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(tok, claims, keys.keyfunc); err != nil {
		return nil, Unauthorized(jwtMessage(err)), err
	}
	p, aerr := a.principalOf(claims)
	return p, aerr, nil
}

// principalOf maps the claims of a valid JWT to a principal.
func (a *Authenticator) principalOf(claims jwt.MapClaims) (*Principal, *Error) {
	c := a.cfg.JWT
	user, _ := claims[c.UserClaim].(string)
	if user == "" {
		return nil, Unauthorized(fmt.Sprintf("the token has no %q claim naming the user", c.UserClaim))
	}
	if !printable(user, maxUser) {
		return nil, Unauthorized(fmt.Sprintf("the token's %q claim is not a user name", c.UserClaim))
	}
	tenant := DefaultTenant
	if v, ok := claims[c.TenantClaim]; ok {
		tenant, _ = v.(string)
		if !printable(tenant, maxName) {
			return nil, Unauthorized(fmt.Sprintf("the token's %q claim is not a tenant", c.TenantClaim))
		}
	}
	roles, ok := rolesClaim(claims[c.RolesClaim])
	if !ok {
		return nil, Unauthorized(fmt.Sprintf("the token's %q claim is not a list of roles", c.RolesClaim))
	}
	return &Principal{User: user, Tenant: tenant, Roles: roles, Via: ViaJWT}, nil
}

// maxUser bounds the user a JWT names (an email address, an IdP's id).
const maxUser = 256

// rolesClaim reads roles: absent is RoleUser; an array of strings or a
// string of space-separated roles (as OAuth's scope).
func rolesClaim(v any) ([]string, bool) {
	var roles []string
	switch v := v.(type) {
	case nil:
		return []string{RoleUser}, true
	case string:
		roles = strings.Fields(v)
	case []any:
		for _, r := range v {
			s, ok := r.(string)
			if !ok || !printable(s, maxName) || strings.ContainsFunc(s, unicode.IsSpace) {
				return nil, false
			}
			roles = append(roles, s)
		}
	default:
		return nil, false
	}
	return roles, true
}

// jwtMessage is the sentence a client gets for a JWT refused with err.
func jwtMessage(err error) string {
	for _, m := range []struct {
		err error
		msg string
	}{
		{errAlgorithm, "the token's algorithm is not accepted"},
		{jwt.ErrTokenUnverifiable, "the token's algorithm is not accepted"},
		{jwt.ErrTokenMalformed, "the token is malformed"},
		{jwt.ErrTokenSignatureInvalid, "the token's signature is not valid"},
		{jwt.ErrTokenExpired, "the token has expired"},
		{jwt.ErrTokenNotValidYet, "the token is not valid yet"},
		{jwt.ErrTokenInvalidAudience, "the token's audience is not accepted"},
		{jwt.ErrTokenInvalidIssuer, "the token's issuer is not accepted"},
		{jwt.ErrTokenRequiredClaimMissing, "the token lacks a required claim (exp, or aud or iss where they are checked)"},
		{jwt.ErrInvalidType, "the token has a claim of the wrong type"},
	} {
		if errors.Is(err, m.err) {
			return m.msg
		}
	}
	return "the token is not valid"
}

// anonymous is the principal of a request without a credential.
func (a *Authenticator) anonymous(r *http.Request) *Principal {
	switch {
	case a.Enforced():
		return nil
	case Loopback(r):
		roles := []string{RoleUser}
		if a.admin.Empty() {
			roles = append(roles, RoleAdmin)
		}
		return &Principal{User: "anonymous", Tenant: DefaultTenant, Roles: roles, Via: ViaLoopback}
	case a.cfg.AllowAnonymous:
		return &Principal{User: "anonymous", Tenant: DefaultTenant, Roles: []string{RoleUser}, Via: ViaAnonymous}
	}
	return nil
}

// Loopback reports whether r comes from this machine: its peer is a
// loopback address and it carries no forwarding header (a proxy on this
// machine relaying someone else's request sets one).
func Loopback(r *http.Request) bool {
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
