// Package signedurl makes and checks drover's own signed URLs: the upload
// and download tokens of conversion items on storage that cannot presign
// (the data directory). A signed URL allows one method on one path until
// it expires, and, for uploads, at most a number of bytes. Whoever holds
// it needs no other credential, so it works with plain curl.
//
// The signature is HMAC-SHA256, keyed with a server secret, over the
// method, the path, the expiry and the size limit; the query carries the
// expiry, the limit and the signature. Changing any of them, or using the
// URL with another method or on another path, breaks the signature; an
// expired URL is refused although its signature holds.
//
// The package owns the URL's query and its signature, and the secret's
// file (LoadOrCreateSecret). It does not own what paths mean, base URLs or
// HTTP handlers: conversion/api serves the URLs.
package signedurl

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Verify's errors. None holds the secret or the signature.
var (
	// ErrMalformed: the query is not one Sign makes: a parameter missing,
	// repeated, unknown or not in its canonical form.
	ErrMalformed = errors.New("signedurl: malformed signed URL")
	// ErrSignature: the signature is not the one of this method, path,
	// expiry and limit: the URL was altered, or is used with another
	// method or on another path.
	ErrSignature = errors.New("signedurl: signature does not match")
	// ErrExpired: the signature holds, but the URL's time has passed.
	ErrExpired = errors.New("signedurl: expired")
)

// The query parameters of a signed URL.
const (
	ParamExpires   = "expires"
	ParamLimit     = "limit"
	ParamSignature = "signature"
)

// MinSecretLen is the shortest secret New takes, in bytes.
const MinSecretLen = 16

// scheme names the signed message's layout; another layout gets another
// name, so that no signature of one verifies as the other.
const scheme = "drover-signed-url-v1"

// Grant is what a signed URL allows.
type Grant struct {
	// Method is the one HTTP method allowed: GET or PUT.
	Method string
	// Path is the URL's path, unescaped, as the server sees it
	// (http.Request.URL.Path).
	Path string
	// Expires is when the URL stops working, to the second.
	Expires time.Time
	// Limit is the most bytes a PUT may carry; 0 for no limit of the
	// URL's own (the server's limits still hold).
	Limit int64
}

// Signer signs and verifies URLs with one secret. It is safe for
// concurrent use.
type Signer struct {
	key []byte
	now func() time.Time
}

// New returns a Signer keyed with secret, of at least MinSecretLen bytes.
func New(secret []byte) (*Signer, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("signedurl: the secret must have at least %d bytes", MinSecretLen)
	}
	return &Signer{key: append([]byte(nil), secret...), now: time.Now}, nil
}

// Query returns the encoded query that makes g's path a signed URL:
// "expires=…&limit=…&signature=…". The expiry is truncated to the second.
func (s *Signer) Query(g Grant) string {
	exp := g.Expires.Unix()
	v := url.Values{
		ParamExpires:   {strconv.FormatInt(exp, 10)},
		ParamLimit:     {strconv.FormatInt(g.Limit, 10)},
		ParamSignature: {base64.RawURLEncoding.EncodeToString(s.mac(g.Method, g.Path, exp, g.Limit))},
	}
	return v.Encode()
}

// Verify checks a request for a signed URL: its method, its unescaped
// path and its raw query. It returns the URL's grant, or ErrMalformed,
// ErrSignature or ErrExpired. The signature is compared in constant time
// and checked before the expiry, so that an altered expiry reads as
// altered.
func (s *Signer) Verify(method, path, rawQuery string) (Grant, error) {
	exp, limit, sig, err := parse(rawQuery)
	if err != nil {
		return Grant{}, err
	}
	if !hmac.Equal(sig, s.mac(method, path, exp, limit)) {
		return Grant{}, ErrSignature
	}
	g := Grant{Method: method, Path: path, Expires: time.Unix(exp, 0), Limit: limit}
	if !s.now().Before(g.Expires) {
		return g, ErrExpired
	}
	return g, nil
}

// parse reads the query Query makes, and nothing else: each parameter
// once, numbers in their canonical decimal form, the signature in
// unpadded base64url of its exact length.
func parse(rawQuery string) (exp, limit int64, sig []byte, err error) {
	if len(rawQuery) > 512 {
		return 0, 0, nil, ErrMalformed
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil || len(q) != 3 {
		return 0, 0, nil, ErrMalformed
	}
	one := func(k string) (string, bool) {
		v := q[k]
		return strings.Join(v, ""), len(v) == 1
	}
	es, ok1 := one(ParamExpires)
	ls, ok2 := one(ParamLimit)
	ss, ok3 := one(ParamSignature)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, nil, ErrMalformed
	}
	if exp, ok1 = canonical(es); !ok1 || exp <= 0 {
		return 0, 0, nil, ErrMalformed
	}
	if limit, ok2 = canonical(ls); !ok2 || limit < 0 {
		return 0, 0, nil, ErrMalformed
	}
	sig, err = base64.RawURLEncoding.Strict().DecodeString(ss)
	if err != nil || len(sig) != sha256.Size {
		return 0, 0, nil, ErrMalformed
	}
	return exp, limit, sig, nil
}

// canonical parses a decimal that FormatInt would write the same way, so
// that no two queries carry one value ("7" and "007").
func canonical(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && strconv.FormatInt(n, 10) == s
}

// mac is the HMAC of the grant's fields, each prefixed with its length so
// that no field's bytes can pass for another's.
func (s *Signer) mac(method, path string, exp, limit int64) []byte {
	m := hmac.New(sha256.New, s.key)
	for _, f := range []string{scheme, method, path, strconv.FormatInt(exp, 10), strconv.FormatInt(limit, 10)} {
		fmt.Fprintf(m, "%d:%s\n", len(f), f)
	}
	return m.Sum(nil)
}
