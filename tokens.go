package drover

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/signedurl"
	"github.com/drover-dev/drover/storage"
)

// URLSecretFile is the file in the data directory that keeps the secret of
// drover's own token URLs when Tokens.URLSecret is empty.
const URLSecretFile = "url-secret"

// Tokens configure the conversion API's upload and download tokens
// (uploadToken, downloadToken). With storage that presigns (S3) they are
// its presigned URLs; otherwise drover signs URLs of its own, which these
// settings shape.
type Tokens struct {
	// URLSecret signs drover's own URLs. Empty: a secret generated once
	// and kept in the data directory (URLSecretFile), so that tokens
	// outlive a restart and managers sharing the directory agree.
	URLSecret string
	// PublicURL is the base of drover's own URLs as clients reach drover;
	// empty takes the request's host. See api.Tokens.
	PublicURL string
	// TrustForwarded takes the base from X-Forwarded-Proto and
	// X-Forwarded-Host: only behind a proxy that sets them.
	TrustForwarded bool
	// TTL is how long a token works; 0 for api.DefaultTokenTTL.
	TTL time.Duration
}

// api builds the API's token settings for st; dataDir keeps the secret
// when none is configured and st cannot presign.
func (t Tokens) api(st storage.Storage, dataDir string) (api.Tokens, error) {
	if err := api.ValidatePublicURL(t.PublicURL); err != nil {
		return api.Tokens{}, fmt.Errorf("drover: tokens: %w", err)
	}
	if t.TTL < 0 {
		return api.Tokens{}, fmt.Errorf("drover: tokens: negative TTL %s", t.TTL)
	}
	out := api.Tokens{PublicURL: t.PublicURL, TrustForwarded: t.TrustForwarded, TTL: t.TTL}
	if _, ok := st.(storage.Presigner); ok {
		return out, nil
	}
	secret := []byte(t.URLSecret)
	if t.URLSecret == "" {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return api.Tokens{}, fmt.Errorf("drover: data directory: %w", err)
		}
		var err error
		if secret, err = signedurl.LoadOrCreateSecret(filepath.Join(dataDir, URLSecretFile)); err != nil {
			return api.Tokens{}, fmt.Errorf("drover: tokens: %w", err)
		}
	}
	s, err := signedurl.New(secret)
	if err != nil {
		return api.Tokens{}, fmt.Errorf("drover: tokens: url secret: %w", err)
	}
	out.Signer = s
	return out, nil
}
