package farm_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farm/modelcache"
)

// TestReconversionIsACacheHit: a farm that leases over the job API
// downloads an item's input once; its reconversion on the same farm reads
// the farm's cache and downloads nothing, as the manager's count of input
// requests and the farm's metrics show.
func TestReconversionIsACacheHit(t *testing.T) {
	requireConverters(t)
	svc, _ := newJobService(t, queue.Options{})
	var inputs atomic.Int32
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(func(c *gin.Context) {
		if c.Request.Method == http.MethodGet && strings.Contains(c.Request.URL.Path, "/input/") {
			inputs.Add(1)
		}
	})
	api.New(svc, api.Options{}).MountFarm(r, func(c *gin.Context) {})
	srv := httptest.NewServer(r)
	defer srv.Close()

	reg := prometheus.NewRegistry()
	cache, err := modelcache.Open(modelcache.Config{Dir: t.TempDir(), MaxBytes: modelcache.MB, Registerer: reg})
	require.NoError(t, err)
	defer cache.Close()
	runJobs(t, farm.JobsConfig{Farm: "remote", Slots: 1, Cache: cache, Registerer: reg,
		Source: farm.NewJobClient(func() []string { return []string{srv.URL} }, "tok", nil)})

	ctx := context.Background()
	it, err := svc.Upload(ctx, conversion.Options{}, "cube.stl", strings.NewReader(cubeSTL))
	require.NoError(t, err)
	waitSuccess(t, svc, it.ID)
	require.EqualValues(t, 1, inputs.Load(), "the first conversion downloads its input")
	require.Equal(t, modelcache.Stats{MaxBytes: modelcache.MB, UsedBytes: int64(len(cubeSTL)), Entries: 1, Misses: 1},
		cache.Stats())

	_, err = svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.NoError(t, err)
	got := waitSuccess(t, svc, it.ID)
	require.Equal(t, it.Generation+1, got.Generation)
	require.EqualValues(t, 1, inputs.Load(), "the reconversion downloads nothing")
	st := cache.Stats()
	require.EqualValues(t, 1, st.Hits)
	require.EqualValues(t, 1, st.Misses)
	require.Equal(t, 0, st.Pinned, "the job let its input go")
	require.InDelta(t, 1, metricValue(t, reg, "drover_farm_cache_hits_total"), 0)
	require.InDelta(t, 1, metricValue(t, reg, "drover_farm_cache_misses_total"), 0)
}

func waitSuccess(t *testing.T, svc *conversion.Service, id string) items.Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	it, err := svc.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, it.State, it.DetailedError)
	return it
}

// metricValue reads the one value of a counter or gauge in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
