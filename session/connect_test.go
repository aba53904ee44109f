package session

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

var connectDefaults = ConnectOptions{Pool: "default", Wait: true}

func TestParseConnectOptions(t *testing.T) {
	for _, tc := range []struct {
		name, query string
		want        ConnectOptions
		err         string // part of the message; "" for none
	}{
		{"nothing", "", ConnectOptions{Pool: "default", Wait: true}, ""},
		{"pool and no wait", "pool=cad&wait=false", ConnectOptions{Pool: "cad"}, ""},
		{"wait words", "wait=0", ConnectOptions{Pool: "default"}, ""},
		{"wait true", "wait=TRUE", ConnectOptions{Pool: "default", Wait: true}, ""},
		{"empty values are the defaults", "pool=&wait=&resume=", ConnectOptions{Pool: "default", Wait: true}, ""},
		{"resume", "resume=q0bX-_9", ConnectOptions{Pool: "default", Wait: true, Resume: "q0bX-_9"}, ""},
		{"model", "model=parts%2Fgear+v2.step", ConnectOptions{Pool: "default", Wait: true, Model: "parts/gear v2.step"}, ""},
		{"labels", "labels=gpu=yes,%20zone%20=%20eu%20,,=x", ConnectOptions{Pool: "default", Wait: true,
			Labels: map[string]string{"gpu": "yes", "zone": "eu"}}, ""},
		{"label.k overrides labels", "label.zone=us&labels=zone=eu,gpu", ConnectOptions{Pool: "default", Wait: true,
			Labels: map[string]string{"zone": "us", "gpu": ""}}, ""},
		{"a value with =", "labels=k=a=b", ConnectOptions{Pool: "default", Wait: true, Labels: map[string]string{"k": "a=b"}}, ""},
		{"other parameters are the hooks'", "user=ann&token=x", ConnectOptions{Pool: "default", Wait: true}, ""},
		{"bad wait", "wait=maybe", ConnectOptions{}, `"wait" must be true or false`},
		{"pool twice", "pool=a&pool=b", ConnectOptions{}, `"pool" is given more than once`},
		{"wait twice", "wait=true&wait=true", ConnectOptions{}, `"wait" is given more than once`},
		{"label twice", "label.a=1&label.a=2", ConnectOptions{}, `"label.a" is given more than once`},
		{"long pool", "pool=" + strings.Repeat("p", MaxPoolName+1), ConnectOptions{}, `"pool" is longer than 128 bytes`},
		{"long token", "resume=" + strings.Repeat("t", MaxResumeToken+1), ConnectOptions{}, `"resume" is longer`},
		{"control character", "pool=a%0Ab", ConnectOptions{}, `"pool" holds control characters`},
		{"invalid UTF-8", "model=%FF", ConnectOptions{}, `"model" holds control characters or invalid UTF-8`},
		{"label key with a comma", "label.a,b=1", ConnectOptions{}, `has a key with ","`},
		{"label value with a comma", "label.a=1,2", ConnectOptions{}, `has a value with ","`},
		{"too many labels", "labels=" + manyLabels(MaxLabels+1), ConnectOptions{}, "has more than 32 labels"},
		{"long label key", "labels=" + strings.Repeat("k", MaxLabelKey+1) + "=v", ConnectOptions{}, "has a key longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			got, err := ParseConnectOptions(q, connectDefaults)
			if tc.err != "" {
				var se *Error
				require.ErrorAs(t, err, &se)
				require.Equal(t, CodeBadRequest, se.Code)
				require.Contains(t, se.Message, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	// Exactly MaxLabels is fine, and the defaults' labels are not shared.
	q, _ := url.ParseQuery("labels=" + manyLabels(MaxLabels))
	def := ConnectOptions{Labels: map[string]string{"l": "from-defaults"}}
	got, err := ParseConnectOptions(q, def)
	require.NoError(t, err)
	require.Len(t, got.Labels, MaxLabels)
	require.Equal(t, "v", got.Labels["l"])
	require.Equal(t, "from-defaults", def.Labels["l"])
}

func manyLabels(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("l" + strings.Repeat("x", i) + "=v")
	}
	return b.String()
}

// FuzzConnectOptions: any query is either refused with a bad_request for
// the client, or read into options within their limits that read back the
// same from their own query.
func FuzzConnectOptions(f *testing.F) {
	// More seeds, realistic queries of each door and known edges, are in
	// testdata/fuzz/FuzzConnectOptions.
	f.Add("pool=cad&wait=false", true)
	f.Add("labels=gpu=yes,zone=eu", false)
	f.Fuzz(func(t *testing.T, raw string, wait bool) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // net/http hands the manager what it could parse; so does this
		}
		def := ConnectOptions{Pool: "default", Wait: wait}
		o, err := ParseConnectOptions(q, def)
		if err != nil {
			se, ok := errors.AsType[*Error](err)
			if !ok || se.Code != CodeBadRequest || !utf8.ValidString(se.Message) || len(se.Message) > 200 {
				t.Fatalf("error %#v is not a bad_request for the client", err)
			}
			return
		}
		if o.Pool == "" || len(o.Pool) > MaxPoolName || len(o.Resume) > MaxResumeToken || len(o.Model) > MaxModel {
			t.Fatalf("options over their limits: %+v", o)
		}
		if _, given := q["wait"]; !given && o.Wait != wait {
			t.Fatalf("wait not given, yet %v", o.Wait)
		}
		if len(o.Labels) > MaxLabels {
			t.Fatalf("%d labels", len(o.Labels))
		}
		for k, v := range o.Labels {
			if k == "" || k != strings.TrimSpace(k) || v != strings.TrimSpace(v) || !plain(k) || !plain(v) ||
				len(k) > MaxLabelKey || len(v) > MaxLabelValue {
				t.Fatalf("label %q=%q", k, v)
			}
		}
		back, err := ParseConnectOptions(o.Values(), ConnectOptions{Pool: "other", Wait: !wait})
		if err != nil {
			t.Fatalf("options %+v do not read back: %v", o, err)
		}
		if back.Pool != o.Pool || back.Wait != o.Wait || back.Resume != o.Resume || back.Model != o.Model ||
			len(back.Labels) != len(o.Labels) {
			t.Fatalf("read back %+v as %+v", o, back)
		}
		for k, v := range o.Labels {
			if back.Labels[k] != v {
				t.Fatalf("label %q read back as %q, not %q", k, back.Labels[k], v)
			}
		}
	})
}
