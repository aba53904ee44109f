package farm_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/testkit/cadtest"
)

// TestJobsShatterInProcess runs a processShattered job on a farm that
// reads its input in place (the local farm of `drover up`): the nested
// assembly's two distinct parts and the index become the item's Shattered
// list, each part a valid GLB in the manager's storage.
func TestJobsShatterInProcess(t *testing.T) {
	models := cadtest.Models(t)
	svc, _ := newJobService(t, queue.Options{})
	runJobs(t, farm.JobsConfig{Source: svc, Farm: "local", Slots: 1, ReadLocal: true})
	step, err := os.ReadFile(filepath.Join(models, "nested.step"))
	require.NoError(t, err)
	ctx := context.Background()
	it, err := svc.Upload(ctx, conversion.Options{ProcessShattered: true, CommandLine: []string{"--output_glb"}},
		"frame.step", strings.NewReader(string(step)))
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	it, err = svc.Wait(wctx, it.ID)
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, it.State, it.DetailedError)
	var names []string
	for _, f := range it.Shattered {
		names = append(names, f.Name+" "+f.Type)
	}
	require.Equal(t, []string{"Cube_x.glb glb", "Pin.glb glb", "index.xml xml"}, names)
	for _, f := range it.Shattered[:2] {
		obj, info, err := svc.OpenShattered(ctx, it.ID, f.Name)
		require.NoError(t, err)
		g, err := convert.InspectGLB(obj.(io.ReaderAt), info.Size)
		obj.Close()
		require.NoError(t, err, f.Name)
		require.Equal(t, 12, g.Triangles, "%s is a box", f.Name)
	}
	obj, _, err := svc.OpenShatteredIndex(ctx, it.ID)
	require.NoError(t, err)
	idx, err := io.ReadAll(obj)
	obj.Close()
	require.NoError(t, err)
	require.Contains(t, string(idx), `name="Top &amp; &lt;Frame&gt;"`)
	require.Contains(t, string(idx), `name="Cube [é] $x"`)
}

// TestJobClientShatteredOutputRoute: the job client sends an output named
// shattered/<file> to the job API's shattered route, its file escaped, and
// any other name to the output route.
func TestJobClientShatteredOutputRoute(t *testing.T) {
	paths := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.EscapedPath()
		n, _ := io.Copy(io.Discard, r.Body)
		_ = json.NewEncoder(w).Encode(farmapi.JobOutput{Size: n})
	}))
	defer srv.Close()
	c := farm.NewJobClient(func() []string { return []string{srv.URL} }, "tok", nil)
	for name, want := range map[string]string{
		"shattered/Bolt.glb":  farmapi.PathJobs + "/j.0/output/shattered/Bolt.glb",
		"shattered/a b.glb":   farmapi.PathJobs + "/j.0/output/shattered/a%20b.glb",
		"model.step.glb":      farmapi.PathJobs + "/j.0/output/model.step.glb",
		"shattered/index.xml": farmapi.PathJobs + "/j.0/output/shattered/index.xml",
	} {
		n, err := c.PutJobOutput(context.Background(), "j.0", "lease", name, strings.NewReader("abc"))
		require.NoError(t, err)
		require.EqualValues(t, 3, n)
		require.Equal(t, want, <-paths)
	}
}
