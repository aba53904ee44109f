package placement

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// refuseAll is a farm transport that reaches no farm: a fuzzed
// registration must not make the placer call out to the URL it names.
type refuseAll struct{}

func (refuseAll) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no farm in a fuzz test")
}

// FuzzRegisterHeartbeat decodes a farm's registration and heartbeat the way
// the manager's farm API does (encoding/json, as gin's ShouldBindJSON),
// and gives them to a placer on an in-memory store. A refused
// registration is ErrBadRegistration and leaves nothing, on the books or
// in the store; an accepted one is on both, its stored spec decodes to
// the request it was, its heartbeat finds it known, and deregistering it
// leaves nothing again.
func FuzzRegisterHeartbeat(f *testing.F) {
	reg := func(r farmapi.RegisterRequest) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	hb := func(h farmapi.Heartbeat) []byte {
		b, err := json.Marshal(h)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	ok := farmapi.RegisterRequest{ID: "f1", Name: "farm one", URL: "http://10.0.0.7:8282", Slots: 4, JobSlots: 2,
		Pools: []string{"default", "cad"}, Labels: map[string]string{"zone": "a"}, Priority: 3}
	withInstances := ok
	withInstances.Instances = []farmapi.Instance{{ID: "i1", Pool: "default", Farm: "f1", Addr: "10.0.0.7:9000",
		State: farmapi.StateReady, Started: time.Unix(1700000000, 0).UTC()}}
	f.Add(reg(ok), hb(farmapi.Heartbeat{Free: 4}))
	f.Add(reg(withInstances), hb(farmapi.Heartbeat{Free: 3, Instances: withInstances.Instances}))
	f.Add(reg(farmapi.RegisterRequest{ID: "f2", URL: "https://farm.example:443/base/", Slots: 0}),
		hb(farmapi.Heartbeat{Draining: true}))
	f.Add(reg(farmapi.RegisterRequest{ID: "bad id", URL: "http://h", Slots: 1}), []byte(`{}`))
	f.Add(reg(farmapi.RegisterRequest{ID: "f3", URL: "ftp://h", Slots: 1}), []byte(`{}`))
	f.Add(reg(farmapi.RegisterRequest{ID: "f4", URL: "http://h", Slots: -1}), []byte(`{}`))
	f.Add(reg(farmapi.RegisterRequest{ID: "f5", URL: "http://h", Slots: 100001}), []byte(`{}`))
	f.Add([]byte(`{"id":"f6","url":"http://h","slots":1e3}`), []byte(`{"free":1.5}`))
	f.Add([]byte(`{"id":"\u00e9","url":"http://h","slots":1}`), []byte(`null`))
	f.Add([]byte(`{"id":"f7","url":"http:/h","slots":1}`), []byte(`{"instances":[{"started":"x"}]}`))
	f.Add([]byte(`[]`), []byte(`{"free":-5}`))
	f.Add([]byte(`{"id":"f8","url":"http://[::1]:80","slots":1,"labels":{"":""},"pools":[""]}`), []byte(`{"free":0}`))

	st := store.NewMemory()
	p, err := New(Config{Store: st, ID: "m1", FarmClient: &http.Client{Transport: refuseAll{}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			f.Error(err)
		}
	}()
	f.Fuzz(func(t *testing.T, regBody, hbBody []byte) {
		var req farmapi.RegisterRequest
		if json.Unmarshal(regBody, &req) != nil {
			return // the manager answers 400 before placement sees it
		}
		_, err := p.Register(req)
		if err != nil {
			if !errors.Is(err, ErrBadRegistration) {
				t.Fatalf("a refused registration is not ErrBadRegistration: %v", err)
			}
			if onBooks(p, req.ID) || inStore(t, st, req.ID) != nil {
				t.Fatalf("the refused registration of %q was half applied", req.ID)
			}
			return
		}
		if !onBooks(p, req.ID) {
			t.Fatalf("farm %q registered but not on the books", req.ID)
		}
		sf := inStore(t, st, req.ID)
		if sf == nil {
			t.Fatalf("farm %q registered but not in the store", req.ID)
		}
		var back farmapi.RegisterRequest
		if err := json.Unmarshal(sf.Spec, &back); err != nil {
			t.Fatalf("stored spec does not decode: %v", err)
		}
		if !reflect.DeepEqual(normal(back), normal(req)) {
			t.Fatalf("stored spec %+v, registered %+v", back, req)
		}
		var beat farmapi.Heartbeat
		if json.Unmarshal(hbBody, &beat) == nil {
			known, _, err := p.Heartbeat(req.ID, beat)
			if err != nil || !known {
				t.Fatalf("heartbeat of registered farm %q: known %v, %v", req.ID, known, err)
			}
		}
		if !p.Deregister(req.ID) {
			t.Fatalf("deregister of registered farm %q", req.ID)
		}
		if onBooks(p, req.ID) || inStore(t, st, req.ID) != nil {
			t.Fatalf("farm %q deregistered but still there", req.ID)
		}
	})
}

// normal makes a request comparable after a JSON round trip: times lose
// their monotonic reading and location, empty maps and slices their
// difference from nil.
func normal(r farmapi.RegisterRequest) farmapi.RegisterRequest {
	b, _ := json.Marshal(r)
	var out farmapi.RegisterRequest
	_ = json.Unmarshal(b, &out)
	for i := range out.Instances {
		out.Instances[i].Started = out.Instances[i].Started.UTC()
	}
	return out
}

func onBooks(p *Placer, id string) bool {
	for _, fi := range p.Farms() {
		if fi.ID == id {
			return true
		}
	}
	return false
}

func inStore(t *testing.T, st store.Store, id string) *store.Farm {
	t.Helper()
	farms, err := st.Farms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range farms {
		if farms[i].ID == id {
			return &farms[i]
		}
	}
	return nil
}
