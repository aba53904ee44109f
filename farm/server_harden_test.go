package farm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The farm server's error bodies are plain sentences: no Go error chain,
// no address, no path; the log has the details. A body over its bound is
// 413.
func TestServerErrorBodiesPlain(t *testing.T) {
	ts := newTestServer(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}},
		ServerConfig{Require: func(context.Context, string, int) (bool, error) {
			return false, errors.New("register: Post \"http://10.1.2.3:8181/api/v1/farms\": dial tcp 10.1.2.3:8181: connect: connection refused")
		}})
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
	}{
		{"start, bad JSON", "POST", PathInstances, `{"pool":`, http.StatusBadRequest},
		{"start, unknown pool", "POST", PathInstances, `{"pool":"nope"}`, http.StatusNotFound},
		{"start, too large", "POST", PathInstances, `{"pool":"` + strings.Repeat("p", maxRequestBody) + `"}`, http.StatusRequestEntityTooLarge},
		{"stop, unknown instance", "DELETE", PathInstances + "/nope", "", http.StatusNotFound},
		{"files, bad JSON", "PUT", PathInstances + "/nope/files", `[`, http.StatusBadRequest},
		{"files, unknown instance", "PUT", PathInstances + "/nope/files", `{"files":[]}`, http.StatusNotFound},
		{"instance, unknown", "GET", PathInstance + "nope", "", http.StatusNotFound},
		{"require, manager unreachable", "GET", "/require/10.1.2.3/8181/1", "", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := ts.do(t, tc.method, tc.path, tc.body, nil)
			require.Equal(t, tc.code, code, body)
			var e struct{ Message string }
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			require.NotEmpty(t, e.Message)
			for _, f := range []string{": ", "10.1.2.3", "127.0.0.1", "dial tcp", "farm:", "/tmp"} {
				require.NotContains(t, e.Message, f)
			}
		})
	}
}
