package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/limits"
)

// TestUploadRate: uploads past a user's rate, and past an address's, get
// 429 with Retry-After and the API's error body; other routes and other
// users go on.
func TestUploadRate(t *testing.T) {
	svc := newService(t)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// As the auth middleware would: the principal from a header.
	r.Use(func(c *gin.Context) {
		if u := c.GetHeader("X-Test-User"); u != "" {
			c.Request = c.Request.WithContext(auth.NewContext(c.Request.Context(),
				&auth.Principal{User: u, Tenant: "acme"}))
		}
	})
	lim := limits.New(limits.Config{UploadRate: limits.Rate{PerSecond: 0.001, Burst: 2},
		UploadIPRate: limits.Rate{PerSecond: 0.001, Burst: 5}})
	var audit syncBuffer
	api.New(svc, api.Options{Uploads: lim, Audit: slog.New(slog.NewJSONHandler(&audit, nil))}).Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	do := func(user, method, path string, body io.Reader, ct string) (*http.Response, map[string]any) {
		req, err := http.NewRequest(method, srv.URL+path, body)
		require.NoError(t, err)
		if user != "" {
			req.Header.Set("X-Test-User", user)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp, out
	}
	upload := func(user string) (*http.Response, map[string]any) {
		body, ct := form("file", map[string]string{"a.stl": "solid a"})
		return do(user, http.MethodPost, "/api/upload", body, ct)
	}
	create := func(user string) (*http.Response, map[string]any) {
		return do(user, http.MethodPut, "/caas_api/create", strings.NewReader(""), "")
	}

	resp, _ := upload("alice")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = create("alice")
	require.Equal(t, http.StatusOK, resp.StatusCode, "create counts as an upload, under either prefix")
	resp, out := upload("alice")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, ra, 100)
	require.Contains(t, out["ERROR"], "too many uploads; try again in ")
	resp, _ = create("alice")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Contains(t, audit.String(), `"event":"create","user":"alice","tenant":"acme"`)
	require.Contains(t, audit.String(), `"outcome":"refused: too many uploads; try again in `)

	// Reading is not uploading.
	resp, _ = do("alice", http.MethodGet, "/api/items", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// Bob has his own bucket; the address's (all 127.0.0.1) holds five:
	// alice's two, bob's two, an anonymous caller's one.
	resp, _ = upload("bob")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = upload("bob")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = upload("")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, out = upload("carol")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.NotEmpty(t, out["ERROR"])
}

// syncBuffer is a bytes.Buffer for a logger that handlers write from
// several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
