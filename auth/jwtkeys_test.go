package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"testing"
)

// FuzzParseJWKS: a JWKS file is the operator's, but often fetched from an
// identity provider; whatever it holds, parsing neither panics nor yields
// a key bound to the wrong algorithm.
func FuzzParseJWKS(f *testing.F) {
	for _, s := range []string{
		`{"keys":[{"kty":"oct","kid":"h","k":"YW4gb2N0IGtleSBvZiBhdCBsZWFzdCB0aGlydHktdHdvIGJ5dGVz"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","e":"AAAAAAAAAAE"}]}`,
		`{"keys":[{"kty":"EC"},{"use":"enc"}]}`,
		`{"keys":null}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseJWKS(b)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no keys and no error")
		}
		for _, k := range keys {
			ok := false
			switch key := k.key.(type) {
			case []byte:
				ok = k.alg == algHS256 && len(key) >= minSecretLen
			case *rsa.PublicKey:
				ok = k.alg == algRS256 && key.N.BitLen() >= minRSABits
			case ed25519.PublicKey:
				ok = k.alg == algEdDSA && len(key) == ed25519.PublicKeySize
			}
			if !ok {
				t.Fatalf("key %T bound to %s", k.key, k.alg)
			}
		}
	})
}
