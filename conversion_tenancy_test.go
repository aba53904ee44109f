package drover_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/manager"
)

// TestConversionTenants runs the conversion API behind the manager's
// authentication, with JWTs of two tenants: each tenant's items are its
// own (tenant A's read of B's item answers as for a missing one), an
// admin sees both, the quota of conversions in flight refuses A's second
// upload and not B's, and every upload leaves an audit line without the
// token.
func TestConversionTenants(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("conversion-tenants-jwt-secret-5f1e9a0c77")
	keyFile := filepath.Join(dir, "jwt.key")
	require.NoError(t, os.WriteFile(keyFile, secret, 0o600))
	const adminToken = "conversion-tenants-admin-token-b61c"
	authn, err := auth.New(auth.Config{AdminTokens: []string{adminToken},
		JWT: auth.JWTConfig{SecretFiles: []string{keyFile}}})
	require.NoError(t, err)
	logs := &testutil.SyncBuffer{}
	srv, err := drover.New(drover.Config{
		Addr:    "127.0.0.1:0",
		Logger:  slog.New(slog.NewJSONHandler(logs, nil)),
		Manager: manager.Config{Auth: authn},
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "default"},
			PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})}},
		// No job slots: items stay in flight.
		Conversion: &drover.Conversion{DataDir: filepath.Join(dir, "data"), JobSlots: -1,
			Quota: conversion.TenantQuota{MaxInFlight: 1}},
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	t.Cleanup(func() { stop(t, srv) })
	base := "http://" + srv.Addr().String()

	token := func(user, tenant string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "tenant": tenant,
			"roles": []string{auth.RoleUser}, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
		require.NoError(t, err)
		return tok
	}
	tokA, tokB := token("alice", "tenant-a"), token("bob", "tenant-b")
	call := func(bearer, method, path string, body io.Reader, ct string) (int, string) {
		req, err := http.NewRequest(method, base+path, body)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+bearer)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	upload := func(bearer, name string) (int, string) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		fw, err := w.CreateFormFile("file", name)
		require.NoError(t, err)
		_, _ = io.WriteString(fw, "solid "+name)
		require.NoError(t, w.Close())
		return call(bearer, http.MethodPost, "/api/upload", &buf, w.FormDataContentType())
	}
	idOf := func(body string) string {
		var r map[string]string
		require.NoError(t, json.Unmarshal([]byte(body), &r), body)
		return r["itemid"]
	}
	itemsOf := func(bearer string) []string {
		code, body := call(bearer, http.MethodGet, "/api/items", nil, "")
		require.Equal(t, http.StatusOK, code, body)
		var l struct {
			Itemarray []struct{ StorageID string }
		}
		require.NoError(t, json.Unmarshal([]byte(body), &l))
		var ids []string
		for _, it := range l.Itemarray {
			ids = append(ids, it.StorageID)
		}
		return ids
	}

	code, body := upload(tokA, "a.stl")
	require.Equal(t, http.StatusOK, code, body)
	aID := idOf(body)
	code, body = upload(tokA, "a2.stl")
	require.Equal(t, http.StatusTooManyRequests, code, body)
	require.Contains(t, body, `"ERROR"`)
	code, body = upload(tokB, "b.stl")
	require.Equal(t, http.StatusOK, code, "another tenant's quota is its own: %s", body)
	bID := idOf(body)

	require.Equal(t, []string{aID}, itemsOf(tokA))
	require.Equal(t, []string{bID}, itemsOf(tokB))
	require.ElementsMatch(t, []string{aID, bID}, itemsOf(adminToken))
	for _, p := range []string{"/api/data/", "/api/original/", "/caas_api/file/"} {
		path := p + bID
		if p == "/caas_api/file/" {
			path += "/glb"
		}
		code, body = call(tokA, http.MethodGet, path, nil, "")
		require.Equal(t, http.StatusNotFound, code, "%s: %s", p, body)
		require.JSONEq(t, `{"ERROR":"Item not found"}`, body)
	}
	code, body = call(tokA, http.MethodPut, "/api/delete/"+bID, nil, "")
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = call(tokB, http.MethodGet, "/api/original/"+bID, nil, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "solid b.stl", body)

	var ok, refused int
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["component"] != "audit" || rec["event"] != "upload" {
			continue
		}
		switch {
		case rec["outcome"] == "ok":
			ok++
		case strings.HasPrefix(fmt.Sprint(rec["outcome"]), "refused: "):
			refused++
			require.Equal(t, "alice", rec["user"])
			require.Equal(t, "tenant-a", rec["tenant"])
			require.Equal(t, "jwt", rec["via"])
		}
	}
	require.Equal(t, 2, ok, "an audit line per upload:\n%s", logs.String())
	require.Equal(t, 1, refused)
	for _, s := range []string{tokA, tokB, adminToken, string(secret)} {
		require.NotContains(t, logs.String(), s, "no credential in the log")
	}
}
