package queue

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	for _, tt := range []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{4, 0, 8 * time.Second},
		{5, 0, 10 * time.Second},
		{1000, 0, 10 * time.Second},
	} {
		require.Equal(t, tt.want, b.Delay(tt.n, tt.r), "attempt %d", tt.n)
	}
	b.Jitter = 0.5
	require.Equal(t, 2*time.Second, b.Delay(2, 0))
	require.Equal(t, time.Second, b.Delay(2, 1))
	require.Equal(t, 1500*time.Millisecond, b.Delay(2, 0.5))
}

func TestOptions(t *testing.T) {
	o, err := Options{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, Options{
		Lease: DefaultLease, MaxLease: DefaultMaxLease, MaxAttempts: DefaultMaxAttempts, Retention: DefaultRetention,
		Backoff: Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMax, Jitter: DefaultJitter},
	}, o)
	for _, bad := range []Options{
		{Lease: -1}, {MaxAttempts: -1}, {Lease: time.Hour, MaxLease: time.Minute}, {Backoff: Backoff{Jitter: 2}},
	} {
		_, err := bad.withDefaults()
		require.Error(t, err, "%+v", bad)
	}
	o, err = Options{Lease: time.Hour}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, time.Hour, o.MaxLease, "MaxLease covers the default lease")
	require.Equal(t, time.Hour, o.leaseFor(2*time.Hour))
	require.Equal(t, time.Minute, o.leaseFor(time.Minute))
}

// reply parses the fuzzers' notation for a Redis reply: tokens split by
// NUL; "[" opens an array, "]" closes one, "#n" is the integer n, anything
// else a string.
func reply(s string) any {
	stack := [][]any{{}}
	for _, tok := range strings.Split(s, "\x00") {
		top := len(stack) - 1
		switch {
		case tok == "[":
			stack = append(stack, []any{})
		case tok == "]" && top > 0:
			stack[top-1] = append(stack[top-1], stack[top])
			stack = stack[:top]
		case strings.HasPrefix(tok, "#"):
			n, err := strconv.ParseInt(tok[1:], 10, 64)
			if err != nil {
				stack[top] = append(stack[top], tok)
			} else {
				stack[top] = append(stack[top], n)
			}
		default:
			stack[top] = append(stack[top], tok)
		}
	}
	for len(stack) > 1 {
		top := len(stack) - 1
		stack[top-1] = append(stack[top-1], stack[top])
		stack = stack[:top]
	}
	if len(stack[0]) == 1 {
		return stack[0][0]
	}
	return stack[0]
}

func TestReply(t *testing.T) {
	require.Equal(t, []any{"", []any{[]any{"a", "i", "p", int64(1), "1-0", "5"}}},
		reply("[\x00\x00[\x00[\x00a\x00i\x00p\x00#1\x001-0\x005\x00]\x00]\x00]"))
}

// FuzzDecodeReply: whatever a script's reply holds (another version's
// record, a hand-edited one), the decoders return an error or values that
// make sense; they never panic.
func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{
		"[\x00\x00[\x00[\x00a\x00i\x00p\x00#1\x001-0\x001796533334792\x00]\x00]\x00]",
		"[\x001796533334792\x00[\x00]\x00]",
		"[\x00ok\x00done\x002\x00item\x00f\x00\x00\x00]",
		"[\x00dup\x00delayed\x00#1\x00item\x00f\x00boom\x001796533334792\x00]",
		"[\x000-0\x00[\x00[\x00a\x00i\x00f\x00#3\x00failed\x00]\x00]\x00]",
		"[\x00#-1\x00#9223372036854775807\x00x\x00]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := reply(s)
		if ls, _, err := decodeLeases(v, "c"); err == nil {
			for _, l := range ls {
				if l.Attempt < 1 || l.Consumer != "c" {
					t.Fatalf("lease %+v", l)
				}
			}
		}
		if a, ok := v.([]any); ok {
			if o, err := decodeOutcome("j", a); err == nil && (o.Attempt < 1 || !o.State.valid() || o.JobID != "j") {
				t.Fatalf("outcome %+v", o)
			}
		}
		if _, outs, err := decodeReclaim(v); err == nil {
			for _, o := range outs {
				if o.Attempt < 1 || !o.State.valid() {
					t.Fatalf("reclaimed %+v", o)
				}
			}
		}
	})
}

// FuzzDecodeInfo: a job's hash decodes to an error or to an Info whose
// state has the times it needs.
func FuzzDecodeInfo(f *testing.F) {
	for _, s := range []string{
		"state\x00leased\x00attempts\x002\x00created\x001796533334792\x00exp\x001796533334792\x00item\x00i",
		"state\x00delayed\x00attempts\x000\x00created\x001796533334792\x00due\x001.796533334792e12",
		"state\x00done\x00attempts\x001\x00created\x001\x00ended\x002\x00reason\x00x",
		"state\x00pending\x00attempts\x00-1\x00created\x00x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fields := strings.Split(s, "\x00")
		h := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			h[fields[i]] = fields[i+1]
		}
		in, err := decodeInfo("j", h)
		if err != nil {
			return
		}
		switch {
		case !in.State.valid(), in.Attempts < 0, in.Created.IsZero(),
			in.State == StateLeased && (in.Expires.IsZero() || in.Attempts == 0),
			in.State == StateDelayed && in.Due.IsZero(),
			in.State.Ended() && in.Ended.IsZero():
			t.Fatalf("info %+v from %q", in, h)
		}
	})
}
