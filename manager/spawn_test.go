package manager_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/session"
)

// A start that timed out on the farm is final: the farm has waited out the
// pool's start timeout (after the spawn retries its pool allows), and the
// manager does not start another round. test/e2e checks the same for a
// remote farm and a dial pool.
func TestStartTimeoutIsNotRetried(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, err := farm.New(farm.Config{Slots: 1, Registerer: reg, Pools: []farm.PoolSpec{{
		Name: "mute", Command: "sleep", Args: []string{"60"}, StartTimeout: 200 * time.Millisecond,
	}}})
	require.NoError(t, err)
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "mute"}}})
	require.NoError(t, err)
	m.AddFarm(f)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
		srv.Close()
		require.NoError(t, f.Close(ctx))
	})

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	c := &client{t: t, ws: ws}
	fr := c.expect("error")
	require.Equal(t, session.CodeInternal, fr.Error.Code)
	require.Contains(t, fr.Error.Message, "start timeout")
	// A plain sentence: the cause's chain, with the farm and instance ids,
	// goes to the log only.
	require.Equal(t, "could not start an instance: not ready within start timeout", fr.Error.Message)
	require.Equal(t, websocket.CloseInternalServerErr, c.closeCode())
	families, err := reg.Gather()
	require.NoError(t, err)
	var timeouts float64
	for _, mf := range families {
		if mf.GetName() != "drover_farm_instance_starts_total" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "timeout" {
					timeouts += metric.GetCounter().GetValue()
				}
			}
		}
	}
	require.Equal(t, 1.0, timeouts, "one start, not one per manager attempt")
}
