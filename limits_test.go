package drover_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/manager"
)

// TestUploadLimitsWired: the manager's upload rate reaches the conversion
// API that package drover mounts on its router.
func TestUploadLimitsWired(t *testing.T) {
	srv, err := drover.New(drover.Config{
		Addr: "127.0.0.1:0",
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "default"},
			PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})}},
		Manager:    manager.Config{Limits: limits.Config{UploadRate: limits.Rate{PerSecond: 0.001, Burst: 1}}},
		Conversion: &drover.Conversion{DataDir: t.TempDir(), JobSlots: -1},
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	defer stop(t, srv)
	h := hoops{t: t, base: "http://" + srv.Addr().String()}

	code, b := h.call(http.MethodPut, "/api/create", "", nil, "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	code, b = h.call(http.MethodPut, "/caas_api/create", "", nil, "")
	require.Equal(t, http.StatusTooManyRequests, code, "%s", b)
	require.Contains(t, string(b), `"ERROR":"too many uploads; try again in `)
	req, err := http.NewRequest(http.MethodPut, h.base+"/api/create", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.Positive(t, ra)
	code, _ = h.call(http.MethodGet, "/api/items", "", nil, "")
	require.Equal(t, http.StatusOK, code, "reading is not uploading")
}
