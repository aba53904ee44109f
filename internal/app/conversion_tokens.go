package app

import (
	"time"

	"github.com/drover-dev/drover"
)

// TokenConfig configures the conversion API's upload and download tokens;
// see drover.Tokens.
type TokenConfig struct {
	// URLSecret signs drover's own token URLs (prefer DROVER_URL_SECRET);
	// empty: one generated and kept in the data directory.
	URLSecret string `koanf:"url_secret"`
	// PublicURL is the base of those URLs as clients reach drover; empty
	// takes the request's host.
	PublicURL string `koanf:"public_url"`
	// TrustForwarded takes the base from X-Forwarded-Proto and
	// X-Forwarded-Host.
	TrustForwarded bool `koanf:"trust_forwarded"`
	// TokenTTL is how long a token works.
	TokenTTL time.Duration `koanf:"token_ttl"`
}

func (tc TokenConfig) tokens() drover.Tokens {
	return drover.Tokens{URLSecret: tc.URLSecret, PublicURL: tc.PublicURL, TrustForwarded: tc.TrustForwarded,
		TTL: tc.TokenTTL}
}
