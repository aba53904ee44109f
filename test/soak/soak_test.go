//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

var duration = flag.Duration("soak.duration", envDuration("SOAK_DURATION", 10*time.Minute),
	"how long the load runs (default $SOAK_DURATION, else 10m)")

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

const (
	farmToken  = "soak-farm-token-4e81c2"
	adminToken = "soak-admin-token-0b97d5"
	// resumeGrace is the manager's: sessions dropped and never resumed
	// end after it, and the settle wait allows for it.
	resumeGrace = 10 * time.Second
	// opTimeout bounds every operation of the load.
	opTimeout = 60 * time.Second
)

// TestSoak runs the mixed load for the duration, sampling every process,
// then lets the cluster settle and judges each series (Analyze).
func TestSoak(t *testing.T) {
	d := *duration
	interval := min(max(d/120, time.Second), 5*time.Second)
	warmup := d / 4
	t.Logf("soak: %s of load, a sample every %s, steady state after %s", d, interval, warmup)

	bin := buildDrover(t)
	rdb := redistest.Start(t)
	tmp := t.TempDir()
	m := start(t, "manager", managerBanner, bin, "manager", "--addr", "127.0.0.1:0",
		"--farm-token", farmToken, "--admin-token", adminToken, "--data", filepath.Join(tmp, "data"),
		"--redis", rdb.URL(), "--resume-grace", resumeGrace.String(), "--log-level", "warn")
	procs := []*proc{m}
	for _, id := range []string{"soak-a", "soak-b"} {
		procs = append(procs, start(t, id, farmBanner, bin, "farm", "--manager", "http://"+m.base,
			"--token", farmToken, "--addr", "127.0.0.1:0", "--id", id, "--instances", "5", "--job-slots", "2",
			"--state-dir", filepath.Join(tmp, id), "--job-dir", filepath.Join(tmp, id+"-jobs"), "--log-level", "warn"))
	}
	waitFarms(t, m, 2)
	convert := true
	if _, err := exec.LookPath("assimp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("assimp not found: install the Debian package assimp-utils")
		}
		t.Log("assimp not found (Debian package assimp-utils): no conversion jobs in the mix")
		convert = false
	}

	// The baseline: the idle cluster, a few samples.
	rec := newRecorder(procs)
	begin := time.Now()
	for range 5 {
		rec.sample(t, time.Since(begin))
		time.Sleep(time.Second)
	}
	base := rec.medians()
	pids := map[int]bool{}
	for _, p := range procs {
		pids[p.cmd.Process.Pid] = true
	}
	pooled := func() map[string]float64 {
		n := pooledFDs(t, pids, rdb.Addr())
		out := map[string]float64{}
		for _, p := range procs {
			out[p.name] = float64(n[p.cmd.Process.Pid])
		}
		return out
	}
	basePooled := pooled()
	for _, p := range procs { // fds without the pooled connections
		base[p.name]["fds"] -= basePooled[p.name]
	}

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	st := &stats{}
	var wg sync.WaitGroup
	ws := "ws://" + m.base + "/ws"
	for i := range 3 {
		wg.Go(func() { loop(ctx, st, "ws tasks", func() error { return wsTasks(ws, i) }) })
	}
	wg.Go(func() { loop(ctx, st, "ws resume", func() error { return wsResume(ws) }) })
	wg.Go(func() {
		loop(ctx, st, "ws abandoned", func() error {
			if err := wsAbandon(ws); err != nil {
				return err
			}
			pause(ctx, 3*time.Second) // a few held at once, until their grace ends
			return nil
		})
	})
	wg.Go(func() { loop(ctx, st, "rest", func() error { return restSession("http://" + m.base) }) })
	if convert {
		wg.Go(func() { loop(ctx, st, "conversion", func() error { return conversion("http://" + m.base) }) })
	}

	loadStart := time.Since(begin)
	tick := time.NewTicker(interval)
	for time.Since(begin)-loadStart < d {
		<-tick.C
		rec.sample(t, time.Since(begin))
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s exited during the load: %v\n%s", p.name, p.err, p.out.String())
			}
		}
	}
	tick.Stop()
	loadEnd := time.Since(begin)
	stopLoad()
	wg.Wait()
	// The load's own idle keep-alive connections are open files of the
	// processes too.
	http.DefaultClient.CloseIdleConnections()

	// Settle: abandoned sessions end after the grace, instances stop.
	after := map[string]map[string]float64{}
	var afterPooled map[string]float64
	settled := false
	deadline := time.Now().Add(resumeGrace + 45*time.Second)
	for !settled && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		now := rec.sample(t, time.Since(begin))
		afterPooled = pooled()
		settled = instancesLeft(t, procs[1:]) == 0 && len(children(procs[1:])) == 0
		for _, p := range procs {
			now[p.name]["fds"] -= afterPooled[p.name]
			for _, f := range []string{"goroutines", "fds"} {
				s := rec.series[p.name][f]
				if now[p.name][f] > base[p.name][f]+s.Abs+s.Rel*base[p.name][f] {
					settled = false
				}
			}
		}
		after = now
	}

	var verdicts []Verdict
	leaks := 0
	for _, p := range procs {
		for _, f := range figures {
			s := rec.series[p.name][f.name]
			b, a := math.NaN(), math.NaN()
			if f.settles {
				b, a = base[p.name][f.name], after[p.name][f.name]
			}
			v := Analyze(s, loadStart+warmup, loadEnd, b, a)
			if v.Leak {
				leaks++
			}
			verdicts = append(verdicts, v)
		}
	}
	var sum bytes.Buffer
	fmt.Fprintf(&sum, "soak: %s of load (steady state from %s), samples every %s\n", d, warmup, interval)
	st.print(&sum)
	fmt.Fprintf(&sum, "fds baseline and after: without what pools keep open, the TCP connections among the soak's processes and to Redis, and Go's splice pipes (%v before the load, %v after)\n",
		basePooled, afterPooled)
	fmt.Fprintf(&sum, "instances left on the farms after the load: %d; processes the farms still run: %d\n\n",
		instancesLeft(t, procs[1:]), len(children(procs[1:])))
	PrintTable(&sum, verdicts)
	for _, v := range verdicts {
		if (v.Leak || os.Getenv("SOAK_FDS") != "") && v.Series.Figure == "fds" {
			for _, p := range procs {
				if p.name == v.Series.Process {
					fmt.Fprintf(&sum, "\nopen files of %s:\n%s", p.name, describeFDs(p.cmd.Process.Pid))
				}
			}
		}
	}
	t.Log("\n" + sum.String())
	if path := os.Getenv("SOAK_SUMMARY"); path != "" {
		require.NoError(t, os.WriteFile(path, sum.Bytes(), 0o644))
	}
	require.Zero(t, st.failed(), "operations failed:\n%s", st.firstErrors())
	require.Zero(t, leaks, "leaks found (see the table)")
	require.Zero(t, instancesLeft(t, procs[1:]), "instances outlived their sessions")
	require.Empty(t, children(procs[1:]), "processes of the farms outlived their sessions and jobs")
	for _, p := range procs {
		require.False(t, p.exited(), "%s exited", p.name)
	}
}

// buildDrover builds bin/drover from this module into a temporary
// directory, without the race detector: the soak measures what users run.
func buildDrover(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "drover")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/drover")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

var (
	managerBanner = regexp.MustCompile(`farms register at http://([0-9.:]+)/`)
	farmBanner    = regexp.MustCompile(`listening on +http://([0-9.:]+)`)
)

// proc is a drover process of the soak.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	base string // host:port from its banner
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs bin with args and waits for the banner line matching re.
func start(t *testing.T, name string, re *regexp.Regexp, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DROVER_TOKEN=", "DROVER_FARM_TOKEN=")
	p := &proc{name: name, cmd: cmd, out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = p.out
	require.NoError(t, cmd.Start())
	banner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			_, _ = p.out.Write([]byte(sc.Text() + "\n"))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case banner <- m[1]:
				default:
				}
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s (last 8 KiB) ---\n%s", name, tail(p.out.String(), 8<<10))
		}
	})
	select {
	case p.base = <-banner:
	case <-p.done:
		t.Fatalf("%s exited before its banner: %v\n%s", name, p.err, p.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s printed no banner\n%s", name, p.out.String())
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func getJSON(url, token string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitFarms waits until the manager lists n farms.
func waitFarms(t *testing.T, m *proc, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var st struct {
			Farms []struct{ ID string } `json:"farms"`
		}
		return getJSON("http://"+m.base+"/status", adminToken, &st) == nil && len(st.Farms) == n
	}, 30*time.Second, 50*time.Millisecond, "the farms registered")
}

// instancesLeft counts the instances the farms still run.
func instancesLeft(t *testing.T, farms []*proc) int {
	t.Helper()
	n := 0
	for _, f := range farms {
		var st struct {
			Instances []struct{ ID string } `json:"instances"`
		}
		require.NoError(t, getJSON("http://"+f.base+"/api/v1/status", farmToken, &st))
		n += len(st.Instances)
	}
	return n
}

// children lists the processes whose parent is one of procs (instances,
// converters), as "pid command".
func children(procs []*proc) []string {
	parents := map[string]bool{}
	for _, p := range procs {
		parents[strconv.Itoa(p.cmd.Process.Pid)] = true
	}
	var out []string
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fs := strings.Fields(string(b[i+1:]))
		if len(fs) > 1 && parents[fs[1]] {
			out = append(out, strings.TrimSpace(string(b[:i+1])))
		}
	}
	return out
}

// figures are what the recorder samples; settles: must return to its
// baseline once the load stopped.
var figures = []struct {
	name     string
	unit     Unit
	abs, rel float64
	settles  bool
}{
	{"goroutines", Count, 25, 0.10, true},
	{"fds", Count, 20, 0.10, true},
	{"heap", Bytes, 8 << 20, 0.25, false},
	{"rss", Bytes, 16 << 20, 0.25, false},
}

// recorder keeps the series of every process.
type recorder struct {
	procs  []*proc
	series map[string]map[string]*Series // by process, figure
}

func newRecorder(procs []*proc) *recorder {
	r := &recorder{procs: procs, series: map[string]map[string]*Series{}}
	for _, p := range procs {
		r.series[p.name] = map[string]*Series{}
		for _, f := range figures {
			r.series[p.name][f.name] = &Series{Process: p.name, Figure: f.name, Unit: f.unit, Abs: f.abs, Rel: f.rel}
		}
	}
	return r
}

// sample reads every figure of every process: goroutines and heap in use
// from its /metrics, RSS and open files from /proc.
func (r *recorder) sample(t *testing.T, at time.Duration) map[string]map[string]float64 {
	t.Helper()
	now := map[string]map[string]float64{}
	for _, p := range r.procs {
		token := ""
		if p.name != "manager" {
			token = farmToken
		}
		met, err := testutil.FetchMetrics(context.Background(), "http://"+p.base+"/metrics", token)
		require.NoError(t, err, "%s's metrics", p.name)
		pid := p.cmd.Process.Pid
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		require.NoError(t, err, "%s's open files", p.name)
		v := map[string]float64{
			"goroutines": met["go_goroutines"],
			"heap":       met["go_memstats_heap_inuse_bytes"],
			"fds":        float64(len(fds)),
			"rss":        rss(t, pid),
		}
		for f, x := range v {
			s := r.series[p.name][f]
			s.Samples = append(s.Samples, Sample{At: at, Value: x})
		}
		now[p.name] = v
	}
	return now
}

// medians is each series' median so far.
func (r *recorder) medians() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for p, fs := range r.series {
		out[p] = map[string]float64{}
		for f, s := range fs {
			out[p][f] = median(values(s.Samples))
		}
	}
	return out
}

// describeFDs lists what a process has open, for a leak's report: the
// targets of its descriptors by kind, and its TCP sockets as ss shows them.
func describeFDs(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	es, _ := os.ReadDir(dir)
	kinds := map[string]int{}
	for _, e := range es {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		kind, _, _ := strings.Cut(target, ":")
		if strings.HasPrefix(target, "/") {
			kind = filepath.Dir(target)
		}
		kinds[kind]++
	}
	var b strings.Builder
	for k, n := range kinds {
		fmt.Fprintf(&b, "  %4d %s\n", n, k)
	}
	// Who else holds its pipes: a pipe whose other end is gone, or is
	// held by a process that should have ended, is a leak's trail.
	pipes := map[string]bool{}
	for _, e := range es {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); strings.HasPrefix(target, "pipe:") {
			pipes[target] = true
		}
	}
	holders := map[string]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		target, _ := os.Readlink(fd)
		other := strings.Split(fd, "/")[2]
		if pipes[target] && other != strconv.Itoa(pid) {
			cmdline, _ := os.ReadFile("/proc/" + other + "/cmdline")
			holders[other+" "+strings.ReplaceAll(string(cmdline), "\x00", " ")]++
		}
	}
	for h, n := range holders {
		fmt.Fprintf(&b, "  pipes shared with %s: %d\n", h, n)
	}
	if out, err := exec.Command("ss", "-tanpH").Output(); err == nil {
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, fmt.Sprintf("pid=%d,", pid)) {
				b.WriteString("  " + line)
			}
		}
	}
	return b.String()
}

// pooledFDs counts, by pid, the descriptors that pools keep open after a
// load by design, bounded by their configuration (their growth during the
// load counts in the fds series):
//   - the established TCP connections of the processes in pids to one
//     another or to Redis: HTTP keep-alive and the Redis client's pool;
//   - pipes with both ends in the process: Go's splice pipes
//     (internal/poll), which io.Copy between TCP connections keeps in a
//     sync.Pool until a garbage collection, and an idle process rarely
//     collects.
//
// It reads /proc/net/tcp{,6} and the processes' descriptors.
func pooledFDs(t *testing.T, pids map[int]bool, redis string) map[int]int {
	t.Helper()
	host, port, err := net.SplitHostPort(redis)
	require.NoError(t, err)
	pn, err := strconv.Atoi(port)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	redisHex := fmt.Sprintf("0100007F:%04X", pn)
	type conn struct{ local, remote string }
	byInode := map[string]conn{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "01" { // ESTABLISHED
				continue
			}
			byInode[fs[9]] = conn{local: fs[1], remote: fs[2]}
		}
	}
	owned := map[int][]conn{}
	local := map[string]bool{} // endpoints of the processes
	n := map[int]int{}
	for pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		es, _ := os.ReadDir(dir)
		pipes := map[string]int{}
		for _, e := range es {
			target, _ := os.Readlink(filepath.Join(dir, e.Name()))
			if strings.HasPrefix(target, "pipe:") {
				pipes[target]++
			}
			inode, ok := strings.CutPrefix(target, "socket:[")
			if !ok {
				continue
			}
			if c, ok := byInode[strings.TrimSuffix(inode, "]")]; ok {
				owned[pid] = append(owned[pid], c)
				local[c.local] = true
			}
		}
		for _, ends := range pipes {
			if ends == 2 {
				n[pid] += 2
			}
		}
	}
	for pid, cs := range owned {
		for _, c := range cs {
			if c.remote == redisHex || local[c.remote] {
				n[pid]++
			}
		}
	}
	return n
}

// rss is a process's resident set in bytes, from /proc/PID/status.
func rss(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			require.NoError(t, err)
			return kb * 1024
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// stats counts the load's operations by kind.
type stats struct {
	mu      sync.Mutex
	ops     map[string]int
	errs    map[string]int
	first   []string
	nfailed atomic.Int64
}

func (s *stats) add(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops == nil {
		s.ops, s.errs = map[string]int{}, map[string]int{}
	}
	s.ops[kind]++
	if err != nil {
		s.errs[kind]++
		s.nfailed.Add(1)
		if len(s.first) < 20 {
			s.first = append(s.first, fmt.Sprintf("%s: %v", kind, err))
		}
	}
}

func (s *stats) failed() int64 { return s.nfailed.Load() }

func (s *stats) firstErrors() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.first, "\n")
}

func (s *stats) print(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{"ws tasks", "ws resume", "ws abandoned", "rest", "conversion"} {
		if s.ops[k] > 0 {
			fmt.Fprintf(w, "  %-13s %6d operations, %d failed\n", k, s.ops[k], s.errs[k])
		}
	}
}

// loop runs op until ctx ends; each op has its own timeout, so that the
// end of the load does not cut one short.
func loop(ctx context.Context, st *stats, kind string, op func() error) {
	for ctx.Err() == nil {
		st.add(kind, op())
	}
}

// pause waits d or until ctx ends: the pace of a loop, not a wait for an
// event.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func dial(url string, opts client.Options) (*client.Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return client.Dial(ctx, url, opts)
}

// run runs one task and returns its JSON results.
func run(s *client.Session, task string) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	res, err := s.Execute(ctx, json.RawMessage(task))
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", task, err)
	}
	out := make([]json.RawMessage, len(res))
	for i, r := range res {
		out[i] = r.Data
	}
	return out, nil
}

// setGet stores a value and reads it back.
func setGet(s *client.Session, key string, value int) error {
	if _, err := run(s, fmt.Sprintf(`{"command":"set","key":%q,"value":%d}`, key, value)); err != nil {
		return err
	}
	return expectGet(s, key, value)
}

func expectGet(s *client.Session, key string, value int) error {
	res, err := run(s, fmt.Sprintf(`{"command":"get","key":%q}`, key))
	if err != nil {
		return err
	}
	var got struct {
		Value *int `json:"value"`
	}
	if len(res) != 1 || json.Unmarshal(res[0], &got) != nil || got.Value == nil || *got.Value != value {
		return fmt.Errorf("get %s: want %d, got %s", key, value, res)
	}
	return nil
}

// wsTasks opens a session, runs a few tasks of each kind and logs out.
func wsTasks(url string, worker int) error {
	s, err := dial(url, client.Options{})
	if err != nil {
		return err
	}
	defer s.Drop()
	for i := range 5 {
		nonce := rand.Int64()
		res, err := run(s, fmt.Sprintf(`{"command":"echo","nonce":%d}`, nonce))
		if err != nil {
			return err
		}
		if len(res) != 1 || !bytes.Contains(res[0], []byte(strconv.FormatInt(nonce, 10))) {
			return fmt.Errorf("echo: got %s", res)
		}
		if err := setGet(s, fmt.Sprintf("k%d-%d", worker, i), int(nonce%1000)); err != nil {
			return err
		}
		res, err = run(s, `{"command":"results","n":3}`)
		if err != nil {
			return err
		}
		if len(res) != 3 {
			return fmt.Errorf("results: want 3, got %d", len(res))
		}
	}
	return s.Logout()
}

// wsResume drops a session mid-way and resumes it: same session, same
// instance, its state kept.
func wsResume(url string) error {
	s, err := dial(url, client.Options{})
	if err != nil {
		return err
	}
	value := rand.IntN(1 << 20)
	if err := setGet(s, "r", value); err != nil {
		s.Drop()
		return err
	}
	_ = s.Drop()
	r, err := dial(url, client.Options{Resume: s.Resume})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	defer r.Drop()
	if r.ID != s.ID || r.Instance != s.Instance {
		return fmt.Errorf("resume: session %s on %s came back as %s on %s", s.ID, s.Instance, r.ID, r.Instance)
	}
	if err := expectGet(r, "r", value); err != nil {
		return fmt.Errorf("after the resume: %w", err)
	}
	return r.Logout()
}

// wsAbandon runs a task and drops the connection for good: the manager
// ends the session after its resume grace.
func wsAbandon(url string) error {
	s, err := dial(url, client.Options{})
	if err != nil {
		return err
	}
	defer s.Drop()
	_, err = run(s, `{"command":"echo"}`)
	return err
}

// restSession logs in over REST, runs tasks and logs out.
func restSession(base string) error {
	var login struct {
		Status, ID string
	}
	// A login when every instance is busy is rejected (the awv3 REST
	// API does not queue): the client tries again.
	deadline := time.Now().Add(opTimeout)
	for {
		if err := getJSON(base+"/login", "", &login); err != nil {
			return err
		}
		if login.Status != "rejected" || time.Now().After(deadline) {
			break
		}
		pause(context.Background(), 200*time.Millisecond)
	}
	if login.Status != "permitted" || login.ID == "" {
		return fmt.Errorf("login: %+v", login)
	}
	for i := range 3 {
		body := fmt.Sprintf(`{"command":"set","key":"x","value":%d}`, i)
		if _, err := post(base+"/execute/"+login.ID, body); err != nil {
			return err
		}
		b, err := post(base+"/execute/"+login.ID, `{"command":"get","key":"x"}`)
		if err != nil {
			return err
		}
		var res []struct {
			Value int `json:"value"`
		}
		if err := json.Unmarshal(b, &res); err != nil || len(res) != 1 || res[0].Value != i {
			return fmt.Errorf("REST get: want %d, got %s", i, b)
		}
	}
	var out struct{ Status string }
	if err := getJSON(base+"/logout/"+login.ID, "", &out); err != nil {
		return err
	}
	if out.Status != "disconnected" {
		return fmt.Errorf("logout: %+v", out)
	}
	return nil
}

func post(url, body string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	return b, err
}

var cube = []byte(convtest.CubeSTL())

// conversion uploads the cube, waits for its GLB, reads it and deletes
// the item.
func conversion(base string) error {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", "cube.stl")
	if err != nil {
		return err
	}
	_, _ = fw.Write(cube)
	if err := w.Close(); err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/upload", &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("CS-API-Arg", `{"conversionCommandLine":["--output_glb"]}`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upload: %s: %s", resp.Status, b)
	}
	var up struct {
		ItemID string `json:"itemid"`
	}
	if err := json.Unmarshal(b, &up); err != nil || up.ItemID == "" {
		return fmt.Errorf("upload: %s", b)
	}
	deadline := time.Now().Add(opTimeout)
	var data struct {
		ConversionState string `json:"conversionState"`
		DetailedError   string `json:"detailedError"`
	}
	for {
		if err := getJSON(base+"/api/data/"+up.ItemID, "", &data); err != nil {
			return err
		}
		if data.ConversionState != "PENDING" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("item %s still PENDING after %s", up.ItemID, opTimeout)
		}
		pause(context.Background(), 100*time.Millisecond) // the API has no wait; poll
	}
	if data.ConversionState != "SUCCESS" {
		return fmt.Errorf("item %s ended %s: %s", up.ItemID, data.ConversionState, data.DetailedError)
	}
	resp, err = http.Get(base + "/api/file/" + up.ItemID + "/glb")
	if err != nil {
		return err
	}
	glb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(glb, []byte("glTF")) {
		return fmt.Errorf("GLB of %s: %s, %d bytes", up.ItemID, resp.Status, len(glb))
	}
	req, err = http.NewRequest(http.MethodPut, base+"/api/delete/"+up.ItemID, nil)
	if err != nil {
		return err
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New("delete: " + resp.Status)
	}
	return nil
}
