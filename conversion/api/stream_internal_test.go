package api

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAccess(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{`["a"]`, []string{"a"}, true},
		{` ["a","b c"] `, []string{"a", "b c"}, true},
		{``, nil, false},
		{`[]`, nil, false},
		{`[""]`, nil, false},
		{`["a",1]`, nil, false},
		{`"a"`, nil, false},
		{`{"a":1}`, nil, false},
		{`[`, nil, false},
		{"[\"\xff\"]", nil, false},
		{`[` + strings.Repeat(`"a",`, maxAccessItems) + `"a"]`, nil, false},
	}
	for _, tt := range tests {
		got, err := parseAccess(tt.in)
		if !tt.ok {
			require.ErrorIs(t, err, errBadAccess, "%q", tt.in)
			continue
		}
		require.NoError(t, err, "%q", tt.in)
		require.Equal(t, tt.want, got)
	}
}

func FuzzParseAccess(f *testing.F) {
	for _, s := range []string{`["a"]`, `[]`, `[""]`, `["a",1]`, `null`, `[`, "[\"\xff\"]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		refs, err := parseAccess(raw)
		if err != nil {
			require.ErrorIs(t, err, errBadAccess)
			return
		}
		require.NotEmpty(t, refs)
		require.LessOrEqual(t, len(refs), maxAccessItems)
		for _, r := range refs {
			require.NotEmpty(t, r)
			require.NotContains(t, r, "\uFFFD")
		}
	})
}

func TestPublicHostPort(t *testing.T) {
	tests := []struct {
		host, proto string
		tls         bool
		wantHost    string
		wantPort    int
	}{
		{"drover.example:8181", "", false, "drover.example", 8181},
		{"drover.example", "", false, "drover.example", 80},
		{"drover.example", "https", false, "drover.example", 443},
		{"drover.example", "", true, "drover.example", 443},
		{"[::1]:9000", "", false, "::1", 9000},
		{"127.0.0.1:1", "", false, "127.0.0.1", 1},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/api/streamingSession", nil)
		r.Host = tt.host
		if tt.proto != "" {
			r.Header.Set("X-Forwarded-Proto", tt.proto)
		}
		r.TLS = nil
		if tt.tls {
			r.TLS = &tls.ConnectionState{}
		}
		h, p := publicHostPort(r)
		require.Equal(t, tt.wantHost, h, tt.host)
		require.Equal(t, tt.wantPort, p, tt.host)
	}
}
