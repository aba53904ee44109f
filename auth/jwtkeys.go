package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// The algorithms accepted, each bound to one type of key: a token's alg
// header never makes a key of another type serve (no algorithm
// confusion: an RSA public key is never an HS256 secret).
const (
	algHS256 = "HS256" // []byte secret
	algRS256 = "RS256" // *rsa.PublicKey
	algEdDSA = "EdDSA" // ed25519.PublicKey
)

const (
	minSecretLen = 32   // bytes of an HS256 secret: the size of the hash (RFC 7518 3.2)
	minRSABits   = 2048 // smaller RSA keys are refused
	maxKeyFile   = 1 << 20
)

// verifyKey is one key a token may be signed with.
type verifyKey struct {
	kid string // from a JWKS; "" for key and secret files
	alg string
	key any
}

// jwtKeys are the keys loaded from a JWTConfig's files.
type jwtKeys struct {
	keys []verifyKey
}

// errAlgorithm: the token's alg is not one this package accepts, or no
// key of that algorithm is configured.
var errAlgorithm = errors.New("no key for the token's algorithm")

// keyfunc picks the keys a token may be verified with: those of its
// algorithm and, when it names a kid that a key has, only that key.
func (k *jwtKeys) keyfunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	var all, byKid []jwt.VerificationKey
	for _, vk := range k.keys {
		if vk.alg != alg {
			continue
		}
		all = append(all, vk.key)
		if kid != "" && vk.kid == kid {
			byKid = append(byKid, vk.key)
		}
	}
	switch {
	case len(byKid) > 0:
		return jwt.VerificationKeySet{Keys: byKid}, nil
	case len(all) > 0:
		return jwt.VerificationKeySet{Keys: all}, nil
	}
	return nil, errAlgorithm
}

// loadJWTKeys reads the files c names. Errors name the file, never what
// is in it.
func loadJWTKeys(c JWTConfig) (*jwtKeys, error) {
	k := &jwtKeys{}
	for _, f := range c.SecretFiles {
		b, err := readKeyFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth: jwt secret file: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) < minSecretLen {
			return nil, fmt.Errorf("auth: jwt secret file %s: the secret is shorter than %d bytes", f, minSecretLen)
		}
		k.keys = append(k.keys, verifyKey{alg: algHS256, key: b})
	}
	for _, f := range c.KeyFiles {
		b, err := readKeyFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth: jwt key file: %w", err)
		}
		keys, err := parsePEMKeys(b)
		if err != nil {
			return nil, fmt.Errorf("auth: jwt key file %s: %w", f, err)
		}
		k.keys = append(k.keys, keys...)
	}
	if c.JWKSFile != "" {
		b, err := readKeyFile(c.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: jwks file: %w", err)
		}
		keys, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("auth: jwks file %s: %w", c.JWKSFile, err)
		}
		k.keys = append(k.keys, keys...)
	}
	return k, nil
}

func readKeyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxKeyFile+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if buf.Len() > maxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxKeyFile)
	}
	return buf.Bytes(), nil
}

// parsePEMKeys reads the public keys of PEM blocks. Private keys are
// refused: a server that verifies tokens has no business holding the
// key that signs them.
func parsePEMKeys(b []byte) ([]verifyKey, error) {
	var keys []verifyKey
	for i := 1; ; i++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, fmt.Errorf("PEM block %d is a private key; give the public key only", i)
			}
			return nil, fmt.Errorf("PEM block %d is a %q, not a public key or certificate", i, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		vk, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i, err)
		}
		keys = append(keys, vk)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM block")
	}
	return keys, nil
}

func publicKey(pub any) (verifyKey, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return verifyKey{}, fmt.Errorf("the RSA key has %d bits; at least %d are needed", pub.N.BitLen(), minRSABits)
		}
		return verifyKey{alg: algRS256, key: pub}, nil
	case ed25519.PublicKey:
		return verifyKey{alg: algEdDSA, key: pub}, nil
	}
	return verifyKey{}, fmt.Errorf("a %T; RSA and Ed25519 keys are supported", pub)
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518, 8037) this package
// reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	K   string `json:"k"`
}

// parseJWKS reads the signature keys of a JWKS. Keys of other types or
// algorithms (EC, RS512, encryption keys) are skipped, as identity
// providers publish those too; a set with no usable key is an error.
func parseJWKS(b []byte) ([]verifyKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	var keys []verifyKey
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		vk, ok, err := j.verifyKey()
		if err != nil {
			name := fmt.Sprintf("key %d", i)
			if j.Kid != "" {
				name = fmt.Sprintf("key %d (kid %q)", i, j.Kid)
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if ok {
			keys = append(keys, vk)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable key (RSA for RS256, OKP Ed25519 for EdDSA, oct for HS256)")
	}
	return keys, nil
}

// verifyKey is j as a key, ok false for a kind of key not supported.
func (j jwk) verifyKey() (vk verifyKey, ok bool, err error) {
	want := map[string]string{"RSA": algRS256, "OKP": algEdDSA, "oct": algHS256}[j.Kty]
	if want == "" || j.Alg != "" && j.Alg != want || j.Kty == "OKP" && j.Crv != "Ed25519" {
		return verifyKey{}, false, nil
	}
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N, "n")
		if err != nil {
			return vk, false, err
		}
		e, err := b64(j.E, "e")
		if err != nil {
			return vk, false, err
		}
		eInt := new(big.Int).SetBytes(e)
		if !eInt.IsInt64() || eInt.Int64() < 3 || eInt.Int64() > 1<<31-1 {
			return vk, false, errors.New("the RSA exponent is out of range")
		}
		vk, err = publicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(eInt.Int64())})
		if err != nil {
			return vk, false, err
		}
	case "OKP":
		x, err := b64(j.X, "x")
		if err != nil {
			return vk, false, err
		}
		if len(x) != ed25519.PublicKeySize {
			return vk, false, fmt.Errorf("the Ed25519 key has %d bytes, not %d", len(x), ed25519.PublicKeySize)
		}
		vk = verifyKey{alg: algEdDSA, key: ed25519.PublicKey(x)}
	case "oct":
		k, err := b64(j.K, "k")
		if err != nil {
			return vk, false, err
		}
		if len(k) < minSecretLen {
			return vk, false, fmt.Errorf("the secret is shorter than %d bytes", minSecretLen)
		}
		vk = verifyKey{alg: algHS256, key: k}
	}
	vk.kid = j.Kid
	return vk, true, nil
}

// b64 decodes a base64url member, with or without padding.
func b64(s, member string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%q is missing", member)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url", member)
	}
	return b, nil
}
