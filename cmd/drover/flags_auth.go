package main

import "github.com/spf13/pflag"

// authFlags are the flags of app.AuthConfig.
func authFlags(fs *pflag.FlagSet) {
	fs.StringSlice("auth-jwt-secret", nil, "file holding an HS256 secret JWTs are signed with (repeatable)")
	fs.StringSlice("auth-jwt-key", nil, "PEM file of RSA or Ed25519 public keys JWTs are signed with (repeatable)")
	fs.String("auth-jwks", "", "JSON Web Key Set file of the keys JWTs are signed with")
	fs.String("auth-jwt-audience", "", "audience JWTs must name (aud)")
	fs.String("auth-jwt-issuer", "", "issuer JWTs must name (iss)")
	fs.String("auth-jwt-user-claim", "sub", "JWT claim naming the user")
	fs.String("auth-jwt-tenant-claim", "tenant", "JWT claim naming the tenant")
	fs.String("auth-jwt-roles-claim", "roles", "JWT claim holding the roles")
	fs.String("auth-keys-file", "", "file the API keys are stored in, hashed (default keys.json in the data directory; with --redis, Redis)")
	fs.Bool("auth-allow-anonymous", false, "admit callers without a credential from anywhere while no JWT key or API key is configured (default: from this machine only)")
	fs.StringSlice("allowed-origins", nil, "browser origins besides the server's own that may open sessions and send requests (scheme://host[:port], repeatable; * for any)")
	fs.String("metrics-token", "", "bearer token /metrics asks for; empty leaves /metrics open (prefer DROVER_METRICS_TOKEN)")
}
