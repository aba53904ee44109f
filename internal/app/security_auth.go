package app

// AuthConfig: authentication, origins, the metrics token. Without any JWT
// key or API key file, callers on this machine are users (and admins
// while no admin token is set), and nobody else is admitted unless
// auth_allow_anonymous says so.
type AuthConfig struct {
	// JWTSecrets are files each holding an HS256 secret.
	JWTSecrets []string `koanf:"auth_jwt_secret"`
	// JWTKeys are PEM files of RSA (RS256) or Ed25519 (EdDSA) public keys.
	JWTKeys []string `koanf:"auth_jwt_key"`
	// JWKS is a JSON Web Key Set file; a token's kid picks its key.
	JWKS string `koanf:"auth_jwks"`
	// JWTAudience and JWTIssuer, when set, must match aud and iss.
	JWTAudience string `koanf:"auth_jwt_audience"`
	JWTIssuer   string `koanf:"auth_jwt_issuer"`
	// The claims naming the user (default sub), the tenant (tenant) and
	// the roles (roles).
	JWTUserClaim   string `koanf:"auth_jwt_user_claim"`
	JWTTenantClaim string `koanf:"auth_jwt_tenant_claim"`
	JWTRolesClaim  string `koanf:"auth_jwt_roles_claim"`
	// KeysFile stores the API keys (hashed); default keys.json in the data
	// directory. With Redis the keys live there instead, shared by the
	// managers.
	KeysFile string `koanf:"auth_keys_file"`
	// AllowAnonymous admits callers without a credential from anywhere
	// while no JWT key and no API key store is configured.
	AllowAnonymous bool `koanf:"auth_allow_anonymous"`
	// AllowedOrigins are the browser origins besides the server's own
	// that may open WebSockets and send requests; "*" for any.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// MetricsToken puts /metrics behind this bearer token.
	MetricsToken string `koanf:"metrics_token"`
}
