//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/testkit/clustertest"
	"github.com/drover-dev/drover/internal/testkit/convtest"
)

// load is the steady mixed load of a chaos run: WebSocket sessions, REST
// sessions and conversion jobs, each kind from workers of its own.
type load struct {
	c      *clustertest.Cluster
	l      *ledger
	epochs *epochs
	hooks  *receiver
	// stall: how long a client waits for a frame before it pings; limit:
	// how long an answer may take while pongs come.
	stall, limit time.Duration
}

// wsWorker runs WebSocket sessions one after the other until ctx ends.
// Each sets a value, runs echo, get (which must find the value), pid
// (which records the binding), short sleeps, sometimes drops its
// connection and resumes, sometimes crashes its instance (the worker's
// crash command, a kill of the instance), and logs out.
func (ld *load) wsWorker(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		ld.wsSession(ctx, rng)
	}
}

func (ld *load) wsSession(ctx context.Context, rng *rand.Rand) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s, err := open(octx, ld.l, wsURL(ld.c))
	cancel()
	if err != nil {
		var ae *answerError
		if errors.As(err, &ae) {
			ld.l.op("ws open refused")
			ld.l.answer(ae.code, ae.message)
		} else {
			ld.l.op("ws open failed")
		}
		pause(ctx, 300*time.Millisecond)
		return
	}
	ld.l.op("ws open")
	farm := ld.farmOf(s.id)
	value := strconv.FormatInt(rng.Int63(), 36)
	st := &sessState{s: s, farm: farm}
	if !ld.task(ctx, st, "set", `{"command":"set","key":"k","value":"`+value+`"}`) {
		return
	}
	st.value = value // set: from now on every get must find it
	if !ld.pid(ctx, st) {
		return
	}
	n := 5 + rng.Intn(20)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		ok := true
		switch p := rng.Intn(100); {
		case p < 50:
			ok = ld.task(ctx, st, "echo", `{"command":"echo","i":`+strconv.Itoa(i)+`}`)
		case p < 65:
			ok = ld.get(ctx, st)
		case p < 75:
			ok = ld.pid(ctx, st)
		case p < 88:
			ok = ld.task(ctx, st, "sleep", `{"command":"sleep","ms":`+strconv.Itoa(50+rng.Intn(400))+`}`)
		case p < 99:
			ld.l.op("ws drop")
			s.drop()
			ok = ld.resume(ctx, st)
		default:
			ld.l.fault("instance kill (crash)")
			_, err := s.Execute(ctx, "crash", `{"command":"crash","code":9}`, ld.stall, ld.limit)
			ld.ended(st, err)
			return
		}
		if !ok {
			return
		}
	}
	ld.l.op("ws logout")
	s.logout()
}

// sessState is what a WebSocket session knows of itself.
type sessState struct {
	s    *tsess
	farm string
	// value is what set stored, once its done came ("" before: a set cut
	// with its connection may or may not have run).
	value string
	pid   int
}

// task runs one task; it reports whether the session goes on. A cut
// connection is resumed; an error answer ends the session.
func (ld *load) task(ctx context.Context, st *sessState, what, data string) bool {
	for {
		_, err := st.s.Execute(ctx, what, data, ld.stall, ld.limit)
		if err == nil {
			return true
		}
		if !errors.Is(err, errCut) || ctx.Err() != nil {
			ld.ended(st, err)
			return false
		}
		ld.l.op("ws resume after a cut")
		if !ld.resume(ctx, st) {
			return false
		}
		// The task was cut: the protocol says to count it failed, and a
		// client sends it again.
	}
}

// ended closes a session that got an error answer (or a cut it cannot
// resume from).
func (ld *load) ended(st *sessState, err error) {
	var ae *answerError
	if errors.As(err, &ae) {
		ld.l.op("ws ended by " + ae.code)
	}
	st.s.drop()
}

// get checks the session's value.
func (ld *load) get(ctx context.Context, st *sessState) bool {
	res, err := st.s.Execute(ctx, "get", `{"command":"get","key":"k"}`, ld.stall, ld.limit)
	if err != nil {
		if errors.Is(err, errCut) && ctx.Err() == nil {
			ld.l.op("ws resume after a cut")
			return ld.resume(ctx, st)
		}
		ld.ended(st, err)
		return false
	}
	if st.value != "" && (len(res) != 1 || !strings.Contains(string(res[0]), `"`+st.value+`"`)) {
		ld.l.note("session %s: get k = %s, want %s", st.s.id, res, st.value)
	}
	return true
}

// pid records the session's binding to its instance's process.
func (ld *load) pid(ctx context.Context, st *sessState) bool {
	res, err := st.s.Execute(ctx, "pid", `{"command":"pid"}`, ld.stall, ld.limit)
	if err != nil {
		if errors.Is(err, errCut) && ctx.Err() == nil {
			ld.l.op("ws resume after a cut")
			return ld.resume(ctx, st)
		}
		ld.ended(st, err)
		return false
	}
	var p struct {
		PID      int    `json:"pid"`
		Instance string `json:"instance"`
	}
	if len(res) != 1 || json.Unmarshal(res[0], &p) != nil || p.PID == 0 {
		ld.l.note("session %s: pid answered %s", st.s.id, res)
		return true
	}
	if st.pid == 0 {
		st.pid = p.PID
	}
	ld.l.bound(binding{session: st.s.id, instance: p.Instance, farm: st.farm, epoch: ld.epochs.of(st.farm), pid: p.PID, at: time.Now()})
	return true
}

// resume reattaches a session whose connection is gone, trying for up to
// 20 s (the grace is 30 s) while the managers are unreachable; a resumed
// session must be on its instance, with its process and its value. It
// reports whether the session goes on.
func (ld *load) resume(ctx context.Context, st *sessState) bool {
	deadline := time.Now().Add(20 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		inst, err := st.s.reattach(dctx)
		cancel()
		var ae *answerError
		switch {
		case err == nil:
			ld.l.op("ws resume")
			return ld.checkResumed(ctx, st, inst)
		case errors.As(err, &ae):
			// not_found (the instance died meanwhile and the session with
			// it), instance_lost, ...: an answer.
			ld.l.op("ws resume refused")
			ld.l.answer(ae.code, ae.message)
			return false
		case !errors.Is(err, errCut):
			ld.l.resumed(resumeRec{session: st.s.id, why: err.Error()})
			return false
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			ld.l.op("ws resume gave up")
			return false
		}
		pause(ctx, 250*time.Millisecond)
	}
}

func (ld *load) checkResumed(ctx context.Context, st *sessState, inst string) bool {
	if inst != st.s.instance {
		ld.l.resumed(resumeRec{session: st.s.id, why: fmt.Sprintf("instance %s, want %s", inst, st.s.instance)})
		return false
	}
	res, err := st.s.Execute(ctx, "get", `{"command":"get","key":"k"}`, ld.stall, ld.limit)
	if err != nil {
		// The resumed session broke again before it could be checked.
		ld.l.op("ws resume unchecked")
		if errors.Is(err, errCut) && ctx.Err() == nil {
			return ld.resume(ctx, st)
		}
		ld.ended(st, err)
		return false
	}
	if st.value != "" && (len(res) != 1 || !strings.Contains(string(res[0]), `"`+st.value+`"`)) {
		why := fmt.Sprintf("resumed at %s on instance %s (farm %s): get k = %s, want %s", time.Now().Format("15:04:05.000"),
			inst, st.farm, res, st.value)
		if pr, err := st.s.Execute(ctx, "pid", `{"command":"pid"}`, ld.stall, ld.limit); err == nil {
			why += fmt.Sprintf("; pid %s, was %d", pr, st.pid)
		}
		ld.l.resumed(resumeRec{session: st.s.id, why: why})
		return true
	}
	before := st.pid
	if !ld.pid(ctx, st) {
		return false
	}
	ld.l.mu.Lock()
	last := ld.l.obs[len(ld.l.obs)-1]
	ld.l.mu.Unlock()
	if before != 0 && last.session == st.s.id && last.pid != before {
		ld.l.resumed(resumeRec{session: st.s.id, why: fmt.Sprintf("pid %d, want %d", last.pid, before)})
		return true
	}
	ld.l.resumed(resumeRec{session: st.s.id, ok: true})
	return true
}

// farmOf asks the managers where the session's instance runs.
func (ld *load) farmOf(id string) string {
	_, farm, err := ld.c.Where(id)
	if err != nil {
		return "?"
	}
	return farm
}

// restWorker runs REST sessions: login (waiting for an instance), a few
// tasks, logout.
func (ld *load) restWorker(ctx context.Context, rng *rand.Rand) {
	hc := &http.Client{Timeout: 30 * time.Second}
	for ctx.Err() == nil {
		var login struct {
			Status, ID, Code, Message string
		}
		if err := getJSON(ctx, hc, ld.c.URL+"/login?wait=true", &login); err != nil || login.Status != "permitted" {
			ld.l.op("rest login refused")
			if login.Code != "" {
				ld.l.answer(login.Code, login.Message)
			}
			pause(ctx, 300*time.Millisecond)
			continue
		}
		ld.l.op("rest login")
		for i := 0; i < 3+rng.Intn(8) && ctx.Err() == nil; i++ {
			key := "rest-" + login.ID + "/" + strconv.Itoa(i)
			r := ld.l.sent(key, "rest echo")
			resp, err := hc.Post(ld.c.URL+"/execute/"+login.ID, "application/json", strings.NewReader(`{"command":"echo","i":`+strconv.Itoa(i)+`}`))
			if err != nil {
				ld.l.cutTask(r)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ld.l.answered(key, "done")
				continue
			}
			var e struct{ Code, Message string }
			_ = json.Unmarshal(body, &e)
			if e.Code == "" {
				// HAProxy's own page (no manager answered): the request
				// never reached a session.
				ld.l.cutTask(r)
				e.Code = "http " + strconv.Itoa(resp.StatusCode)
			} else {
				ld.l.answered(key, e.Code)
			}
			ld.l.answer(e.Code, e.Message)
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadGateway {
				break // the session is over
			}
		}
		var out struct{ Status string }
		if err := getJSON(ctx, hc, ld.c.URL+"/logout/"+login.ID, &out); err == nil {
			ld.l.op("rest logout")
		}
	}
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// jobWorker uploads a model with a webhook, waits for the item to end,
// and uploads the next; one in ten is broken and must end in ERROR.
func (ld *load) jobWorker(ctx context.Context, rng *rand.Rand, n int) {
	for i := 0; ctx.Err() == nil; i++ {
		broken := rng.Intn(10) == 0
		name, body := "cube.obj", convtest.CubeOBJ()
		if broken {
			name, body = "broken.obj", brokenOBJ
		}
		j := &jobRec{name: fmt.Sprintf("w%d-%d-%s", n, i, name), broken: broken}
		id, err := ld.upload(ctx, j.name, body)
		if err != nil {
			ld.l.op("job upload refused")
			pause(ctx, time.Second)
			continue
		}
		ld.l.op("job upload")
		j.item = id
		ld.l.job(j)
		ld.follow(ctx, j, 2*time.Minute)
	}
}

// follow polls the item until it ends, or within passes.
func (ld *load) follow(ctx context.Context, j *jobRec, within time.Duration) {
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: 5 * time.Second}
	for time.Now().Before(deadline) {
		var it map[string]any
		if err := getJSON(context.Background(), hc, ld.c.URL+"/api/data/"+j.item, &it); err == nil {
			state, _ := it["conversionState"].(string)
			ld.l.mu.Lock()
			if n := len(j.states); n == 0 || j.states[n-1] != state {
				j.states = append(j.states, state)
			}
			if terminal(state) {
				j.final = it
			}
			ld.l.mu.Unlock()
			if terminal(state) {
				return
			}
		}
		if ctx.Err() != nil && within > time.Minute {
			// The load is over: the end's settle follows the rest.
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func terminal(state string) bool { return state == "SUCCESS" || strings.HasPrefix(state, "ERROR") }

// upload sends a model with a webhook to the test's receiver; it asks
// for a GLB only (the cluster's farms have assimp, no thumbnailer).
func (ld *load) upload(ctx context.Context, name, body string) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		return "", err
	}
	_, _ = fw.Write([]byte(body))
	_ = mw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ld.c.URL+"/api/upload", &buf)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	arg, _ := json.Marshal(map[string]any{"webhook": ld.hooks.url, "conversionCommandLine": []string{"--output_glb"}})
	req.Header.Set("CS-API-Arg", string(arg))
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		ItemID string `json:"itemid"`
		Error  string `json:"ERROR"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.ItemID == "" {
		return "", fmt.Errorf("upload: HTTP %d %s %v", resp.StatusCode, out.Error, err)
	}
	return out.ItemID, nil
}

// epochs counts the restarts of each farm's container: a restarted
// container starts its pids over.
type epochs struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *epochs) of(farm string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[farm]
}

func (e *epochs) next(farm string) {
	e.mu.Lock()
	e.n[farm]++
	e.mu.Unlock()
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// brokenOBJ is no model at all.
const (
	brokenOBJ = "v 0 0 0\nf 1 2 3\n" // a face of vertices it does not have: assimp refuses it
)
