package webhook_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/webhook"
)

func fmtSprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

func TestValidateURL(t *testing.T) {
	tests := []struct {
		url  string
		want error
	}{
		{"https://hooks.example.com/drover?token=abc", nil},
		{"http://hooks.example.com:8080/x", nil},
		{"HTTPS://Hooks.Example.COM./x", nil},
		{"https://93.184.215.14/hook", nil},
		{"https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook", nil},

		{"ftp://hooks.example.com/", webhook.ErrInvalidURL},
		{"file:///etc/passwd", webhook.ErrInvalidURL},
		{"gopher://127.0.0.1:6379/_FLUSHALL", webhook.ErrInvalidURL},
		{"hooks.example.com/x", webhook.ErrInvalidURL},
		{"/relative", webhook.ErrInvalidURL},
		{"http:opaque", webhook.ErrInvalidURL},
		{"http://", webhook.ErrInvalidURL},
		{"http://:80/", webhook.ErrInvalidURL},
		{"https://user:pass@hooks.example.com/", webhook.ErrInvalidURL},
		{"http://hooks.example.com:0/", webhook.ErrInvalidURL},
		{"http://hooks.example.com:70000/", webhook.ErrInvalidURL},
		{"http://hooks.example.com:http/", webhook.ErrInvalidURL},
		{"http://hooks example.com/", webhook.ErrInvalidURL},
		{"https://hooks.example.com/" + strings.Repeat("a", 3000), webhook.ErrInvalidURL},
		{"http://127.1/", webhook.ErrInvalidURL},
		{"http://0x7f.0.0.1/", webhook.ErrInvalidURL},
		{"http://2130706433/", webhook.ErrInvalidURL},
		{"http://017700000001/", webhook.ErrInvalidURL},

		{"http://127.0.0.1/", webhook.ErrNotAllowed},
		{"http://127.0.0.1:8080/hook", webhook.ErrNotAllowed},
		{"http://127.255.255.254/", webhook.ErrNotAllowed},
		{"http://localhost/", webhook.ErrNotAllowed},
		{"http://LOCALHOST./", webhook.ErrNotAllowed},
		{"http://api.localhost/", webhook.ErrNotAllowed},
		{"http://169.254.169.254/latest/meta-data/", webhook.ErrNotAllowed},
		{"http://169.254.1.1/", webhook.ErrNotAllowed},
		{"http://10.1.2.3/", webhook.ErrNotAllowed},
		{"http://172.16.0.1/", webhook.ErrNotAllowed},
		{"http://172.31.255.255/", webhook.ErrNotAllowed},
		{"http://192.168.1.1/", webhook.ErrNotAllowed},
		{"http://100.100.100.200/", webhook.ErrNotAllowed}, // Alibaba Cloud's metadata, shared space
		{"http://0.0.0.0/", webhook.ErrNotAllowed},
		{"http://0.1.2.3/", webhook.ErrNotAllowed},
		{"http://224.0.0.1/", webhook.ErrNotAllowed},
		{"http://255.255.255.255/", webhook.ErrNotAllowed},
		{"http://198.18.0.1/", webhook.ErrNotAllowed},
		{"http://[::1]/", webhook.ErrNotAllowed},
		{"http://[::]/", webhook.ErrNotAllowed},
		{"http://[::ffff:127.0.0.1]/", webhook.ErrNotAllowed},
		{"http://[::ffff:169.254.169.254]/", webhook.ErrNotAllowed},
		{"http://[fe80::1]/", webhook.ErrNotAllowed},
		{"http://[fe80::1%25eth0]/", webhook.ErrNotAllowed},
		{"http://[fc00::1]/", webhook.ErrNotAllowed},
		{"http://[fd00:ec2::254]/", webhook.ErrNotAllowed}, // AWS's IPv6 metadata
		{"http://[ff02::1]/", webhook.ErrNotAllowed},
		{"http://[64:ff9b::a9fe:a9fe]/", webhook.ErrNotAllowed}, // NAT64 of 169.254.169.254
		{"http://[2002:7f00:1::]/", webhook.ErrNotAllowed},      // 6to4 of 127.0.0.1
		{"http://[::127.0.0.1]/", webhook.ErrNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.url[:min(len(tt.url), 60)], func(t *testing.T) {
			err := webhook.ValidateURL(tt.url)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			if u, perr := url.Parse(tt.url); perr == nil && u.RawQuery != "" {
				require.NotContains(t, err.Error(), u.RawQuery, "the query may hold a token")
			}
		})
	}
}

func TestValidateURLAllowList(t *testing.T) {
	p := webhook.Policy{AllowHosts: []string{"127.0.0.1", "[::1]", "hooks.corp.", "*.Internal.Example", "LocalHost"}}
	for _, ok := range []string{
		"http://127.0.0.1:9000/hook", "http://[::1]:9000/", "http://[::ffff:127.0.0.1]/",
		"http://hooks.corp/", "http://HOOKS.CORP./", "https://a.internal.example/", "https://a.b.internal.example/",
		"http://localhost:8080/", "https://public.example.org/",
	} {
		require.NoError(t, p.ValidateURL(ok), ok)
	}
	for _, bad := range []string{"http://127.0.0.2/", "http://internal.example.localhost/", "http://10.0.0.1/"} {
		require.ErrorIs(t, p.ValidateURL(bad), webhook.ErrNotAllowed, bad)
	}
	// The suffix form does not allow the bare suffix, which may point
	// anywhere the operator did not mean.
	require.NoError(t, p.ValidateURL("https://internal.example/"), "a public-looking name passes until dialled")

	only := webhook.Policy{AllowHosts: []string{"*.hooks.example"}, AllowOnly: true}
	require.NoError(t, only.ValidateURL("https://a.hooks.example/"))
	err := only.ValidateURL("https://elsewhere.example/x?token=secret-path-token")
	require.ErrorIs(t, err, webhook.ErrNotAllowed)
	require.Contains(t, err.Error(), "elsewhere.example")
	require.NotContains(t, err.Error(), "secret-path-token")

	all := webhook.Policy{AllowHosts: []string{"*"}}
	require.NoError(t, all.ValidateURL("http://169.254.169.254/"))

	for _, bad := range []string{"*.", "host:80", "*.a*b", "http://x/", "[::1]:80", ""} {
		err := webhook.Policy{AllowHosts: []string{bad}}.ValidateURL("https://example.com/")
		require.Error(t, err, bad)
		_, err = webhook.New(webhook.Options{Secret: "k", Policy: webhook.Policy{AllowHosts: []string{bad}}})
		require.Error(t, err, bad)
	}
}

func FuzzValidateURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/x?y=z", "http://127.0.0.1/", "http://[::ffff:169.254.169.254]:80/",
		"http://0x7f.1/", "https://u:p@h/", "http://[fe80::1%25eth0]/", "http://h:65536/", "http://localhost./",
		"HTTP://EXAMPLE.com", "http://[64:ff9b::7f00:1]/", "http://1.2.3.4.example/", "http://%31%32%37.0.0.1/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := webhook.ValidateURL(raw)
		if err != nil {
			if !errors.Is(err, webhook.ErrInvalidURL) && !errors.Is(err, webhook.ErrNotAllowed) {
				t.Fatalf("%q: error wraps no sentinel: %v", raw, err)
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("%q accepted but does not parse: %v", raw, perr)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" || u.User != nil {
			t.Fatalf("%q accepted: scheme %q host %q", raw, u.Scheme, u.Hostname())
		}
		if webhook.Refused(u.Hostname()) {
			t.Fatalf("%q accepted with a refused address", raw)
		}
		// Allow-listing the host accepts it too.
		if err := (webhook.Policy{AllowHosts: []string{u.Hostname()}, AllowOnly: true}).ValidateURL(raw); err != nil &&
			!strings.ContainsAny(u.Hostname(), "*/:[] ") {
			t.Fatalf("%q refused with its host allow-listed: %v", raw, err)
		}
	})
}
