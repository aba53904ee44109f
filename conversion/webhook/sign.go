package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of every attempt.
const (
	HeaderDelivery  = "Drover-Delivery"
	HeaderTimestamp = "Drover-Timestamp"
	HeaderSignature = "Drover-Signature"
)

// DefaultTolerance is how far a timestamp may be from the receiver's clock
// when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// signatureScheme prefixes a signature in the header; a new scheme would
// get a new prefix, sent beside this one while receivers move.
const signatureScheme = "v1"

// Verify's errors. None holds the secret, the signature or the body.
var (
	ErrNoSecret          = errors.New("webhook: no secret to verify with")
	ErrNoSignature       = errors.New("webhook: no v1 signature")
	ErrBadTimestamp      = errors.New("webhook: missing or malformed timestamp")
	ErrTimestampTooOld   = errors.New("webhook: timestamp outside the tolerance")
	ErrSignatureMismatch = errors.New("webhook: signature does not match")
)

// Sign returns the Drover-Signature value for body sent at t, signed with
// secret: "v1=" and the hex HMAC-SHA256 of the unix seconds of t, ".",
// and body. The Drover-Timestamp header must carry the same seconds.
func Sign(secret string, t time.Time, body []byte) string {
	return signatureScheme + "=" + hex.EncodeToString(mac([]byte(secret), strconv.FormatInt(t.Unix(), 10), body))
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a webhook as its receiver got it: h holds its
// Drover-Timestamp and Drover-Signature headers, body is the raw request
// body, before any decoding. It succeeds when one v1 signature of the
// header is the body's with secret and the timestamp is within tolerance
// of the receiver's clock, either way (≤ 0: DefaultTolerance). Receivers
// also drop a Drover-Delivery id they already processed.
func Verify(secret string, h http.Header, body []byte, tolerance time.Duration) error {
	return verifyAt(secret, h, body, tolerance, time.Now())
}

func verifyAt(secret string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if secret == "" {
		return ErrNoSecret
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(ts) > 12 || sec <= 0 {
		return ErrBadTimestamp
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrTimestampTooOld
	}
	want := mac([]byte(secret), ts, body)
	found := false
	for _, v := range h.Values(HeaderSignature) {
		for entry := range strings.SplitSeq(v, ",") {
			scheme, sig, ok := strings.Cut(strings.TrimSpace(entry), "=")
			if !ok || scheme != signatureScheme {
				continue
			}
			found = true
			got, err := hex.DecodeString(sig)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	if !found {
		return ErrNoSignature
	}
	return ErrSignatureMismatch
}
