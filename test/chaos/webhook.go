//go:build chaos

package chaos

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/testkit/clustertest"
)

// receiver is the webhook receiver of a chaos run, on the host's address
// on the cluster's network. It checks each delivery's signature and keeps
// the states each item's deliveries said.
type receiver struct {
	url string
	mu  sync.Mutex
	// seen: item id -> the states of its deliveries, by delivery id.
	seen map[string]map[string]string
	bad  int // deliveries with a bad signature or body
}

func startReceiver(t *testing.T, c *clustertest.Cluster) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(c.Gateway, "0"))
	if err != nil {
		t.Fatalf("webhook receiver on the cluster network's gateway: %v", err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/hook", seen: map[string]map[string]string{}}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	var hook struct {
		ID    string `json:"id"`
		State string `json:"conversionState"`
	}
	if err != nil || webhook.Verify(clustertest.WebhookSecret, req.Header, body, 0) != nil || json.Unmarshal(body, &hook) != nil || hook.ID == "" {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		http.Error(w, "bad webhook", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	if r.seen[hook.ID] == nil {
		r.seen[hook.ID] = map[string]string{}
	}
	r.seen[hook.ID][req.Header.Get("Drover-Delivery")] = hook.State
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// states returns the distinct states the deliveries about item said.
func (r *receiver) states(item string) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, s := range r.seen[item] {
		out[s] = true
	}
	return out
}

// deliveries returns the delivery ids of the webhooks about item.
func (r *receiver) deliveries(item string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.seen[item] {
		out = append(out, id)
	}
	return out
}
