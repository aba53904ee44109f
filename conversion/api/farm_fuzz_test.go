package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/farmapi"
)

// jobMessages are the sentences the farm job API answers refusals with.
var jobMessages = map[string]bool{
	"the job's lease is lost":                     true,
	"bad job request":                             true,
	"jobs are unavailable; try again":             true,
	"the body is larger than the job API accepts": true,
}

// FuzzFarmJobBodies posts any body to the farm job API's JSON routes
// (lease, renew, output-url, complete, fail) through the real gin
// handlers, on an in-memory service. The answer is never a 500: a lease
// is 200 with a jobs list, a refusal is 400, 409 or 413 with one of the
// API's plain sentences, never a decoder's error.
func FuzzFarmJobBodies(f *testing.F) {
	routes := []string{"lease", "renew", "output-url", "complete", "fail"}
	for i, body := range []string{
		`{"farm":"f1","max":2,"slots":2}`,
		`{"farm":"f1","max":0}`,
		`{"farm":"","max":-1,"slots":-3}`,
		`{"farm":"f1","max":1000000000,"wait_ms":-5}`,
		`{"farm":"f1","max":1,"wait_ms":10}`,
		`{"token":"t"}`,
		`{"token":"t","name":"../x.glb"}`,
		`{"token":"t","attempt":1,"outputs":[{"name":"a.glb","type":"glb","size":3}]}`,
		`{"token":"t","reason":"boom","detail":"x","final":true}`,
		`{"max":1.5}`,
		`[1,2]`,
		`{"farm":"f1"`,
		``,
	} {
		f.Add(uint8(i), "j1", []byte(body))
	}
	f.Add(uint8(0), "", []byte(`null`))
	f.Add(uint8(3), "../../etc", []byte(`{"token":"\u0000"}`))

	svc := newService(f)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	api.New(svc, api.Options{Version: "test"}).MountFarm(r, func(*gin.Context) {})

	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		path := farmapi.PathJobs + "/lease"
		if n := int(route) % len(routes); n > 0 {
			if id == "" || strings.Contains(id, "/") {
				id = "j1" // one path element, as gin routes it
			}
			path = farmapi.PathJobs + "/" + url.PathEscape(id) + "/" + routes[n]
		}
		// A lease with a wait returns when its wait is up or the farm
		// gives up: this farm gives up at once.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)

		switch w.Code {
		case http.StatusOK:
			if routes[int(route)%len(routes)] == "lease" {
				var resp farmapi.LeaseResponse
				if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Jobs == nil {
					t.Fatalf("lease answered %q", w.Body)
				}
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge,
			http.StatusServiceUnavailable:
			var e struct{ Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !jobMessages[e.Message] {
				t.Fatalf("%s %q: %d %q is not a plain refusal", path, body, w.Code, w.Body)
			}
			if w.Code == http.StatusServiceUnavailable && ctx.Err() == nil {
				t.Fatalf("%s %q: %d %q with an in-memory service", path, body, w.Code, w.Body)
			}
		default:
			t.Fatalf("%s %q: answered %d %q", path, body, w.Code, w.Body)
		}
	})
}
