package auth_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
)

func TestScrubQuery(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"pool=cad", "pool=cad"},
		{"access_token=eyJ.a.b&pool=cad", "access_token=REDACTED&pool=cad"},
		{"pool=cad&token=t1&accessKey=k&key=x&sig=s&signature=s2&api_key=a&apikey=b", "pool=cad&token=REDACTED&accessKey=REDACTED&key=REDACTED&sig=REDACTED&signature=REDACTED&api_key=REDACTED&apikey=REDACTED"},
		{"ACCESS_TOKEN=x&Token=y", "ACCESS_TOKEN=REDACTED&Token=REDACTED"},
		{"to%6Ben=hidden", "to%6Ben=REDACTED"},
		{"X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc&X-Amz-Date=1", "X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Date=1"},
		{"token&token=&token=a=b", "token&token=REDACTED&token=REDACTED"},
		{"a=%zz&token=%zz", "a=%zz&token=REDACTED"},
		{"tokens=1&mytoken=2", "tokens=1&mytoken=2"},
		{"&&token=x&", "&&token=REDACTED&"},
	} {
		require.Equal(t, tt.want, auth.ScrubQuery(tt.in), tt.in)
	}
	require.Equal(t, "jwt=REDACTED&a=1", auth.ScrubQuery("jwt=x&a=1", "jwt"))
}

func TestScrub(t *testing.T) {
	u, err := url.Parse("wss://user:pass@drover.example/ws?pool=cad&access_token=eyJhbGciOi.x.y")
	require.NoError(t, err)
	got := auth.Scrub(u)
	require.Equal(t, "wss://user:xxxxx@drover.example/ws?pool=cad&access_token=REDACTED", got)
	require.NotContains(t, got, "eyJ")
	require.Contains(t, u.RawQuery, "eyJ", "u is not changed")
	require.Equal(t, "", auth.Scrub(nil))
}

// FuzzScrubQuery: the output has as many pairs as the input; credential
// pairs have their value replaced, others are kept as they were.
func FuzzScrubQuery(f *testing.F) {
	for _, s := range []string{"", "access_token=x", "a=1&token=2", "to%6Ben=x", "%zz=1&key", "=&=", "accessKey=k;x=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := auth.ScrubQuery(in)
		ip, op := strings.Split(in, "&"), strings.Split(out, "&")
		if in == "" {
			op = []string{""}
		}
		if len(ip) != len(op) {
			t.Fatalf("%q scrubbed to %q: %d pairs, not %d", in, out, len(op), len(ip))
		}
		vals, err := url.ParseQuery(in)
		outVals, _ := url.ParseQuery(out)
		for i := range ip {
			if op[i] == ip[i] {
				continue
			}
			name, _, ok := strings.Cut(ip[i], "=")
			if !ok || op[i] != name+"="+auth.Redacted {
				t.Fatalf("pair %q scrubbed to %q", ip[i], op[i])
			}
		}
		if err == nil {
			for _, name := range []string{"access_token", "token", "accessKey", "key"} {
				for _, v := range outVals[name] {
					if v != auth.Redacted && v != "" {
						t.Fatalf("%q scrubbed to %q keeps %s=%q (was %q)", in, out, name, v, vals[name])
					}
				}
			}
		}
	})
}
