package storage_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/s3test"
	"github.com/drover-dev/drover/storage"
	"github.com/drover-dev/drover/storage/storagetest"
)

func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	storagetest.Run(t, func(t *testing.T) storage.Storage { return srv.Storage(t) })
}

// TestS3Prefix: with a prefix, keys live below it and nothing else in the
// bucket shows.
func TestS3Prefix(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	cfg := srv.Config(bucket)
	cfg.Prefix = "drover/"
	st, err := storage.NewS3(t.Context(), cfg)
	require.NoError(t, err)
	other, err := storage.NewS3(t.Context(), srv.Config(bucket))
	require.NoError(t, err)
	storagetest.Put(t, other, "unrelated/x", "not drover's")
	storagetest.Put(t, st, "items/1/item.json", "{}")

	list, err := st.List(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "items/1/item.json", list[0].Key)
	require.Equal(t, "{}", storagetest.Read(t, other, "drover/items/1/item.json"))
	n, err := st.DeletePrefix(t.Context(), "items/")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, "not drover's", storagetest.Read(t, other, "unrelated/x"))

	cfg.Prefix = "no-slash"
	_, err = storage.NewS3(t.Context(), cfg)
	require.Error(t, err)
}

func httpDo(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	require.NoError(t, err)
	if body == nil {
		req.Body = nil
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// TestS3Presign: a presigned URL moves bytes with plain HTTP and no
// credentials, for its key only and until it expires.
func TestS3Presign(t *testing.T) {
	srv := s3test.Start(t)
	st := srv.Storage(t)
	ctx := t.Context()

	put, err := st.PresignPut(ctx, "items/p/original/model one.stl", time.Minute)
	require.NoError(t, err)
	require.NotContains(t, put, srv.SecretKey)
	code, _ := httpDo(t, http.MethodPut, put, []byte("solid presigned"))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "solid presigned", storagetest.Read(t, st, "items/p/original/model one.stl"))

	get, err := st.PresignGet(ctx, "items/p/original/model one.stl", time.Minute)
	require.NoError(t, err)
	code, body := httpDo(t, http.MethodGet, get, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "solid presigned", string(body))

	// The signature covers the key and the method.
	code, _ = httpDo(t, http.MethodGet, strings.Replace(get, "model%20one", "model%20two", 1), nil)
	require.Equal(t, http.StatusForbidden, code)
	code, _ = httpDo(t, http.MethodPut, get, []byte("overwrite"))
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "solid presigned", storagetest.Read(t, st, "items/p/original/model one.stl"))

	// Expired URLs are refused.
	short, err := st.PresignGet(ctx, "items/p/original/model one.stl", time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodGet, short, nil)
		return code == http.StatusForbidden
	}, 10*time.Second, 200*time.Millisecond)

	for _, key := range storagetest.InvalidKeys {
		_, err := st.PresignGet(ctx, key, time.Minute)
		require.ErrorIs(t, err, storage.ErrInvalidKey)
		_, err = st.PresignPut(ctx, key, time.Minute)
		require.ErrorIs(t, err, storage.ErrInvalidKey)
	}
}

func TestS3Copy(t *testing.T) {
	srv := s3test.Start(t)
	st := srv.Storage(t)
	storagetest.Put(t, st, "items/c/staging/1-x/m.glb", "glTF")
	require.NoError(t, st.Copy(t.Context(), "items/c/staging/1-x/m.glb", "items/c/outputs/m.glb"))
	require.Equal(t, "glTF", storagetest.Read(t, st, "items/c/outputs/m.glb"))
	require.ErrorIs(t, st.Copy(t.Context(), "items/c/missing", "items/c/outputs/n.glb"), storage.ErrNotFound)
	require.ErrorIs(t, st.Copy(t.Context(), "../x", "items/c/outputs/n.glb"), storage.ErrInvalidKey)
}

// TestS3HeapFlat: a 256 MiB Put holds one part in memory, not the
// object.
func TestS3HeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 256 MiB")
	}
	srv := s3test.Start(t)
	st := srv.Storage(t)
	took := storagetest.HeapFlat(t, st, "big/object", 256<<20, 48<<20)
	t.Logf("S3 put of 256 MiB (parts of %d MiB): %v", storage.DefaultPartSize>>20, took)
}

// TestS3NoCredentialsInErrors: what fails, fails without showing a
// credential: wrong keys, a missing bucket, an unreachable server, a bad
// credentials file.
func TestS3NoCredentialsInErrors(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	ctx := t.Context()
	secrets := []string{srv.AccessKey, srv.SecretKey, "WRONGSECRETwrongsecret"}
	clean := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		for _, s := range secrets {
			require.NotContains(t, err.Error(), s)
		}
		t.Log(err)
	}

	wrong := srv.Config(bucket)
	wrong.SecretKey = "WRONGSECRETwrongsecret"
	_, err := storage.NewS3(ctx, wrong)
	clean(t, err)

	missing := srv.Config("no-such-bucket")
	_, err = storage.NewS3(ctx, missing)
	clean(t, err)
	require.Contains(t, err.Error(), "no-such-bucket")

	st, err := storage.NewS3(ctx, srv.Config(bucket))
	require.NoError(t, err)
	_, err = st.Open(ctx, "missing")
	clean(t, err)
	require.ErrorIs(t, err, storage.ErrNotFound)

	// A file whose lines the parser cannot read, with a secret in it.
	bad := filepath.Join(t.TempDir(), "credentials")
	require.NoError(t, os.WriteFile(bad, []byte("[default]\naws_access_key_id "+srv.AccessKey+"\n"+srv.SecretKey+"\n"), 0o600))
	fileCfg := srv.Config(bucket)
	fileCfg.AccessKey, fileCfg.SecretKey, fileCfg.CredentialsFile = "", "", bad
	_, err = storage.NewS3(ctx, fileCfg)
	clean(t, err)

	// A server that went away.
	srv.Stop()
	_, err = st.Stat(ctx, "x")
	clean(t, err)
	_, err = st.Put(ctx, "x", strings.NewReader("x"))
	clean(t, err)
}

// TestS3CredentialsFile: credentials from an AWS shared credentials file.
func TestS3CredentialsFile(t *testing.T) {
	srv := s3test.Start(t)
	file := filepath.Join(t.TempDir(), "credentials")
	require.NoError(t, os.WriteFile(file, []byte("[default]\naws_access_key_id = "+srv.AccessKey+
		"\naws_secret_access_key = "+srv.SecretKey+"\n[other]\naws_access_key_id = x\naws_secret_access_key = y\n"), 0o600))
	cfg := srv.Config(srv.Bucket(t))
	cfg.AccessKey, cfg.SecretKey, cfg.CredentialsFile = "", "", file
	st, err := storage.NewS3(t.Context(), cfg)
	require.NoError(t, err)
	storagetest.Put(t, st, "k", "v")
	require.Equal(t, "v", storagetest.Read(t, st, "k"))

	cfg.Profile = "other"
	_, err = storage.NewS3(t.Context(), cfg)
	require.Error(t, err, "the other profile's keys are wrong")
	cfg.Profile = "absent"
	_, err = storage.NewS3(t.Context(), cfg)
	require.ErrorContains(t, err, `"absent"`)
}

func TestS3CreateBucket(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config("made-by-drover")
	cfg.CreateBucket = true
	st, err := storage.NewS3(t.Context(), cfg)
	require.NoError(t, err)
	storagetest.Put(t, st, "k", "v")
	_, err = storage.NewS3(t.Context(), cfg)
	require.NoError(t, err, "again: it exists")
}

func TestS3Endpoint(t *testing.T) {
	for _, tt := range []struct {
		endpoint string
		ok       bool
	}{
		{"http://127.0.0.1:1", true},
		{"https://127.0.0.1:1", true},
		{"127.0.0.1:1", true},
		{"ftp://x", false},
		{"http://user:pass@host", false},
		{"http://host/path", false},
		{"http://host?q=1", false},
	} {
		t.Run(tt.endpoint, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := storage.NewS3(ctx, storage.S3Config{Endpoint: tt.endpoint, Bucket: "b", AccessKey: "a", SecretKey: "s"})
			require.Error(t, err) // nothing answers there
			if !tt.ok {
				require.ErrorContains(t, err, "endpoint")
				require.NotContains(t, err.Error(), "pass")
			}
		})
	}
}

// TestS3PublicEndpoint: presigned URLs name the public endpoint, and work
// there; drover itself talks to Endpoint.
func TestS3PublicEndpoint(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config(srv.Bucket(t))
	_, port, err := net.SplitHostPort(srv.Endpoint)
	require.NoError(t, err)
	cfg.PublicEndpoint = "http://localhost:" + port
	for _, region := range []string{s3test.Region, ""} { // given, or asked of the server
		cfg.Region = region
		st, err := storage.NewS3(t.Context(), cfg)
		require.NoError(t, err)
		storagetest.Put(t, st, "k", "public")
		u, err := st.PresignGet(t.Context(), "k", time.Minute)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(u, cfg.PublicEndpoint+"/"), u)
		code, body := httpDo(t, http.MethodGet, u, nil)
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Equal(t, "public", string(body))
	}
	cfg.PublicEndpoint = "ftp://x"
	_, err = storage.NewS3(t.Context(), cfg)
	require.ErrorContains(t, err, "public endpoint")
}
