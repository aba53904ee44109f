package farm

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/farmapi"
)

// TestSecondStreamSessionIsACacheHit: the second streaming session of a
// model gets its file from the farm's cache and fetches nothing; a new
// version of the item's file is fetched again.
func TestSecondStreamSessionIsACacheHit(t *testing.T) {
	t.Parallel()
	cache, err := modelcache.Open(modelcache.Config{Dir: t.TempDir(), MaxBytes: modelcache.MB})
	require.NoError(t, err)
	defer cache.Close()
	var fetches atomic.Int32
	bodies := map[string]string{"v1": "glTF cube", "v2": "glTF cube v2"}
	fetch := ModelFetcherFunc(func(_ context.Context, f farmapi.ModelFile, w io.Writer) (int64, error) {
		fetches.Add(1)
		return io.Copy(w, strings.NewReader(bodies[f.Version]))
	})
	root := t.TempDir()
	p := adapterPool("sc", "listen", ProtocolStream)
	p.InitialUse = time.Hour
	f := newTestFarm(t, Config{Slots: 2, Pools: []PoolSpec{p}, SessionsDir: root, Models: fetch, Cache: cache})
	require.Same(t, cache, f.Cache())

	session := func(version, want string) {
		t.Helper()
		inst, err := f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true})
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)
		ctx := startCtx(t)
		require.NoError(t, f.AddSessionFiles(ctx, inst.ID, []farmapi.ModelFile{
			{Name: "cube.glb", Item: "i1", Source: "i1.glb", Version: version, Size: int64(len(want))}}))
		dir := filepath.Join(root, entries(t, root)[0])
		b, err := os.ReadFile(filepath.Join(dir, "cube.glb"))
		require.NoError(t, err)
		require.Equal(t, want, string(b))
		require.NoError(t, f.StopInstance(ctx, inst.ID))
	}
	session("v1", "glTF cube")
	require.EqualValues(t, 1, fetches.Load())
	session("v1", "glTF cube")
	require.EqualValues(t, 1, fetches.Load(), "the second session of the model fetches nothing")
	st := cache.Stats()
	require.EqualValues(t, 1, st.Hits)
	require.EqualValues(t, 1, st.Misses)
	require.Equal(t, 0, st.Pinned)
	require.EqualValues(t, 1, f.Status().Cache.Hits, "the farm's status shows the cache")

	session("v2", "glTF cube v2")
	require.EqualValues(t, 2, fetches.Load(), "a reconverted file is fetched, never served stale")
}
