package webhook

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzVerifySignature gives a receiver's Verify any timestamp and
// signature headers and body. It accepts only a header that carries the
// body's v1 signature at a timestamp within the tolerance; what it refuses
// is one of its sentinels, which name neither the secret nor the
// signature. A webhook signed with Sign passes, and fails once a byte of
// its body changed.
func FuzzVerifySignature(f *testing.F) {
	const secret = "whsec-fuzz-4b1d"
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"it1","status":"SUCCESS"}`)
	good := Sign(secret, now, body)
	ts := strconv.FormatInt(now.Unix(), 10)
	f.Add(ts, good, body)
	f.Add(ts, "v0=abcd, "+good, body)
	f.Add(ts, "v1=00,v1="+strings.ToUpper(good[3:]), body)
	f.Add(ts, good, []byte(`{"id":"it1","status":"ERROR"}`))
	f.Add(strconv.FormatInt(now.Unix()-301, 10), good, body)
	f.Add("+"+ts, good, body)
	f.Add("0", "v1=", []byte(nil))
	f.Add("-1", "v1", []byte(nil))
	f.Add("9999999999999", "v1==", []byte("x"))
	f.Add(" "+ts, " v1 = "+good[3:], body)

	sentinels := []error{ErrBadTimestamp, ErrTimestampTooOld, ErrNoSignature, ErrSignatureMismatch}
	f.Fuzz(func(t *testing.T, timestamp, signature string, body []byte) {
		h := http.Header{}
		h.Set(HeaderTimestamp, timestamp)
		h.Set(HeaderSignature, signature)
		err := verifyAt(secret, h, body, 0, now)
		if err == nil {
			sec, perr := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
			if perr != nil || now.Sub(time.Unix(sec, 0)).Abs() > DefaultTolerance {
				t.Fatalf("accepted timestamp %q", timestamp)
			}
			want := hex.EncodeToString(mac([]byte(secret), h.Get(HeaderTimestamp), body))
			if !strings.Contains(strings.ToLower(h.Get(HeaderSignature)), "v1="+want) {
				t.Fatalf("accepted signature %q", signature)
			}
		} else {
			known := false
			for _, s := range sentinels {
				known = known || errors.Is(err, s)
			}
			if !known || strings.Contains(err.Error(), secret) ||
				(len(signature) > 8 && strings.Contains(err.Error(), signature)) {
				t.Fatalf("refused with %q", err)
			}
		}

		// The round trip, at the fuzzed body and a time near now.
		at := now
		if sec, perr := strconv.ParseInt(timestamp, 10, 32); perr == nil {
			at = now.Add(time.Duration(sec%300) * time.Second)
		}
		h = http.Header{}
		h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
		h.Set(HeaderSignature, Sign(secret, at, body))
		if err := verifyAt(secret, h, body, 0, now); err != nil {
			t.Fatalf("a signed webhook is refused: %v", err)
		}
		changed := append(bytes.Clone(body), 0)
		if len(body) > 0 {
			changed = bytes.Clone(body)
			changed[len(changed)/2] ^= 1
		}
		if err := verifyAt(secret, h, changed, 0, now); !errors.Is(err, ErrSignatureMismatch) {
			t.Fatalf("a changed body is not refused as a mismatch: %v", err)
		}
	})
}
