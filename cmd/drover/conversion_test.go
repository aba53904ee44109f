package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	convertpkg "github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/testkit/haproxytest"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

const webhookSecret = "conversion-webhook-secret-1f2e"

// receiver is a webhook receiver that is down for its first attempts and
// verifies every signature.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	down     int
	attempts int
	bodies   []webhook.Payload
	badSig   int
}

func newWebhookReceiver(t *testing.T, down int) *receiver {
	r := &receiver{down: down}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.attempts++
		if err := webhook.Verify(webhookSecret, req.Header, b, time.Minute); err != nil {
			r.badSig++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if r.down > 0 {
			r.down--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var p webhook.Payload
		_ = json.Unmarshal(b, &p)
		r.bodies = append(r.bodies, p)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) delivered() []webhook.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Payload(nil), r.bodies...)
}

// uploadFile posts a file to a manager's HOOPS API.
func uploadFile(t *testing.T, base, arg, name string, content []byte) string {
	t.Helper()
	id, err := tryUpload(base, arg, name, content)
	require.NoError(t, err)
	return id
}

func tryUpload(base, arg, name string, content []byte) (string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", name)
	if err != nil {
		return "", err
	}
	_, _ = fw.Write(content)
	if err := w.Close(); err != nil {
		return "", err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+base+"/api/upload", &buf)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("CS-API-Arg", arg)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("upload %s: %s: %s", name, resp.Status, b)
	}
	var out map[string]string
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	return out["itemid"], nil
}

type itemData struct {
	ConversionState string   `json:"conversionState"`
	DetailedError   string   `json:"detailedError"`
	Files           []string `json:"files"`
	Attempts        int      `json:"attempts"`
	WebhookDelivery *struct {
		Attempts   int    `json:"attempts"`
		LastStatus int    `json:"lastStatus"`
		Delivered  string `json:"delivered"`
	} `json:"webhookDelivery"`
}

// lines reads a file's lines; none if it does not exist.
func lines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// TestConversionFarmKilledMidJob kills a farm process with SIGKILL while
// its converter runs: the job's lease expires, the job is reclaimed and
// converted again on another farm, the item ends SUCCESS once, and the
// webhook receiver, down for its first attempts, gets the final state with
// a valid signature on a retry.
func TestConversionFarmKilledMidJob(t *testing.T) {
	dir := t.TempDir()
	// The slow converter's output: a real GLB.
	glb := triangleGLB(t, dir)
	// Each run appends its pid to runs, then takes 3 s.
	runs := filepath.Join(dir, "runs")
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .slow
    argv: ["sh", "-c", "echo $$ >> %s; sleep 3; cp %s \"$1\"", "sh", "{out}"]
`, runs, glb), 0o644))

	hook := newWebhookReceiver(t, 2)
	m := startManager(t, "--data", filepath.Join(dir, "data"), "--job-lease", "1s",
		"--webhook-secret", webhookSecret, "--webhook-allow", "127.0.0.1", "--webhook-min-backoff", "200ms")
	a := startFarm(t, m, "farm-a", 1, "--job-slots", "1", "--config", config)

	id := uploadFile(t, m.base, fmt.Sprintf(`{"webhook":%q,"conversionCommandLine":["--output_glb"]}`, hook.URL+"/hook"),
		"part.slow", []byte("anything"))
	require.Eventually(t, func() bool { return len(lines(runs)) == 1 }, 20*time.Second, 20*time.Millisecond,
		"farm-a started converting")
	require.NoError(t, a.cmd.Process.Kill()) // SIGKILL, mid-conversion
	<-a.done

	startFarm(t, m, "farm-b", 1, "--job-slots", "1", "--config", config)
	var data itemData
	require.Eventually(t, func() bool {
		getJSON(t, "http://"+m.base+"/api/data/"+id, "", &data)
		return data.ConversionState != "PENDING"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", data.ConversionState, data.DetailedError)
	require.Equal(t, []string{"part.slow.glb"}, data.Files)
	require.Equal(t, 2, data.Attempts, "the killed attempt and the one that finished")
	require.Len(t, lines(runs), 2, "the converter ran twice: once on each farm")

	require.Eventually(t, func() bool { return len(hook.delivered()) == 1 }, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, webhook.Payload{ID: id, Name: "part.slow", ConversionState: "SUCCESS",
		Files: []string{"part.slow.glb"}}, hook.delivered()[0])
	require.Eventually(t, func() bool {
		getJSON(t, "http://"+m.base+"/api/data/"+id, "", &data)
		return data.WebhookDelivery != nil && data.WebhookDelivery.Delivered != ""
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 3, data.WebhookDelivery.Attempts, "two refused, the third delivered")
	hook.mu.Lock()
	require.Zero(t, hook.badSig)
	hook.mu.Unlock()

	// The GLB is there, once.
	resp, err := http.Get("http://" + m.base + "/api/file/" + id + "/glb")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := os.ReadFile(glb)
	require.Equal(t, want, b)
	// Nothing more happens: no third run, one delivery.
	time.Sleep(2 * time.Second)
	require.Len(t, lines(runs), 2)
	require.Len(t, hook.delivered(), 1)
	var st struct {
		Conversion struct {
			Queue    struct{ Done, Failed int }
			JobSlots int `json:"job_slots"`
		} `json:"conversion"`
		Farms []struct {
			ID       string `json:"id"`
			JobSlots int    `json:"job_slots"`
		} `json:"farms"`
	}
	getJSON(t, "http://"+m.base+"/status", adminToken, &st)
	require.Equal(t, 1, st.Conversion.Queue.Done)
	require.GreaterOrEqual(t, st.Conversion.JobSlots, 1)
	var registered int
	for _, f := range st.Farms {
		if f.ID == "farm-b" {
			registered = f.JobSlots
		}
	}
	require.Equal(t, 1, registered, "farm-b registered its job slots")
}

// TestConvertCommand runs `drover convert` against `drover up` with the
// real converters: a STEP assembly gives a GLB with its part names and a
// PNG, and exits 0; a file that cannot convert exits 1 with the reason.
func TestConvertCommand(t *testing.T) {
	draw := testutil.Program(t, "occt-draw", "occt-draw")
	testutil.Program(t, "assimp", "assimp-utils")
	testutil.Program(t, "f3d", "f3d")
	testutil.Program(t, "xvfb-run", "xvfb")
	dir := t.TempDir()
	step := filepath.Join(dir, "part.step")
	script := filepath.Join(dir, "mk.tcl")
	require.NoError(t, os.WriteFile(script, fmt.Appendf(nil, `pload MODELING OCAF XDE
box b1 10 10 10
box b2 20 0 0 5 5 5
compound b1 b2 c
XNewDoc D
XAddShape D c 1
SetName D 0:1:1:2 Bracket
SetName D 0:1:1:3 Bolt
WriteStep D {%s}
exit
`, step), 0o644))
	out, err := exec.Command(draw, "-b", "-f", script).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o644))

	up := startUp(t, "--data", filepath.Join(dir, "data"), "--instances", "1", "--warm", "0")
	convert := func(args ...string) (string, error) {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--", "convert", "--server", "http://" + up.base}, args...)...)
		cmd.Env = append(os.Environ(), "DROVER_TEST_MAIN=1")
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	outDir := filepath.Join(dir, "out")
	got, err := convert(step, "-o", outDir)
	require.NoError(t, err, got)
	for _, f := range []string{"part.step.glb", "part.step.png"} {
		require.Contains(t, got, filepath.Join(outDir, f))
	}
	info, err := convertpkg.InspectGLBFile(filepath.Join(outDir, "part.step.glb"))
	require.NoError(t, err)
	require.Subset(t, info.Nodes, []string{"Bracket", "Bolt"})

	// --shattered: the parts and the index come into out/shattered.
	shatDir := filepath.Join(dir, "shat")
	got, err = convert(step, "-o", shatDir, "--to", "glb", "--shattered", "--quiet")
	require.NoError(t, err, got)
	for _, part := range []string{"Bracket", "Bolt"} {
		p := filepath.Join(shatDir, "shattered", part+".glb")
		require.Contains(t, got, p)
		info, err := convertpkg.InspectGLBFile(p)
		require.NoError(t, err)
		require.Contains(t, info.Nodes, part)
	}
	index, err := os.ReadFile(filepath.Join(shatDir, "shattered", "index.xml"))
	require.NoError(t, err)
	require.Contains(t, string(index), `part="Bolt.glb"`)

	got, err = convert(filepath.Join(dir, "notes.txt"), "-o", outDir, "--quiet")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, got)
	require.Equal(t, 1, ee.ExitCode())
	require.Contains(t, got, "ERROR - Conversion Error: unsupported format")
}

// TestConversionManagerKilledOnRedis: two managers share Redis (items and
// the job queue) and a data directory; the farm registered with both
// leases a job, and the manager it leased from is killed with -9 while the
// converter runs. The farm renews, uploads and completes through the other
// manager: the job completes, converted once.
func TestConversionManagerKilledOnRedis(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	glb := triangleGLB(t, dir)
	runs := filepath.Join(dir, "runs")
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .slow
    argv: ["sh", "-c", "echo $$ >> %s; sleep 3; cp %s \"$1\"", "sh", "{out}"]
`, runs, glb), 0o644))

	hook := newWebhookReceiver(t, 0)
	var ms []*droverProc
	for i := range 2 {
		ms = append(ms, startDrover(t, fmt.Sprintf("manager-%d", i), []string{"DROVER_REDIS=" + rs.URL()}, managerBanner,
			"manager", "--addr", "127.0.0.1:0", "--farm-token", farmToken, "--id", fmt.Sprintf("m%d", i),
			"--data", filepath.Join(dir, "data"), "--job-lease", "3s", "--webhook-secret", webhookSecret,
			"--webhook-allow", "127.0.0.1", "--log-level", "debug"))
	}
	startDrover(t, "farm", nil, farmBanner, "farm", "--manager", "http://"+ms[0].base, "--manager", "http://"+ms[1].base,
		"--token", farmToken, "--addr", "127.0.0.1:0", "--id", "farm", "--instances", "1", "--job-slots", "1",
		"--state-dir", t.TempDir(), "--config", config, "--log-level", "debug")

	id := uploadFile(t, ms[0].base, fmt.Sprintf(`{"webhook":%q,"conversionCommandLine":["--output_glb"]}`, hook.URL),
		"part.slow", []byte("anything"))
	require.Eventually(t, func() bool { return len(lines(runs)) == 1 }, 20*time.Second, 20*time.Millisecond)
	// The farm calls its first manager first: that is where it leased.
	require.Contains(t, ms[0].out.String(), "job leased")
	require.NoError(t, ms[0].cmd.Process.Kill())
	<-ms[0].done

	var data itemData
	require.Eventually(t, func() bool {
		getJSON(t, "http://"+ms[1].base+"/api/data/"+id, "", &data)
		return data.ConversionState != "PENDING"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", data.ConversionState, data.DetailedError)
	require.Equal(t, 1, data.Attempts)
	require.Len(t, lines(runs), 1, "converted once: the lease moved with the farm's calls to the other manager")
	require.Eventually(t, func() bool { return len(hook.delivered()) == 1 }, 20*time.Second, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", hook.delivered()[0].ConversionState)
}

// TestConversionsThroughHAProxy: 100 concurrent uploads through HAProxy to
// two managers on Redis, converted by two farms that lease through HAProxy
// too, all end SUCCESS: none lost, none converted twice (the converter
// counts its runs).
func TestConversionsThroughHAProxy(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	glb := triangleGLB(t, dir)
	runs := filepath.Join(dir, "runs")
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .quick
    argv: ["sh", "-c", "echo $$ >> %s; cp %s \"$1\"", "sh", "{out}"]
`, runs, glb), 0o644))

	var ms []*droverProc
	for i := range 2 {
		ms = append(ms, startDrover(t, fmt.Sprintf("manager-%d", i), []string{"DROVER_REDIS=" + rs.URL()}, managerBanner,
			"manager", "--addr", "127.0.0.1:0", "--farm-token", farmToken, "--id", fmt.Sprintf("m%d", i),
			"--data", filepath.Join(dir, "data"), "--job-lease", "5s"))
	}
	lb := haproxytest.Start(t, haproxytest.Options{Config: "../../deploy/haproxy.cfg", Backends: []string{ms[0].base, ms[1].base}})
	for i := range 2 {
		startDrover(t, fmt.Sprintf("farm-%d", i), nil, farmBanner, "farm", "--manager", "http://"+lb.Farms,
			"--token", farmToken, "--addr", "127.0.0.1:0", "--id", fmt.Sprintf("farm-%d", i), "--instances", "1",
			"--job-slots", "4", "--state-dir", t.TempDir(), "--config", config)
	}
	for _, m := range ms {
		waitFarms(t, m, 15*time.Second, "farm-0", "farm-1")
	}
	require.Eventually(t, func() bool {
		st, err := lb.Status("managers")
		return err == nil && st["m0"] == "UP" && st["m1"] == "UP"
	}, 15*time.Second, 50*time.Millisecond)

	const n = 100
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = tryUpload(lb.Client, `{"conversionCommandLine":["--output_glb"]}`, fmt.Sprintf("part%d.quick", i), []byte("x"))
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Eventually(t, func() bool {
		var list struct {
			Itemarray []itemData `json:"itemarray"`
		}
		getJSON(t, "http://"+lb.Client+"/api/items", "", &list)
		done := 0
		for _, it := range list.Itemarray {
			require.NotContains(t, it.ConversionState, "ERROR", it.DetailedError)
			if it.ConversionState == "SUCCESS" {
				done++
			}
		}
		return done == n
	}, 2*time.Minute, 200*time.Millisecond)
	for _, id := range ids {
		var d itemData
		getJSON(t, "http://"+lb.Client+"/api/data/"+id, "", &d)
		require.Equal(t, "SUCCESS", d.ConversionState)
		require.Equal(t, 1, d.Attempts)
	}
	require.Len(t, lines(runs), n, "every item converted exactly once")
}

// triangleGLB makes a GLB of one triangle under dir with the real assimp,
// for the tests whose converter copies a made GLB, and returns its path.
func triangleGLB(t *testing.T, dir string) string {
	t.Helper()
	assimp := testutil.Program(t, "assimp", "assimp-utils")
	stl := filepath.Join(dir, "triangle.stl")
	require.NoError(t, os.WriteFile(stl, []byte("solid c\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"+
		"vertex 0 1 0\nendloop\nendfacet\nendsolid c\n"), 0o644))
	glb := filepath.Join(dir, "triangle.glb")
	out, err := exec.Command(assimp, "export", stl, glb, "-fglb2").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return glb
}
