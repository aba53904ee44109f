package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// APIKey is what a store knows of an API key: never its secret.
type APIKey struct {
	// ID is public: it is part of the secret, appears in List and in
	// audit lines, and names the key to Revoke.
	ID string `json:"id"`
	// Name says whose key it is; the principal's user is "key:"+Name.
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant"`
	Roles    []string  `json:"roles"`
	ReadOnly bool      `json:"read_only"`
	Created  time.Time `json:"created"`
	Revoked  bool      `json:"revoked"`
}

// KeyStore keeps API keys. Only a hash of each secret is stored; the
// secret is shown once, by Create.
type KeyStore interface {
	// Create makes a key from k's Name, Tenant, Roles and ReadOnly (the
	// rest is set here) and returns its secret and the key as stored.
	Create(ctx context.Context, k APIKey) (secret string, key APIKey, err error)
	// List is every key, revoked ones included, oldest first.
	List(ctx context.Context) ([]APIKey, error)
	// Revoke makes a key unusable for good; revoking a revoked key is
	// no error, an unknown id is ErrUnknownKey.
	Revoke(ctx context.Context, id string) error
	// Lookup is the key whose secret is secret; ErrUnknownKey when there
	// is none or it is revoked.
	Lookup(ctx context.Context, secret string) (APIKey, error)
}

// ErrUnknownKey is the error for a secret or id no key has, or a revoked
// key.
var ErrUnknownKey = errors.New("unknown or revoked API key")

// ErrInvalidKey is the error for a key to Create with a bad name, tenant
// or role.
var ErrInvalidKey = errors.New("invalid API key")

// secretPrefix starts every secret, so that secret scanners and people
// recognise one, and the authenticator tells one from a JWT.
const secretPrefix = "drv_"

const (
	idBytes     = 8  // of randomness in an id: 16 hex digits
	secretBytes = 32 // of randomness in a secret
	maxName     = 64
)

// newSecret returns a fresh id and the secret "drv_<id>_<random>".
func newSecret() (id, secret string) {
	var b [idBytes + secretBytes]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	id = hex.EncodeToString(b[:idBytes])
	return id, secretPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(b[idBytes:])
}

// secretID is the id in a secret, ok false when secret does not have the
// form of one.
func secretID(secret string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return "", false
	}
	id, random, ok := strings.Cut(rest, "_")
	if !ok || !validID(id) || random == "" {
		return "", false
	}
	return id, true
}

func validID(id string) bool {
	if len(id) != 2*idBytes {
		return false
	}
	for i := range len(id) {
		if !strings.ContainsRune("0123456789abcdef", rune(id[i])) {
			return false
		}
	}
	return true
}

// Sums are hex SHA-256. A fast hash is right for secrets of 256 random
// bits: no dictionary reaches them, and a lookup must stay cheap.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// sameHash compares two hex sums in constant time.
func sameHash(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// prepareKey validates k for Create, fills in the defaults and gives it an
// id. It returns the secret and the hash to store.
func prepareKey(k APIKey) (APIKey, string, string, error) {
	if err := checkName("name", k.Name); err != nil {
		return APIKey{}, "", "", err
	}
	if k.Tenant == "" {
		k.Tenant = DefaultTenant
	}
	if err := checkName("tenant", k.Tenant); err != nil {
		return APIKey{}, "", "", err
	}
	if len(k.Roles) == 0 {
		k.Roles = []string{RoleUser}
	}
	k.Roles = slices.Clone(k.Roles)
	for _, r := range k.Roles {
		if err := checkName("role", r); err != nil {
			return APIKey{}, "", "", err
		}
		if strings.ContainsFunc(r, unicode.IsSpace) {
			return APIKey{}, "", "", fmt.Errorf("%w: a role has no spaces", ErrInvalidKey)
		}
	}
	id, secret := newSecret()
	k.ID = id
	k.Created = time.Now().UTC().Truncate(time.Millisecond)
	k.Revoked = false
	return k, secret, hashSecret(secret), nil
}

// checkName: 1 to 64 printable characters.
func checkName(what, s string) error {
	if !printable(s, maxName) {
		return fmt.Errorf("%w: a %s has 1 to %d printable characters", ErrInvalidKey, what, maxName)
	}
	return nil
}

// printable reports whether s is valid UTF-8 of 1 to limit printable
// characters: a name that is safe to show and to log.
func printable(s string, limit int) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > limit {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
