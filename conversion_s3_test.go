package drover_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/s3test"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/manager"
)

// TestConversionS3: upload, convert and download with the files in a
// bucket of a real S3 server (versitygw). The local farm downloads the
// input and uploads the outputs with presigned URLs, not through the
// manager, and no credential shows in a log line, /status or an error.
func TestConversionS3(t *testing.T) {
	needConverters(t)
	s3 := s3test.Start(t)
	st := s3.Storage(t)
	var logs testutil.SyncBuffer
	reg := prometheus.NewRegistry()
	srv, err := drover.New(drover.Config{
		Addr:    "127.0.0.1:0",
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Manager: manager.Config{Registerer: reg, Gatherer: reg},
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "default"},
			PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})}},
		// Item records too go to the bucket here (Items nil): the
		// service needs nothing of a local disk.
		Conversion: &drover.Conversion{Storage: st, JobSlots: 1, PresignTTL: time.Minute,
			Webhook: webhook.Options{Secret: "s"}},
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	defer stop(t, srv)
	h := hoops{t: t, base: "http://" + srv.Addr().String()}

	id := h.upload("/api", "", "cube.stl", cubeSTL)["itemid"]
	var it itemView
	require.Eventually(t, func() bool {
		h.json(http.MethodGet, "/api/data/"+id, "", &it)
		return it.ConversionState != "PENDING"
	}, 2*time.Minute, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", it.ConversionState, it.DetailedError)

	code, glb := h.call(http.MethodGet, "/api/file/"+id+"/glb", "", nil, "")
	require.Equal(t, http.StatusOK, code)
	info, err := convert.InspectGLB(bytes.NewReader(glb), int64(len(glb)))
	require.NoError(t, err)
	require.Equal(t, convtest.CubeTriangles, info.Triangles)

	// The bytes are in the bucket: the upload, the outputs, the record.
	objs, err := st.List(t.Context(), "items/"+id+"/")
	require.NoError(t, err)
	var keys []string
	for _, o := range objs {
		keys = append(keys, strings.TrimPrefix(o.Key, "items/"+id+"/"))
	}
	require.Contains(t, keys, "outputs/cube.stl.glb")
	require.Contains(t, keys, "outputs/cube.stl.png")
	require.Contains(t, keys, "item.json")
	require.NotContains(t, strings.Join(keys, " "), "staging/", "staged outputs are cleaned up")
	obj, err := st.Open(t.Context(), "items/"+id+"/outputs/cube.stl.glb")
	require.NoError(t, err)
	stored, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.NoError(t, obj.Close())
	require.Equal(t, glb, stored)

	// The farm moved the bytes with presigned URLs.
	transfers, err := reg.Gather()
	require.NoError(t, err)
	direct := map[string]float64{}
	for _, mf := range transfers {
		if mf.GetName() != "drover_farm_job_transfers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			direct[labels["direction"]+"/"+labels["via"]] += m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{"input/storage": 1, "output/storage": 2}, direct)

	// A presigned upload with curl, then reconvert, ends SUCCESS; the
	// download token is a presigned GET that curl fetches.
	curl := testutil.Program(t, "curl", "curl")
	var up struct {
		Token  string `json:"token"`
		ItemID string `json:"itemid"`
	}
	require.Equal(t, http.StatusOK, h.json(http.MethodGet, "/api/uploadToken/tokened%20cube.stl", "", &up))
	require.Contains(t, up.Token, "X-Amz-Signature=", "an S3 presigned URL, not drover's own")
	require.NotContains(t, up.Token, s3.SecretKey)
	stl := filepath.Join(t.TempDir(), "cube.stl")
	require.NoError(t, os.WriteFile(stl, []byte(cubeSTL), 0o600))
	out, err := exec.Command(curl, "-sSf", "-T", stl, up.Token).CombinedOutput()
	require.NoError(t, err, "curl upload: %s", out)
	code, b := h.call(http.MethodPut, "/api/reconvert/"+up.ItemID, "", nil, "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	require.Eventually(t, func() bool {
		h.json(http.MethodGet, "/api/data/"+up.ItemID, "", &it)
		return it.ConversionState != "PENDING" && it.ConversionState != "UPLOADING"
	}, 2*time.Minute, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", it.ConversionState, it.DetailedError)
	var down struct {
		Token string `json:"token"`
	}
	require.Equal(t, http.StatusOK, h.json(http.MethodGet, "/api/downloadToken/"+up.ItemID+"/glb", "", &down))
	got, err := exec.Command(curl, "-sSf", down.Token).Output()
	require.NoError(t, err)
	info, err = convert.InspectGLB(bytes.NewReader(got), int64(len(got)))
	require.NoError(t, err)
	require.Equal(t, convtest.CubeTriangles, info.Triangles)

	// Errors (a missing output, a missing item) and what lists the
	// state.
	var bodies []string
	for _, path := range []string{"/api/file/" + id + "/scs", "/api/file/nosuchitem/glb", "/api/data/nosuchitem",
		"/status", "/api/items"} {
		_, b := h.call(http.MethodGet, path, "", nil, "")
		bodies = append(bodies, string(b))
	}
	_, status := h.call(http.MethodGet, "/status", "", nil, "")
	require.Contains(t, string(status), st.String(), "/status says where the files are")
	for _, secret := range []string{s3.AccessKey, s3.SecretKey} {
		require.NotContains(t, logs.String(), secret)
		for _, b := range bodies {
			require.NotContains(t, b, secret)
		}
	}
}
