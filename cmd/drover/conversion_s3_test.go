package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/internal/testkit/s3test"
)

// get returns a GET's status and body.
func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// transfers reads a farm's drover_farm_job_transfers_total by
// direction/via.
var transferLine = regexp.MustCompile(`(?m)^drover_farm_job_transfers_total\{direction="(\w+)",via="(\w+)"\} (\d+)`)

func transfers(t *testing.T, farm *droverProc) map[string]string {
	code, b := get(t, "http://"+farm.base+"/metrics", farmToken)
	require.Equal(t, http.StatusOK, code)
	out := map[string]string{}
	for _, m := range transferLine.FindAllStringSubmatch(string(b), -1) {
		out[m[1]+"/"+m[2]] = m[3]
	}
	return out
}

// TestConversionS3TwoManagersTwoFarms: two `drover manager` processes on
// one Redis keep the files in one bucket of a real S3 server (versitygw);
// two `drover farm` processes, which have no S3 credentials, convert an
// upload of each manager with presigned URLs, and either manager serves
// both results. No credential appears in any process's output, in /status
// or in an error body, also when a manager is given a wrong secret.
func TestConversionS3TwoManagersTwoFarms(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	s3 := s3test.Start(t)
	bucket := s3.Bucket(t)
	dir := t.TempDir()

	// The converter copies a GLB made once, after a pause that keeps a
	// farm's only job slot busy, so that each farm takes one job.
	glb := triangleGLB(t, dir)
	want, err := os.ReadFile(glb)
	require.NoError(t, err)
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .part
    argv: ["sh", "-c", "sleep 2; cp %s \"$1\"", "sh", "{out}"]
`, glb), 0o644))

	s3Args := []string{"--s3-bucket", bucket, "--s3-endpoint", s3.Endpoint, "--s3-region", s3test.Region,
		"--s3-path-style", "--s3-insecure"}
	var ms []*droverProc
	for i := range 2 {
		ms = append(ms, startDrover(t, fmt.Sprintf("manager-%d", i),
			[]string{"DROVER_REDIS=" + rs.URL(), "AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey},
			managerBanner, append([]string{"manager", "--addr", "127.0.0.1:0", "--farm-token", farmToken,
				"--id", fmt.Sprintf("m%d", i), "--data", t.TempDir(), "--log-level", "debug"}, s3Args...)...))
	}
	var farms []*droverProc
	for i := range 2 {
		// Each farm calls a different manager first.
		first, second := ms[i], ms[1-i]
		farms = append(farms, startDrover(t, fmt.Sprintf("farm-%d", i), nil, farmBanner, "farm",
			"--manager", "http://"+first.base, "--manager", "http://"+second.base, "--token", farmToken,
			"--addr", "127.0.0.1:0", "--id", fmt.Sprintf("farm-%d", i), "--instances", "1", "--job-slots", "1",
			"--state-dir", t.TempDir(), "--config", config, "--log-level", "debug"))
	}
	// Both farms wait for jobs before the uploads.
	require.Eventually(t, func() bool {
		for _, m := range ms {
			var st struct {
				Conversion struct {
					JobSlots int `json:"job_slots"`
				} `json:"conversion"`
			}
			getJSON(t, "http://"+m.base+"/status", "", &st)
			if st.Conversion.JobSlots < 1 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)

	ids := []string{
		uploadFile(t, ms[0].base, "", "one.part", []byte("first")),
		uploadFile(t, ms[1].base, "", "two.part", []byte("second")),
	}
	for _, id := range ids {
		for _, m := range ms {
			var data itemData
			require.Eventually(t, func() bool {
				getJSON(t, "http://"+m.base+"/api/data/"+id, "", &data)
				return data.ConversionState != "PENDING"
			}, time.Minute, 50*time.Millisecond)
			require.Equal(t, "SUCCESS", data.ConversionState, data.DetailedError)
			code, b := get(t, "http://"+m.base+"/api/file/"+id+"/glb", "")
			require.Equal(t, http.StatusOK, code, "%s", b)
			require.True(t, bytes.Equal(want, b), "manager %s serves item %s's GLB", m.name, id)
		}
	}

	// Both farms converted, and moved every byte with presigned URLs.
	for _, f := range farms {
		require.Equal(t, map[string]string{"input/storage": "1", "output/storage": "2"}, transfers(t, f), f.name, "the GLB and its thumbnail")
		// Logged after the completion the managers saw: it may trail.
		require.Eventually(t, func() bool { return strings.Contains(f.out.String(), "conversion job done") },
			5*time.Second, 10*time.Millisecond, "%s logs its job", f.name)
	}
	// The files are in the bucket, not in the managers' data directories.
	client := s3.Client(t)
	var keys []string
	for oi := range client.ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		require.NoError(t, oi.Err)
		keys = append(keys, oi.Key)
	}
	for _, id := range ids {
		require.Contains(t, keys, "items/"+id+"/outputs/"+map[string]string{ids[0]: "one", ids[1]: "two"}[id]+".part.glb")
	}

	// A manager with a wrong secret does not start, and says why without
	// the keys.
	bad := startDrover(t, "manager-bad",
		[]string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-7c1d"}, nil,
		append([]string{"manager", "--addr", "127.0.0.1:0", "--farm-token", farmToken, "--data", t.TempDir()}, s3Args...)...)
	require.Error(t, bad.wait(t, 30*time.Second))
	require.Contains(t, bad.out.String(), "AccessDenied")

	// No credential anywhere: logs, /status, error bodies.
	var bodies []string
	for _, m := range ms {
		for _, path := range []string{"/status", "/api/items", "/api/file/" + ids[0] + "/scs", "/api/file/nosuch/glb",
			"/api/data/nosuch"} {
			_, b := get(t, "http://"+m.base+path, "")
			bodies = append(bodies, string(b))
		}
		_, st := get(t, "http://"+m.base+"/status", "")
		require.Contains(t, string(st), "s3://"+bucket)
	}
	for _, f := range farms {
		_, b := get(t, "http://"+f.base+"/status", farmToken)
		bodies = append(bodies, string(b))
	}
	for _, secret := range []string{s3.AccessKey, s3.SecretKey, "wrong-secret-7c1d"} {
		for _, p := range append(append(ms, farms...), bad) {
			require.NotContains(t, p.out.String(), secret, "%s's output", p.name)
		}
		for _, b := range bodies {
			require.NotContains(t, b, secret)
		}
	}
	require.NotContains(t, strings.Join(bodies, ""), "X-Amz-Credential", "no presigned URL in a body")
}

// TestUpS3: `drover up` with S3 storage keeps the files in the bucket and
// the item records in --data; after a restart it serves the same item.
func TestUpS3(t *testing.T) {
	t.Parallel()
	s3 := s3test.Start(t)
	bucket := s3.Bucket(t)
	dir := t.TempDir()
	glb := triangleGLB(t, dir)
	want, err := os.ReadFile(glb)
	require.NoError(t, err)
	config := filepath.Join(dir, "up.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .part
    argv: ["cp", %q, "{out}"]
s3_bucket: %s
s3_endpoint: http://%s
s3_region: %s
s3_path_style: true
`, glb, bucket, s3.Endpoint, s3test.Region), 0o644))
	data := filepath.Join(dir, "data")
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
	up := func(name string) *droverProc {
		return startDrover(t, name, env, bannerRE, "up", "--addr", "127.0.0.1:0", "--data", data, "--instances", "1",
			"--warm", "0", "--job-slots", "1", "--config", config, "--log-level", "debug")
	}
	first := up("up-1")
	// The banner's match is its first lines; the rest may still be on its
	// way through the pipe.
	require.Eventually(t, func() bool { return strings.Contains(first.out.String(), "files in bucket "+bucket) },
		5*time.Second, 10*time.Millisecond, "the banner names the bucket:\n%s", first.out.String())
	id := uploadFile(t, first.base, `{"conversionCommandLine":["--output_glb"]}`, "m.part", []byte("anything"))
	var data1 itemData
	require.Eventually(t, func() bool {
		getJSON(t, "http://"+first.base+"/api/data/"+id, "", &data1)
		return data1.ConversionState != "PENDING"
	}, time.Minute, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", data1.ConversionState, data1.DetailedError)
	first.stop(t)

	// The record is in --data, the files are not.
	_, err = os.Stat(filepath.Join(data, "items", id, "item.json"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(data, "items", id, "outputs"))
	require.ErrorIs(t, err, os.ErrNotExist)

	second := up("up-2")
	code, b := get(t, "http://"+second.base+"/api/file/"+id+"/glb", "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	require.True(t, bytes.Equal(want, b))
	for _, p := range []*droverProc{first, second} {
		for _, secret := range []string{s3.AccessKey, s3.SecretKey} {
			require.NotContains(t, p.out.String(), secret)
		}
	}
}
