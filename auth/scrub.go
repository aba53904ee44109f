package auth

import (
	"net/url"
	"strings"
)

// Redacted replaces a credential in a scrubbed URL or query.
const Redacted = "REDACTED"

// scrubbed are the query parameters (compared without case) that carry
// credentials: this package's default QueryParam and the names clients
// commonly use for tokens, keys and signatures.
var scrubbed = []string{"access_token", "token", "accesskey", "key", "api_key", "apikey", "sig", "signature", "x-amz-signature", "x-amz-credential"}

// ScrubQuery is rawQuery with the values of credential parameters
// (access_token, token, accessKey, key, api_key, apikey, sig, signature,
// X-Amz-Signature, X-Amz-Credential, and the extra names given) replaced
// by "REDACTED", for log lines. Everything else is kept byte for byte,
// malformed pairs included.
func ScrubQuery(rawQuery string, extra ...string) string {
	if rawQuery == "" {
		return ""
	}
	pairs := strings.Split(rawQuery, "&")
	for i, pair := range pairs {
		name, _, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if isCredentialParam(name, extra) {
			pairs[i] = pair[:strings.IndexByte(pair, '=')+1] + Redacted
		}
	}
	return strings.Join(pairs, "&")
}

func isCredentialParam(name string, extra []string) bool {
	for _, s := range scrubbed {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	for _, s := range extra {
		if s != "" && strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// Scrub is u for a log line: credential query parameters replaced as
// ScrubQuery does, and a password in u's user info too. "" for nil.
func Scrub(u *url.URL, extra ...string) string {
	if u == nil {
		return ""
	}
	c := *u
	c.RawQuery = ScrubQuery(u.RawQuery, extra...)
	return c.Redacted()
}

// Scrub is Scrub with the Authenticator's query parameter among the
// scrubbed ones.
func (a *Authenticator) Scrub(u *url.URL) string { return Scrub(u, a.cfg.QueryParam) }

// ScrubQuery is ScrubQuery with the Authenticator's query parameter among
// the scrubbed ones.
func (a *Authenticator) ScrubQuery(rawQuery string) string {
	return ScrubQuery(rawQuery, a.cfg.QueryParam)
}
