package app

import (
	"cmp"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/internal/lib/redisx"
)

// defaultKeysFile is the API key file's name in the data directory.
const defaultKeysFile = "keys.json"

// authenticator builds the authenticator of a manager (`up` and
// `manager`): the admin token, the JWT keys, and an API key store when
// keys are asked for: auth_keys_file is set, JWTs are configured (users
// authenticate anyway), or the data directory holds a key file from an
// earlier run. With Redis the keys live there, shared by the managers.
// Without any of these, callers on this machine are users (protected
// mode), or anyone with auth_allow_anonymous.
func (c AuthConfig) authenticator(adminToken, dataDir, redisURL string, log *slog.Logger,
	cleanups *cleanup.Stack) (*auth.Authenticator, error) {
	cfg := auth.Config{AdminTokens: []string{adminToken}, AllowAnonymous: c.AllowAnonymous,
		Logger: log.With("component", "auth"),
		JWT: auth.JWTConfig{SecretFiles: c.JWTSecrets, KeyFiles: c.JWTKeys, JWKSFile: c.JWKS,
			Audience: c.JWTAudience, Issuer: c.JWTIssuer, UserClaim: c.JWTUserClaim,
			TenantClaim: c.JWTTenantClaim, RolesClaim: c.JWTRolesClaim}}
	if adminToken == "" {
		cfg.AdminTokens = nil
	}
	keysFile := cmp.Or(c.KeysFile, filepath.Join(cmp.Or(dataDir, drover.DefaultDataDir), defaultKeysFile))
	_, statErr := os.Stat(keysFile)
	wantKeys := c.KeysFile != "" || cfg.JWT.Configured() || statErr == nil
	switch {
	case !wantKeys:
	case redisURL != "":
		rc, err := redisx.New(redisx.Options{URL: redisURL, OpTimeout: 5 * time.Second, RESP2: true, Pkg: "auth keys"})
		if err != nil {
			return nil, err
		}
		cleanups.PushFunc("auth keys", rc.Close)
		cfg.Keys = auth.NewRedisKeyStore(rc.Client, "drover:")
	default:
		if err := os.MkdirAll(filepath.Dir(keysFile), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		cfg.KeysFile = keysFile
	}
	return auth.New(cfg)
}
