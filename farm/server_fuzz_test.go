package farm

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/drover-dev/drover/proxy"
)

// FuzzServerRequests sends the farm server what managers and instances
// send it, with any path element, query and body: starts and session
// files (from the managers, with the token), liveliness reports (from an
// instance on this host, without one, about a stream instance the farm
// has or not) and awv3's /require. The farm has no pools, so nothing
// starts. Every answer is a JSON {"message"} with a
// status the API documents, never a 500; /require calls back only a
// well-formed http URL of the host and port it was given, offering 0 (all)
// to Slots slots.
func FuzzServerRequests(f *testing.F) {
	f.Add(uint8(0), "", "", []byte(`{"pool":"default"}`))
	f.Add(uint8(0), "", "", []byte(`{"pool":"p","model":"../../etc","session_dir":true}`))
	f.Add(uint8(0), "", "", []byte(`{"pool":""}`))
	f.Add(uint8(0), "", "", []byte(`{"pool":1}`))
	f.Add(uint8(1), "i1", "", []byte(`{"files":[{"name":"a.scs","item":"it","source":"a.scs","size":3,"version":"1"}]}`))
	f.Add(uint8(1), "i1", "", []byte(`{"files":[{"name":"../a","url":"http://x/"}]}`))
	f.Add(uint8(2), "i1", "liveliness=ready", []byte(nil))
	f.Add(uint8(2), "5f1e", "liveliness=ready", []byte(nil))
	f.Add(uint8(2), "5f1e", "liveliness=ping", []byte(nil))
	f.Add(uint8(2), "5f1e", "liveliness=disconnect", []byte(nil))
	f.Add(uint8(2), "5f1e", "liveliness=READY", []byte(nil))
	f.Add(uint8(2), "i1", "liveliness=disconnect", []byte(nil))
	f.Add(uint8(2), "", "liveliness=ping&liveliness=ready", []byte(nil))
	f.Add(uint8(2), "i1", "liveliness=%zz", []byte(nil))
	f.Add(uint8(3), "127.0.0.1/8181", "token=x", []byte(nil))
	f.Add(uint8(3), "manager.example/443/2", "", []byte(nil))
	f.Add(uint8(3), "::1/8181/all", "", []byte(nil))
	f.Add(uint8(3), "10.0.0.1/0/1", "", []byte(nil))
	f.Add(uint8(3), "10.0.0.1/65536/-1", "", []byte(nil))
	f.Add(uint8(3), "evil.example@x/80/3", "", []byte(nil))
	f.Add(uint8(3), "h/80/99999999999999999999", "", []byte(nil))
	f.Add(uint8(4), "i1", "", []byte(nil))
	f.Add(uint8(5), "", "", []byte(nil))

	const slots = 3
	fm := newTestFarm(f, Config{Slots: slots, Logger: slog.New(slog.DiscardHandler)})
	var mu sync.Mutex
	var called []string
	var offered []int
	relay := proxy.New(proxy.Options{})
	s, err := NewServer(fm, ServerConfig{Token: testToken, Relay: relay, OrphanGrace: -1,
		Require: func(_ context.Context, manager string, n int) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			called = append(called, manager)
			offered = append(offered, n)
			return true, nil
		}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	// A stream instance that reports its liveliness: on the books only,
	// starting (its watch is not armed, so reports start no timers), its
	// stop already asked for (so a "disconnect" stops nothing).
	sp, err := parsePool(PoolSpec{Name: "s", Command: "x", Protocol: ProtocolStream, Readiness: ReadinessLiveliness})
	if err != nil {
		f.Fatal(err)
	}
	const streamID = "5f1e"
	fm.mu.Lock()
	fm.instances[streamID] = &instance{id: streamID, pool: sp, stream: &streamWatch{ready: make(chan struct{})},
		state: StateStarting, stopping: true, exited: make(chan struct{})}
	fm.mu.Unlock()
	f.Cleanup(func() { // before the farm closes, which would stop it
		fm.mu.Lock()
		delete(fm.instances, streamID)
		fm.mu.Unlock()
	})

	f.Fuzz(func(t *testing.T, route uint8, elem, query string, body []byte) {
		var method, path string
		token := true
		switch route % 6 {
		case 0:
			method, path = http.MethodPost, PathInstances
		case 1:
			method, path = http.MethodPut, PathInstances+"/"+url.PathEscape(elem)+"/files"
		case 2:
			method, path, token = http.MethodPost, pathLiveliness+url.PathEscape(elem), false
		case 3:
			var parts []string
			for p := range strings.SplitSeq(elem, "/") {
				parts = append(parts, url.PathEscape(p))
			}
			method, path = http.MethodGet, pathRequire+strings.Join(parts, "/")
		case 4:
			if elem == streamID {
				elem = "i1" // no process to stop
			}
			method, path = http.MethodDelete, PathInstances+"/"+url.PathEscape(elem)
		default:
			method, path = http.MethodGet, PathStatus
		}
		target := path
		if query != "" {
			target += "?" + url.PathEscape(query)
			if q, err := url.ParseQuery(query); err == nil {
				target = path + "?" + q.Encode()
			}
		}
		req := httptest.NewRequest(method, "http://farm"+target, bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:40000"
		if token {
			req.Header.Set("Authorization", "Bearer "+testToken)
		}
		mu.Lock()
		called, offered = nil, nil
		mu.Unlock()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)

		switch w.Code {
		case http.StatusOK, http.StatusNoContent:
		case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			// The mux's own answer to an unclean path ("//").
			if !strings.Contains(path, "//") && !strings.Contains(path, "/.") {
				t.Fatalf("%s %s: redirected to %q", method, target, w.Header().Get("Location"))
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusMethodNotAllowed,
			http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable, http.StatusTooManyRequests:
			if w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed {
				if !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
					break // the mux's own answer to a path it does not route
				}
			}
			var e struct{ Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Message == "" {
				t.Fatalf("%s %s: %d %q is no JSON message", method, target, w.Code, w.Body)
			}
			if strings.Contains(e.Message, testToken) {
				t.Fatalf("%s %s: the answer names the token", method, target)
			}
		default:
			t.Fatalf("%s %s: answered %d %q", method, target, w.Code, w.Body)
		}
		if route%6 == 2 && elem == streamID {
			want := http.StatusBadRequest
			switch req.URL.Query().Get("liveliness") {
			case LivelinessReady, LivelinessPing, LivelinessDisconnect:
				want = http.StatusNoContent
			}
			if w.Code != want {
				t.Fatalf("%s: answered %d, want %d", target, w.Code, want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(called) > 0 {
			if w.Code != http.StatusOK || len(called) != 1 {
				t.Fatalf("%s: require called %v, answered %d", target, called, w.Code)
			}
			u, err := url.Parse(called[0])
			if err != nil || u.Scheme != "http" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
				t.Fatalf("%s: require called back %q", target, called[0])
			}
			host, port, err := net.SplitHostPort(u.Host)
			if err != nil || !validHost(host) {
				t.Fatalf("%s: require called back host %q", target, u.Host)
			}
			if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				t.Fatalf("%s: require called back port %q", target, port)
			}
			if offered[0] < 0 || offered[0] > slots {
				t.Fatalf("%s: require offered %d of %d slots", target, offered[0], slots)
			}
		}
		_, _ = io.Copy(io.Discard, w.Body)
	})
}
