package farm_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/storage"
)

// cubeSTL is the unit cube: convtest.CubeTriangles triangles.
var cubeSTL = convtest.CubeSTL()

func newJobService(t *testing.T, qo queue.Options) (*conversion.Service, *storage.FS) {
	t.Helper()
	st, err := storage.NewFS(t.TempDir())
	require.NoError(t, err)
	q, err := queue.NewMemory(qo)
	require.NoError(t, err)
	svc, err := conversion.New(conversion.Config{Storage: st, Items: items.NewMemory(), Queue: q, Close: true,
		ReclaimInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
		require.NoError(t, st.Close())
	})
	return svc, st
}

// runJobs runs job slots until the test ends.
func runJobs(t *testing.T, cfg farm.JobsConfig) *farm.Jobs {
	t.Helper()
	cfg.WorkDir = cmpOr(cfg.WorkDir, t.TempDir())
	cfg.PollWait = time.Second
	j, err := farm.NewJobs(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return j
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func requireConverters(t *testing.T) {
	for _, p := range []struct{ name, pkg string }{{"assimp", "assimp-utils"}, {"xvfb-run", "xvfb"}, {"f3d", "f3d"}} {
		testutil.Program(t, p.name, p.pkg)
	}
}

func TestJobsConvertInProcessAndOverHTTP(t *testing.T) {
	requireConverters(t)
	svc, _ := newJobService(t, queue.Options{})
	// One farm reads inputs in place from the service; the other leases
	// over the job API and downloads them.
	runJobs(t, farm.JobsConfig{Source: svc, Farm: "local", Slots: 1, ReadLocal: true})
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	api.New(svc, api.Options{}).MountFarm(r, func(c *gin.Context) {
		if c.GetHeader("Authorization") != "Bearer tok" {
			c.AbortWithStatus(http.StatusUnauthorized)
		}
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	remote := runJobs(t, farm.JobsConfig{Farm: "remote", Slots: 2,
		Source: farm.NewJobClient(func() []string { return []string{"http://127.0.0.1:1", srv.URL} }, "tok", nil)})
	require.Equal(t, 2, remote.Slots())

	ctx := context.Background()
	var ids []string
	for i := range 4 {
		it, err := svc.Upload(ctx, conversion.Options{}, fmt.Sprintf("cube%d.stl", i), strings.NewReader(cubeSTL))
		require.NoError(t, err)
		ids = append(ids, it.ID)
	}
	farms := map[string]bool{}
	for _, id := range ids {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		it, err := svc.Wait(wctx, id)
		cancel()
		require.NoError(t, err)
		require.Equal(t, items.StateSuccess, it.State, it.DetailedError)
		require.Len(t, it.Files, 2)
		obj, f, err := svc.OpenOutput(ctx, id, "glb")
		require.NoError(t, err)
		info, err := convert.InspectGLB(obj.(interface {
			ReadAt([]byte, int64) (int, error)
		}), f.Size)
		obj.Close()
		require.NoError(t, err)
		require.Equal(t, convtest.CubeTriangles, info.Triangles)
		farms[it.Name] = true
	}
	st := svc.Status(ctx)
	require.Len(t, st.Farms, 2)
	require.Equal(t, 3, st.JobSlots)
}

func TestJobsLeaseLostStopsTheConversion(t *testing.T) {
	svc, _ := newJobService(t, queue.Options{Lease: 300 * time.Millisecond})
	marks := t.TempDir()
	reg := convert.NewRegistry(convert.Programs{})
	// A converter that outlives its lease: the farm renews it, so it
	// finishes; the test then takes the lease away by reconverting.
	reg.Register(".slow", convert.Entry{GLB: convert.Exec{Argv: []string{"sh", "-c",
		`touch "$1/started.$$"; sleep 30`, "sh", marks}}})
	conv, err := convert.New(convert.Config{Registry: reg})
	require.NoError(t, err)
	runJobs(t, farm.JobsConfig{Source: svc, Farm: "f", Slots: 1, Converter: conv})
	ctx := context.Background()
	it, err := svc.Upload(ctx, conversion.Options{CommandLine: []string{"--output_glb"}}, "a.slow", strings.NewReader("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(marks, "started.*"))
		return len(m) == 1
	}, 10*time.Second, 20*time.Millisecond)
	// Renewals keep the lease past its length.
	time.Sleep(time.Second)
	got, err := svc.Get(ctx, it.ID)
	require.NoError(t, err)
	require.Equal(t, items.StatePending, got.State)
	require.Equal(t, 1, got.Attempts, "the lease was renewed, not reclaimed")

	// Deleting the item takes the lease: the farm stops the converter.
	require.NoError(t, svc.Delete(ctx, it.ID))
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(marks, "started.*"))
		for _, p := range m {
			var pid int
			_, _ = fmt.Sscanf(filepath.Ext(p), ".%d", &pid)
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the converter of a lost lease was killed")
}

func TestJobsDrainFinishesRunningConversions(t *testing.T) {
	assimp := testutil.Program(t, "assimp", "assimp-utils")
	svc, _ := newJobService(t, queue.Options{})
	dir := t.TempDir()
	stl, glb := filepath.Join(dir, "cube.stl"), filepath.Join(dir, "cube.glb")
	require.NoError(t, os.WriteFile(stl, []byte(cubeSTL), 0o644))
	out, err := exec.Command(assimp, "export", stl, glb, "-fglb2").CombinedOutput()
	require.NoError(t, err, "%s", out)
	marks := filepath.Join(dir, "runs")
	reg := convert.NewRegistry(convert.Programs{})
	reg.Register(".slow", convert.Entry{GLB: convert.Exec{Argv: []string{"sh", "-c",
		`echo run >> "$1"; sleep 1; cp "$2" "$3"`, "sh", marks, glb, "{out}"}}})
	conv, err := convert.New(convert.Config{Registry: reg})
	require.NoError(t, err)
	j := runJobs(t, farm.JobsConfig{Source: svc, Farm: "f", Slots: 1, Converter: conv})

	ctx := context.Background()
	opts := conversion.Options{CommandLine: []string{"--output_glb"}}
	first, err := svc.Upload(ctx, opts, "a.slow", strings.NewReader("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return j.Busy() == 1 }, 10*time.Second, 10*time.Millisecond)
	j.Drain()
	second, err := svc.Upload(ctx, opts, "b.slow", strings.NewReader("x"))
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	it, err := svc.Wait(wctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, it.State, "the running conversion finished")
	require.Eventually(t, func() bool { return j.Busy() == 0 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	it, err = svc.Get(ctx, second.ID)
	require.NoError(t, err)
	require.Equal(t, items.StatePending, it.State, "a drained farm leases nothing more")
	b, _ := os.ReadFile(marks)
	require.Equal(t, "run\n", string(b))
}
