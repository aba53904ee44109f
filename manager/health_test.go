package manager_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/manager"
)

// A health hook chooses /health's status code and body; /status says a
// custom rule is in force rather than showing a threshold that does not
// apply.
func TestHealthHook(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hook     func(manager.Capacity) (int, any)
		code     int
		body     string
		rule     string
		healthy  bool
		hasLimit bool
	}{
		{
			name:     "no hook: the threshold rule",
			code:     http.StatusServiceUnavailable,
			body:     `{"status":"no capacity","busy":0,"slots":0,"ratio":1}`,
			rule:     "threshold",
			hasLimit: true,
		},
		{
			name: "status and body of the hook",
			hook: func(c manager.Capacity) (int, any) {
				return http.StatusTooManyRequests, map[string]any{"free": c.Slots - c.Busy, "why": "full"}
			},
			code: http.StatusTooManyRequests,
			body: `{"free":0,"why":"full"}`,
			rule: "custom",
		},
		{
			name:    "a hook that passes without slots, and the usual body",
			hook:    func(manager.Capacity) (int, any) { return 0, nil },
			code:    http.StatusOK,
			body:    `{"status":"ok","busy":0,"slots":0,"ratio":1}`,
			rule:    "custom",
			healthy: true,
		},
		{
			name: "a failing code with the usual body",
			hook: func(manager.Capacity) (int, any) { return http.StatusServiceUnavailable, nil },
			code: http.StatusServiceUnavailable,
			body: `{"status":"unhealthy","busy":0,"slots":0,"ratio":1}`,
			rule: "custom",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default"}}, Health: tc.hook})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, m.Shutdown(context.Background())) })

			rec := httpGet(m, "/health")
			require.Equal(t, tc.code, rec.Code)
			require.JSONEq(t, tc.body, rec.Body.String())

			var st struct {
				Capacity map[string]any `json:"capacity"`
			}
			require.NoError(t, json.Unmarshal(httpGet(m, "/status").Body.Bytes(), &st))
			require.Equal(t, tc.rule, st.Capacity["rule"])
			require.Equal(t, tc.healthy, st.Capacity["healthy"])
			threshold, ok := st.Capacity["threshold"]
			require.Equal(t, tc.hasLimit, ok, "threshold shown only when it applies")
			if ok {
				require.InDelta(t, 0.9, threshold, 1e-9)
			}
			require.Equal(t, tc.healthy, m.Status().Capacity.Healthy)
		})
	}
}
