package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/signedurl"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

type tokenReply struct {
	Token     string `json:"token"`
	ItemID    string `json:"itemid"`
	StorageID string `json:"storageID"`
	Error     string `json:"ERROR"`
}

type tokenServer struct {
	*server
	signer *signedurl.Signer
	log    *testutil.SyncBuffer
	reg    *prometheus.Registry
}

func newTokenServer(t *testing.T, maxUpload int64, tokens api.Tokens) *tokenServer {
	t.Helper()
	signer, err := signedurl.New([]byte("api-test-url-secret-77e1b0c4"))
	require.NoError(t, err)
	tokens.Signer = signer
	logs := &testutil.SyncBuffer{}
	reg := prometheus.NewRegistry()
	s := newServerWith(t, maxUpload, api.Options{Version: "test", Tokens: tokens, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return &tokenServer{server: s, signer: signer, log: logs, reg: reg}
}

// metric is the value of a counter of s's registry with these labels.
func (s *tokenServer) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (s *tokenServer) token(t *testing.T, path string, header http.Header) (int, tokenReply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r tokenReply
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

// send makes a request to a token URL; length -1 sends the body chunked,
// without a Content-Length.
func send(t *testing.T, method, u, body string, length int64) (int, string) {
	t.Helper()
	var r io.Reader = strings.NewReader(body)
	if length < 0 {
		r = io.MultiReader(r) // hides the length
	}
	req, err := http.NewRequest(method, u, r)
	require.NoError(t, err)
	if length >= 0 {
		req.ContentLength = length
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func errorOf(t *testing.T, body string) string {
	t.Helper()
	var e map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.Len(t, e, 1, body)
	require.NotEmpty(t, e["ERROR"], body)
	return e["ERROR"]
}

// TestTokenFlow is the token round trip on the data directory, on both
// prefixes: uploadToken, PUT to its URL, reconvert, downloadToken, GET.
func TestTokenFlow(t *testing.T) {
	s := newTokenServer(t, 0, api.Tokens{})
	for _, prefix := range api.Prefixes {
		t.Run(prefix, func(t *testing.T) {
			code, up := s.token(t, prefix+"/uploadToken/my%20model.stl", nil)
			require.Equal(t, http.StatusOK, code, up.Error)
			require.Equal(t, up.ItemID, up.StorageID)
			require.True(t, strings.HasPrefix(up.Token, s.URL+api.DirectPath+"items/"+up.ItemID+"/original/"), up.Token)

			var data api.ItemView
			s.getJSON(t, prefix+"/data/"+up.ItemID, &data)
			require.Equal(t, string(items.StateUploading), data.ConversionState)
			require.Equal(t, "my model.stl", data.Name)

			code, body := s.do(t, call{method: http.MethodPut, path: prefix + "/reconvert/" + up.ItemID})
			require.Equal(t, http.StatusBadRequest, code)
			require.Contains(t, errorOf(t, string(body)), "my model.stl has not been uploaded")

			code, got := send(t, http.MethodPut, up.Token, "solid cube", 10)
			require.Equal(t, http.StatusOK, code, got)
			s.getJSON(t, prefix+"/data/"+up.ItemID, &data)
			require.Equal(t, string(items.StateUploading), data.ConversionState, "UPLOADING until reconvert")

			code, body = s.do(t, call{method: http.MethodPut, path: prefix + "/reconvert/" + up.ItemID})
			require.Equal(t, http.StatusOK, code, "%s", body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			it, err := s.svc.Wait(ctx, up.ItemID)
			require.NoError(t, err)
			require.Equal(t, items.StateSuccess, it.State)
			require.Equal(t, []items.Original{{Name: "my model.stl", Stored: it.Originals[0].Stored, Size: 10}}, it.Originals)

			for _, typ := range []string{"glb", "png"} {
				code, down := s.token(t, prefix+"/downloadToken/"+up.ItemID+"/"+typ, nil)
				require.Equal(t, http.StatusOK, code, down.Error)
				code, got = send(t, http.MethodGet, down.Token, "", 0)
				require.Equal(t, http.StatusOK, code)
				require.Equal(t, typ+" bytes", got)
			}
			code, down := s.token(t, prefix+"/downloadToken/"+up.ItemID+"/scs", nil)
			require.Equal(t, http.StatusNotFound, code)
			require.NotEmpty(t, down.Error)
			code, down = s.token(t, prefix+"/downloadToken/no-such-item/glb", nil)
			require.Equal(t, http.StatusNotFound, code)
			require.Equal(t, "Item not found", down.Error)
		})
	}
	require.NotContains(t, s.log.String(), "signature=", "no token in the log")
}

// TestTokenRefused: an expired token and every kind of altered one get
// 403 and a plain {"ERROR"}; nothing is stored or served, and the log
// names the item, never the token.
func TestTokenRefused(t *testing.T) {
	s := newTokenServer(t, 0, api.Tokens{})
	code, up := s.token(t, "/api/uploadToken/m.stl/100", nil)
	require.Equal(t, http.StatusOK, code, up.Error)
	u, err := url.Parse(up.Token)
	require.NoError(t, err)
	q := u.Query()
	with := func(k, v string) string {
		c := *u
		vals := url.Values{}
		for kk, vv := range q {
			vals[kk] = vv
		}
		vals.Set(k, v)
		c.RawQuery = vals.Encode()
		return c.String()
	}
	otherPath := *u
	otherPath.Path = strings.Replace(u.Path, "/original/", "/original/x", 1)
	expired := *u
	expired.RawQuery = s.signer.Query(signedurl.Grant{Method: http.MethodPut, Path: u.Path,
		Expires: time.Now().Add(-time.Second), Limit: 100})
	sig := q.Get(signedurl.ParamSignature)
	altered := "A" + sig[1:]
	if altered == sig {
		altered = "B" + sig[1:]
	}

	for _, tc := range []struct {
		name, method, url, want string
	}{
		{"expired", http.MethodPut, expired.String(), "expired"},
		{"altered signature", http.MethodPut, with(signedurl.ParamSignature, altered), "not valid"},
		{"altered expiry", http.MethodPut, with(signedurl.ParamExpires, "4102444800"), "not valid"},
		{"altered limit", http.MethodPut, with(signedurl.ParamLimit, "0"), "not valid"},
		{"altered path", http.MethodPut, otherPath.String(), "not valid"},
		{"other method", http.MethodGet, up.Token, "not valid"},
		{"no query", http.MethodPut, strings.Split(up.Token, "?")[0], "not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := send(t, tc.method, tc.url, "solid", 5)
			require.Equal(t, http.StatusForbidden, code, body)
			require.Contains(t, errorOf(t, body), tc.want)
		})
	}
	it, err := s.svc.Get(context.Background(), up.ItemID)
	require.NoError(t, err)
	require.Equal(t, items.StateUploading, it.State)
	code, body := s.do(t, call{method: http.MethodPut, path: "/api/reconvert/" + up.ItemID})
	require.Equal(t, http.StatusBadRequest, code, "nothing arrived: %s", body)

	require.Equal(t, 1.0, s.metric(t, "drover_conversion_tokens_refused_total", map[string]string{"reason": "expired"}))
	require.Equal(t, 6.0, s.metric(t, "drover_conversion_tokens_refused_total", map[string]string{"reason": "invalid"}))
	require.Equal(t, 1.0, s.metric(t, "drover_conversion_tokens_issued_total", map[string]string{"kind": "upload", "via": "signed"}))

	logs := s.log.String()
	require.Contains(t, logs, "token refused")
	require.Contains(t, logs, "item="+up.ItemID)
	require.NotContains(t, logs, sig)
	require.NotContains(t, logs, altered)
	require.NotContains(t, logs, "signature=")
}

// TestTokenSizeLimit: a PUT above the size the token was made for is
// refused, with a declared length or streamed, and loses nothing: the
// file an earlier PUT stored stays.
func TestTokenSizeLimit(t *testing.T) {
	s := newTokenServer(t, 1000, api.Tokens{})
	code, r := s.token(t, "/api/uploadToken/m.stl/1001", nil)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, "a size above the server's limit")
	require.NotEmpty(t, r.Error)
	code, r = s.token(t, "/api/uploadToken/m.stl/ten", nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, "size")
	code, r = s.token(t, "/api/uploadToken/m.stl", http.Header{api.ArgHeader: {`{"storageID":"abc"}`}})
	require.Equal(t, http.StatusBadRequest, code, "no file added to an item by token")
	require.Contains(t, r.Error, "use upload with its itemid")
	all, err := s.svc.List(context.Background())
	require.NoError(t, err)
	require.Empty(t, all, "refused calls make no item")

	code, up := s.token(t, "/api/uploadToken/m.stl/10", nil)
	require.Equal(t, http.StatusOK, code, up.Error)
	code, body := send(t, http.MethodPut, up.Token, "0123456789x", 11)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	errorOf(t, body)
	code, body = send(t, http.MethodPut, up.Token, "0123456789x", -1)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	code, body = send(t, http.MethodPut, up.Token, "0123456789", -1)
	require.Equal(t, http.StatusOK, code, body)
	code, body = send(t, http.MethodPut, up.Token, strings.Repeat("y", 4000), -1)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)

	code, rb := s.do(t, call{method: http.MethodPut, path: "/api/reconvert/" + up.ItemID})
	require.Equal(t, http.StatusOK, code, "%s", rb)
	obj, _, err := s.svc.OpenOriginal(context.Background(), up.ItemID)
	require.NoError(t, err)
	b, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.NoError(t, obj.Close())
	require.Equal(t, "0123456789", string(b), "the stored file is the one within the limit")

	code, body = send(t, http.MethodPut, up.Token, "0123", 4)
	require.Equal(t, http.StatusConflict, code, "no upload once converting: %s", body)
	errorOf(t, body)
}

// TestTokenBaseURL: the URLs start with the public URL when one is set;
// otherwise with the request's host, or the forwarded one only when
// trusted.
func TestTokenBaseURL(t *testing.T) {
	fwd := http.Header{"X-Forwarded-Host": {"drover.example.com, proxy.internal"}, "X-Forwarded-Proto": {"https"}}
	for _, tc := range []struct {
		name   string
		tokens api.Tokens
		header http.Header
		want   string // "" for the test server's own URL
	}{
		{"request host", api.Tokens{}, nil, ""},
		{"forwarded headers ignored", api.Tokens{}, fwd, ""},
		{"forwarded headers trusted", api.Tokens{TrustForwarded: true}, fwd, "https://drover.example.com"},
		{"bad forwarded host", api.Tokens{TrustForwarded: true},
			http.Header{"X-Forwarded-Host": {"evil.com/x?"}, "X-Forwarded-Proto": {"gopher"}}, ""},
		{"public URL", api.Tokens{PublicURL: "https://files.example.com/drover/", TrustForwarded: true}, fwd,
			"https://files.example.com/drover"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTokenServer(t, 0, tc.tokens)
			code, up := s.token(t, "/api/uploadToken/m.stl", tc.header)
			require.Equal(t, http.StatusOK, code, up.Error)
			want := tc.want
			if want == "" {
				want = s.URL
			}
			require.True(t, strings.HasPrefix(up.Token, want+api.DirectPath), up.Token)
		})
	}
	require.Error(t, api.ValidatePublicURL("ftp://x"))
	require.Error(t, api.ValidatePublicURL("https://x/?a=b"))
	require.Error(t, api.ValidatePublicURL("/relative"))
	require.NoError(t, api.ValidatePublicURL("https://x.example:8443/drover"))
}

// TestTokensNotAvailable: with neither presigning storage nor a signer,
// both calls answer the original server's error, and no item is made.
func TestTokensNotAvailable(t *testing.T) {
	s := newServer(t, 0)
	for _, path := range []string{"/api/uploadToken/m.stl/10", "/caas_api/downloadToken/x/glb"} {
		code, body := s.do(t, call{method: http.MethodGet, path: path})
		require.Equal(t, http.StatusNotImplemented, code)
		require.Equal(t, "Not available for this storage type", errorOf(t, string(body)))
	}
	all, err := s.svc.List(context.Background())
	require.NoError(t, err)
	require.Empty(t, all)
	code, body := s.do(t, call{method: http.MethodPut, path: api.DirectPath + "items/x/original/y?expires=1"})
	require.Equal(t, http.StatusNotFound, code)
	errorOf(t, string(body))
}
