// Package bearer is the one check of "Authorization: Bearer <token>" that
// the manager (farm and admin tokens) and the farm (the farm token) share.
// Tokens are compared in constant time, after hashing, so neither their
// contents nor their lengths leak through timing. Nothing here logs.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Header is a request header carrying token.
func Header(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// FromRequest is the bearer token of r, if it has one. With query set, a
// "token" query parameter is taken when the header is absent (for clients,
// such as a browser's WebSocket, that cannot set headers).
func FromRequest(r *http.Request, query bool) (string, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && got != "" {
		return got, true
	}
	if query {
		if got = r.URL.Query().Get("token"); got != "" {
			return got, true
		}
	}
	return "", false
}

// Sum is what a Checker keeps of a token: its SHA-256.
type Sum [sha256.Size]byte

// Checker admits requests carrying one of a fixed set of tokens. The zero
// value admits nothing; empty tokens are never admitted.
type Checker struct {
	sums []Sum
}

// NewChecker admits the non-empty tokens given.
func NewChecker(tokens ...string) Checker {
	var c Checker
	for _, t := range tokens {
		if t != "" {
			c.sums = append(c.sums, sha256.Sum256([]byte(t)))
		}
	}
	return c
}

// Empty reports whether the checker admits nothing.
func (c Checker) Empty() bool { return len(c.sums) == 0 }

// Valid reports whether got is one of the checker's tokens.
func (c Checker) Valid(got string) bool {
	if got == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	ok := 0
	for i := range c.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], c.sums[i][:])
	}
	return ok == 1
}

// Request reports whether r carries one of the checker's tokens (see
// FromRequest for query).
func (c Checker) Request(r *http.Request, query bool) bool {
	got, ok := FromRequest(r, query)
	return ok && c.Valid(got)
}
