package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// outcome is what an attempt means for its delivery.
type outcome int

const (
	outcomeRetry outcome = iota
	outcomeDelivered
	outcomeFailed
)

func (o outcome) String() string {
	switch o {
	case outcomeDelivered:
		return "delivered"
	case outcomeFailed:
		return "failed"
	}
	return "retry"
}

// result is one attempt's.
type result struct {
	at         time.Time // when it started
	dur        time.Duration
	status     int    // HTTP status; 0 without a response
	class      string // a Class constant, or ""
	retryAfter time.Duration
	outcome    outcome
}

// maxDrain is how much of a response body is read, so that its connection
// can be used again; the body itself means nothing.
const maxDrain = 64 << 10

const userAgent = "drover-webhook/1"

// attempt POSTs e once.
func (s *Sender) attempt(e *entry) (res result) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.AttemptTimeout)
	defer cancel()
	res.at = time.Now()
	defer func() { res.dur = time.Since(res.at) }()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.rec.URL, bytes.NewReader(e.body))
	if err != nil {
		res.class, res.outcome = ClassBadURL, outcomeFailed
		return res
	}
	ts := strconv.FormatInt(res.at.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderDelivery, e.rec.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, s.signature(ts, e.body))

	resp, err := s.client.Do(req)
	if err != nil {
		res.class = classify(ctx, s.ctx, err)
		if res.class == ClassNotAllowed || res.class == ClassBadURL {
			res.outcome = outcomeFailed
		}
		return res
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	res.status = resp.StatusCode
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		res.outcome = outcomeDelivered
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case code >= 300 && code < 400:
		res.class, res.outcome = ClassRedirect, outcomeFailed
	default:
		res.outcome = outcomeFailed
	}
	return res
}

// signature is the Drover-Signature value: a v1 entry per secret.
func (s *Sender) signature(ts string, body []byte) string {
	var b strings.Builder
	for i, secret := range s.secrets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(signatureScheme + "=")
		b.WriteString(hex.EncodeToString(mac(secret, ts, body)))
	}
	return b.String()
}

// classify names why an attempt got no response, in plain words: the
// error itself names addresses and the URL, and never leaves the package.
func classify(attempt, sender context.Context, err error) string {
	var (
		dnsErr  *net.DNSError
		netErr  net.Error
		verify  *tls.CertificateVerificationError
		header  tls.RecordHeaderError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		name    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	switch {
	case sender.Err() != nil:
		return ClassInterrupted
	case errors.Is(err, ErrNotAllowed):
		return ClassNotAllowed
	case errors.Is(err, ErrInvalidURL):
		return ClassBadURL
	case errors.Is(attempt.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return ClassTimeout
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return ClassHostNotFound
		}
		return ClassDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ClassReset
	case errors.As(err, &verify), errors.As(err, &header), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &name), errors.As(err, &invalid):
		return ClassTLS
	}
	return ClassNetwork
}

// backoff is the wait after attempt n (1 for the first) failed: min
// doubled n-1 times, at most max, and from half to all of that at random
// so that receivers back from an outage are not hit by every delivery at
// once.
func backoff(n int, minWait, maxWait time.Duration) time.Duration {
	d := minWait
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + rand.N(d-half+1)
}

// maxRetryAfter bounds a Retry-After; anything longer is beyond any retry
// period anyway.
const maxRetryAfter = 366 * 24 * time.Hour

// parseRetryAfter reads a Retry-After header, delay-seconds or an HTTP
// date; 0 when absent, malformed or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
