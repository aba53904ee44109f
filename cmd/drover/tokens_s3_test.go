package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	convertpkg "github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/internal/testkit/s3test"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// TestTokensS3WithCurl is issue 11's presigned flow: `drover up` keeps its
// files in a bucket of a real S3 server (versitygw); uploadToken answers
// the bucket's presigned PUT URL, curl -T puts the file straight into the
// bucket, reconvert converts it to SUCCESS with the real converters, and
// downloadToken's presigned GET gives the GLB. A file above the token's
// size, which the bucket takes unchecked, is refused at reconvert and
// removed; an altered presigned URL is refused by the bucket. No
// credential and no token reaches the log.
func TestTokensS3WithCurl(t *testing.T) {
	curl := curlClient{t: t, path: testutil.Program(t, "curl", "curl")}
	testutil.Program(t, "assimp", "assimp-utils")
	testutil.Program(t, "f3d", "f3d")
	testutil.Program(t, "xvfb-run", "xvfb")
	s3 := s3test.Start(t)
	bucket := s3.Bucket(t)
	dir := t.TempDir()
	cube := filepath.Join(dir, "cube.obj")
	require.NoError(t, os.WriteFile(cube, []byte(cubeOBJ()), 0o644))
	big := filepath.Join(dir, "big.obj")
	require.NoError(t, os.WriteFile(big, []byte(cubeOBJ()+strings.Repeat("# padding\n", 100)), 0o644))
	size := int64(len(cubeOBJ()))

	up := startDrover(t, "up", []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey},
		bannerRE, "up", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--instances", "1",
		"--warm", "0", "--job-slots", "1", "--log-level", "debug",
		"--s3-bucket", bucket, "--s3-endpoint", s3.Endpoint, "--s3-region", s3test.Region, "--s3-path-style", "--s3-insecure")
	api := "http://" + up.base + "/api"

	// A token above the declared size: the bucket takes it, reconvert
	// does not, and the object goes.
	var over tokenAnswer
	code := curl.json(&over, fmt.Sprintf("%s/uploadToken/cube.obj/%d", api, size))
	require.Equal(t, http.StatusOK, code, over.Error)
	body, code := curl.run("-T", big, over.Token)
	require.Equal(t, http.StatusOK, code, "the bucket takes any size: %s", body)
	body, code = curl.run("-X", "PUT", api+"/reconvert/"+over.ItemID)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	require.Contains(t, body, `"ERROR"`)
	client := s3.Client(t)
	objects := func(id string) []string {
		var keys []string
		for oi := range client.ListObjectsIter(context.Background(), bucket,
			minio.ListObjectsOptions{Prefix: "items/" + id + "/", Recursive: true}) {
			require.NoError(t, oi.Err)
			keys = append(keys, oi.Key)
		}
		return keys
	}
	for _, k := range objects(over.ItemID) {
		require.NotContains(t, k, "/original/", "the oversized upload is removed")
	}

	// The flow.
	var ut tokenAnswer
	code = curl.json(&ut, fmt.Sprintf("%s/uploadToken/cube.obj/%d", api, size))
	require.Equal(t, http.StatusOK, code, ut.Error)
	tok, err := url.Parse(ut.Token)
	require.NoError(t, err)
	require.Equal(t, s3.Endpoint, tok.Host, "a presigned URL of the bucket")
	require.Contains(t, tok.RawQuery, "X-Amz-Signature=")

	altered := *tok
	altered.Path = strings.Replace(tok.Path, "/original/", "/original/x", 1)
	body, code = curl.run("-T", cube, altered.String())
	require.Equal(t, http.StatusForbidden, code, "the bucket refuses an altered URL: %s", body)

	body, code = curl.run("-T", cube, ut.Token)
	require.Equal(t, http.StatusOK, code, body)
	var item itemData
	curl.json(&item, api+"/data/"+ut.ItemID)
	require.Equal(t, "UPLOADING", item.ConversionState)
	var rec map[string]string
	code = curl.json(&rec, "-X", "PUT", "-H", `CS-API-Arg: {"waitUntilConversionDone":true}`, api+"/reconvert/"+ut.ItemID)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "SUCCESS", rec["conversionState"], rec["detailedError"])

	var dt tokenAnswer
	code = curl.json(&dt, api+"/downloadToken/"+ut.ItemID+"/glb")
	require.Equal(t, http.StatusOK, code, dt.Error)
	require.True(t, strings.HasPrefix(dt.Token, "http://"+s3.Endpoint+"/"), dt.Token)
	glb := filepath.Join(dir, "cube.glb")
	body, code = curl.run("-o", glb, dt.Token)
	require.Equal(t, http.StatusOK, code, body)
	info, err := convertpkg.InspectGLBFile(glb)
	require.NoError(t, err)
	require.Equal(t, 12, info.Triangles)

	out := up.out.String()
	require.Contains(t, out, "upload token issued")
	for _, secret := range []string{s3.SecretKey, s3.AccessKey, tok.Query().Get("X-Amz-Signature"), tok.RawQuery} {
		require.NotContains(t, out, secret)
	}
}
