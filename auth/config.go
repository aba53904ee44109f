package auth

import (
	"cmp"
	"log/slog"
	"time"
)

// Config is how an Authenticator checks credentials. The zero value checks
// nothing: callers on this machine are admitted (protected mode), others
// carry no principal.
type Config struct {
	// AdminTokens are accepted as bearer tokens of the admin.
	AdminTokens []string
	// JWT says which JSON Web Tokens are accepted.
	JWT JWTConfig
	// KeysFile is the file API keys are stored in (a FileKeyStore), ""
	// for none.
	KeysFile string
	// Keys is the API key store; it overrides KeysFile (a RedisKeyStore,
	// which several managers share).
	Keys KeyStore
	// AllowAnonymous admits callers without a credential from anywhere
	// while no user authentication is configured (see Enforced). Without
	// it only loopback callers are.
	AllowAnonymous bool
	// QueryParam is the query parameter a token may be sent in, for
	// clients that can set no header; default "access_token".
	QueryParam string
	// Logger gets debug lines on refused credentials (never the
	// credential); default slog.Default().
	Logger *slog.Logger
}

// JWTConfig says which JSON Web Tokens are accepted and how their claims
// map to a Principal. Tokens must carry exp; nbf, aud and iss are checked.
type JWTConfig struct {
	// SecretFiles each hold one HS256 shared secret (at least 32 bytes;
	// surrounding white space is trimmed).
	SecretFiles []string
	// KeyFiles each hold PEM public keys: RSA (RS256) or Ed25519
	// (EdDSA); "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" blocks.
	KeyFiles []string
	// JWKSFile is a JSON Web Key Set: RSA, OKP (Ed25519) and oct keys.
	// A token's kid header picks its key.
	JWKSFile string
	// Audience, when set, must be in the token's aud.
	Audience string
	// Issuer, when set, must be the token's iss.
	Issuer string
	// UserClaim names the user; default "sub".
	UserClaim string
	// TenantClaim names the tenant; default "tenant". Tokens without it
	// belong to DefaultTenant.
	TenantClaim string
	// RolesClaim holds the roles, an array of strings or one string of
	// space-separated roles; default "roles". Tokens without it hold
	// RoleUser.
	RolesClaim string
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway time.Duration
}

// Configured reports whether any JWT key source is set.
func (c JWTConfig) Configured() bool {
	return len(c.SecretFiles) > 0 || len(c.KeyFiles) > 0 || c.JWKSFile != ""
}

func (c Config) withDefaults() Config {
	c.QueryParam = cmp.Or(c.QueryParam, "access_token")
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.JWT.UserClaim = cmp.Or(c.JWT.UserClaim, "sub")
	c.JWT.TenantClaim = cmp.Or(c.JWT.TenantClaim, "tenant")
	c.JWT.RolesClaim = cmp.Or(c.JWT.RolesClaim, "roles")
	return c
}
