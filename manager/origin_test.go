package manager

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"
)

// newBare is a manager without farms, logging into buf.
func newBare(t *testing.T, buf *bytes.Buffer, origins ...string) *Manager {
	t.Helper()
	m, err := New(Config{Pools: []Pool{{Name: "default"}}, AllowedOrigins: origins,
		Logger: slog.New(slog.NewJSONHandler(buf, nil))})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
	})
	return m
}

// The origin policy: what a request from each origin may do.
func TestOriginPolicy(t *testing.T) {
	var buf bytes.Buffer
	m := newBare(t, &buf, "https://app.example", "http://LOCALHOST:3000/")
	cases := []struct {
		name, host, origin string
		want               verdict
	}{
		{"no origin", "drover.example", "", originNone},
		{"same origin", "drover.example:8181", "http://drover.example:8181", originOwn},
		{"same origin, default port", "drover.example", "https://drover.example:443", originOwn},
		{"same origin behind TLS", "drover.example:443", "https://drover.example", originOwn},
		{"same host, other port", "drover.example:8181", "http://drover.example:9000", originForeign},
		{"allowed", "drover.example", "https://app.example", originAllowed},
		{"allowed, case and slash", "drover.example", "http://localhost:3000", originAllowed},
		{"allowed host, other scheme", "drover.example", "http://app.example", originForeign},
		{"foreign", "drover.example", "http://evil.example", originForeign},
		{"null", "drover.example", "null", originForeign},
		{"not a URL", "drover.example", "%%%", originForeign},
		{"other scheme", "drover.example", "file://drover.example", originForeign},
		{"with a path", "drover.example", "http://drover.example/x", originForeign},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://"+c.host+"/execute/x", nil)
			r.Host = c.host
			if c.origin != "" {
				r.Header.Set("Origin", c.origin)
			}
			require.Equal(t, c.want, m.origins.judge(r))
		})
	}
	any, err := newOrigins([]string{"*"})
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Origin", "http://evil.example")
	require.Equal(t, originAllowed, any.judge(r), "* admits any origin")
	for _, bad := range []string{"app.example", "ftp://app.example", "https://app.example/path", "https://", "null"} {
		_, err := New(Config{Pools: []Pool{{Name: "default"}}, AllowedOrigins: []string{bad}})
		require.Error(t, err, bad)
	}
}

// A foreign origin's POST is refused before the handler, with a code; the
// refusal is audited.
func TestForeignOriginRefused(t *testing.T) {
	var buf bytes.Buffer
	m := newBare(t, &buf)
	req := httptest.NewRequest(http.MethodPost, "/execute/x", strings.NewReader("{}"))
	req.RemoteAddr = "127.0.0.1:5555"
	req.Header.Set("Origin", "http://evil.example")
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, req)
	require.Equal(t, http.StatusForbidden, w.Code)
	require.JSONEq(t, `{"code":"forbidden","message":"requests from this origin are not accepted"}`, w.Body.String())
	require.Contains(t, buf.String(), `"event":"refused"`)
	require.Contains(t, buf.String(), `"route":"/execute/:id"`)

	// Without an Origin the same request reaches the handler.
	req = httptest.NewRequest(http.MethodPost, "/execute/x", strings.NewReader("{}"))
	req.RemoteAddr = "127.0.0.1:5555"
	w = httptest.NewRecorder()
	m.Handler().ServeHTTP(w, req)
	require.Equal(t, http.StatusNotFound, w.Code, "no such session")
}

// A panic is answered 500 with a code, and logged without the query's
// credential.
func TestPanicLoggedScrubbed(t *testing.T) {
	var buf bytes.Buffer
	m := newBare(t, &buf)
	m.Router().GET("/boom", func(*gin.Context) { panic("boom") })
	req := httptest.NewRequest(http.MethodGet, "/boom?access_token=sekrit-token-77&x=1", nil)
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, req)
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.JSONEq(t, `{"code":"internal","message":"internal error"}`, w.Body.String())
	require.Contains(t, buf.String(), "panic while serving a request")
	require.Contains(t, buf.String(), "x=1")
	require.NotContains(t, buf.String(), "sekrit-token-77")
}

// FuzzOrigin: any Origin header and Host are judged without a panic, and
// only an origin that parses can be the request's own.
func FuzzOrigin(f *testing.F) {
	for _, s := range []string{"http://a.example", "https://a.example:443", "null", "", "http://[::1]:80",
		"HTTP://A.EXAMPLE/", "http://a.example:80/x?y#z", "http://user@a.example"} {
		f.Add(s, "a.example")
	}
	o, err := newOrigins([]string{"https://b.example"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, origin, host string) {
		r := &http.Request{Header: http.Header{"Origin": {origin}}, Host: host}
		v := o.judge(r)
		if origin == "" && v != originNone {
			t.Fatalf("no origin judged %v", v)
		}
		if _, ok := normOrigin(origin); !ok && v == originOwn {
			t.Fatalf("%q does not parse, yet is the request's own", origin)
		}
	})
}
