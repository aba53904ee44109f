package webhook_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/webhook"
)

// signed is a header as a Sender sends it, at t.
func signed(secret string, t time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(t.Unix(), 10))
	h.Set(webhook.HeaderSignature, webhook.Sign(secret, t, body))
	return h
}

func TestVerify(t *testing.T) {
	const secret = "whsec-test-0123456789"
	body := []byte(`{"id":"i1","name":"part.step","conversionState":"SUCCESS","files":["part.glb"]}`)
	now := time.Now()

	tests := []struct {
		name   string
		header func() http.Header
		body   []byte
		secret string
		want   error
	}{
		{name: "valid", header: func() http.Header { return signed(secret, now, body) }},
		{name: "valid a minute old", header: func() http.Header { return signed(secret, now.Add(-time.Minute), body) }},
		{name: "body altered", body: []byte(`{"id":"i1","name":"part.step","conversionState":"ERROR","files":[]}`),
			header: func() http.Header { return signed(secret, now, body) }, want: webhook.ErrSignatureMismatch},
		{name: "one byte appended", body: append(append([]byte{}, body...), ' '),
			header: func() http.Header { return signed(secret, now, body) }, want: webhook.ErrSignatureMismatch},
		{name: "timestamp altered", header: func() http.Header {
			h := signed(secret, now, body)
			h.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
			return h
		}, want: webhook.ErrSignatureMismatch},
		{name: "too old", header: func() http.Header { return signed(secret, now.Add(-10*time.Minute), body) },
			want: webhook.ErrTimestampTooOld},
		{name: "too far ahead", header: func() http.Header { return signed(secret, now.Add(10*time.Minute), body) },
			want: webhook.ErrTimestampTooOld},
		{name: "other secret", secret: "another-secret", header: func() http.Header { return signed(secret, now, body) },
			want: webhook.ErrSignatureMismatch},
		{name: "empty secret", secret: "-", header: func() http.Header { return signed("", now, body) },
			want: webhook.ErrNoSecret},
		{name: "no signature", header: func() http.Header {
			h := signed(secret, now, body)
			h.Del(webhook.HeaderSignature)
			return h
		}, want: webhook.ErrNoSignature},
		{name: "unknown scheme only", header: func() http.Header {
			h := signed(secret, now, body)
			h.Set(webhook.HeaderSignature, "v0=abcd")
			return h
		}, want: webhook.ErrNoSignature},
		{name: "not hex", header: func() http.Header {
			h := signed(secret, now, body)
			h.Set(webhook.HeaderSignature, "v1=zz")
			return h
		}, want: webhook.ErrSignatureMismatch},
		{name: "no timestamp", header: func() http.Header {
			h := signed(secret, now, body)
			h.Del(webhook.HeaderTimestamp)
			return h
		}, want: webhook.ErrBadTimestamp},
		{name: "timestamp not a number", header: func() http.Header {
			h := signed(secret, now, body)
			h.Set(webhook.HeaderTimestamp, "1e9")
			return h
		}, want: webhook.ErrBadTimestamp},
		{name: "rotation: a later entry matches", header: func() http.Header {
			h := signed(secret, now, body)
			h.Set(webhook.HeaderSignature, webhook.Sign("new-secret", now, body)+", "+webhook.Sign(secret, now, body)+",v2=ff")
			return h
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, s := tt.body, tt.secret
			if b == nil {
				b = body
			}
			switch s {
			case "":
				s = secret
			case "-":
				s = ""
			}
			err := webhook.Verify(s, tt.header(), b, 0)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			require.NotContains(t, err.Error(), secret)
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	body := []byte(`{}`)
	h := signed("k", time.Now().Add(-90*time.Second), body)
	require.ErrorIs(t, webhook.Verify("k", h, body, time.Minute), webhook.ErrTimestampTooOld)
	require.NoError(t, webhook.Verify("k", h, body, 2*time.Minute))
}

func TestSecretRedacted(t *testing.T) {
	s := webhook.Secret("hunter2-hunter2")
	o := webhook.Options{Secret: s, PreviousSecrets: []webhook.Secret{"old-hunter2"}}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmtSprintf(f, o)
		require.NotContains(t, out, "hunter2", f)
	}
}
