package farm_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/testkit/s3test"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// spoilURLs is a job source whose leases carry input URLs with a broken
// signature, as an expired URL would be refused.
type spoilURLs struct{ *farm.JobClient }

func (s spoilURLs) LeaseJobs(ctx context.Context, req farmapi.LeaseRequest) ([]farmapi.JobLease, error) {
	ls, err := s.JobClient.LeaseJobs(ctx, req)
	for i := range ls {
		for k := range ls[i].Inputs {
			ls[i].Inputs[k].URL = strings.Replace(ls[i].Inputs[k].URL, "X-Amz-Signature=", "X-Amz-Signature=0", 1)
		}
	}
	return ls, err
}

func transferCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "drover_farm_job_transfers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out[l["direction"]+"/"+l["via"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// TestJobsS3: with S3 storage a farm over the job API downloads inputs
// from the lease's presigned URLs and uploads outputs to URLs from
// output-url; a URL that S3 refuses sends it through the manager.
func TestJobsS3(t *testing.T) {
	assimp := testutil.Program(t, "assimp", "assimp-utils")
	srv := s3test.Start(t)
	st := srv.Storage(t)
	q, err := queue.NewMemory(queue.Options{})
	require.NoError(t, err)
	svc, err := conversion.New(conversion.Config{Storage: st, Items: items.NewMemory(), Queue: q, Close: true,
		PresignTTL: time.Minute})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
	})

	dir := t.TempDir()
	stl, glb := filepath.Join(dir, "cube.stl"), filepath.Join(dir, "cube.glb")
	require.NoError(t, os.WriteFile(stl, []byte(cubeSTL), 0o644))
	out, err := exec.Command(assimp, "export", stl, glb, "-fglb2").CombinedOutput()
	require.NoError(t, err, "%s", out)
	reg := convert.NewRegistry(convert.Programs{})
	// The converter checks that it got the uploaded bytes.
	reg.Register(".part", convert.Entry{GLB: convert.Exec{Argv: []string{"sh", "-c",
		`grep -q "payload" "$1" && cp "$2" "$3"`, "sh", "{in}", glb, "{out}"}}})
	conv, err := convert.New(convert.Config{Registry: reg})
	require.NoError(t, err)

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	api.New(svc, api.Options{}).MountFarm(r, func(c *gin.Context) {
		if c.GetHeader("Authorization") != "Bearer tok" {
			c.AbortWithStatus(http.StatusUnauthorized)
		}
	})
	hs := httptest.NewServer(r)
	defer hs.Close()
	client := farm.NewJobClient(func() []string { return []string{hs.URL} }, "tok", nil)

	ctx := context.Background()
	opts := conversion.Options{CommandLine: []string{"--output_glb"}}
	convertOne := func(source farm.JobSource) map[string]float64 {
		t.Helper()
		promReg := prometheus.NewRegistry()
		jctx, cancel := context.WithCancel(ctx)
		j, err := farm.NewJobs(farm.JobsConfig{Source: source, Farm: "f", Slots: 1, Converter: conv,
			WorkDir: t.TempDir(), PollWait: time.Second, Registerer: promReg})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- j.Run(jctx) }()
		defer func() {
			cancel()
			require.NoError(t, <-done)
		}()
		it, err := svc.Upload(ctx, opts, "m.part", strings.NewReader("payload"))
		require.NoError(t, err)
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		it, err = svc.Wait(wctx, it.ID)
		require.NoError(t, err)
		require.Equal(t, items.StateSuccess, it.State, it.DetailedError)
		obj, _, err := svc.OpenOutput(ctx, it.ID, "glb")
		require.NoError(t, err)
		require.NoError(t, obj.Close())
		return transferCounts(t, promReg)
	}
	require.Equal(t, map[string]float64{"input/storage": 1, "output/storage": 1}, convertOne(client))
	require.Equal(t, map[string]float64{"input/manager": 1, "output/storage": 1}, convertOne(spoilURLs{client}),
		"a refused URL: the input comes through the manager")

	// output-url presigns only for the lease's holder and output names.
	_, err = svc.JobOutputURL(ctx, "nosuchitem.0", "token", "m.glb")
	require.ErrorIs(t, err, farmapi.ErrLeaseLost)
	_, err = svc.JobOutputURL(ctx, "nosuchitem.0", "token", "../m.glb")
	require.ErrorIs(t, err, farmapi.ErrBadJobRequest)
	fsSvc, _ := newJobService(t, queue.Options{})
	_, err = fsSvc.JobOutputURL(ctx, "nosuchitem.0", "token", "m.glb")
	require.ErrorIs(t, err, farmapi.ErrBadJobRequest, "the data directory takes outputs through the manager")
}
