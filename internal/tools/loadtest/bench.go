package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/farm"
)

// `drover bench` measures drover against the direct reference worker and
// against the proxies users would otherwise put in front of their workers
// (nginx, HAProxy), all started here as child processes and measured with
// the same Go client, in interleaved rounds: each round runs every target
// once, round-robin, and the report gives the median of the rounds.

// The scenarios of `drover bench`, in report order.
const (
	BenchRTT    = "rtt"    // one connection, sequential echo tasks
	BenchTput   = "tput"   // 64 connections, one task in flight each; CPU per task too
	BenchStream = "stream" // 64 KiB binary frames at 1 and 8 connections
	BenchIdle   = "idle"   // memory per idle client connection
	BenchOpen   = "open"   // session-open latency: warm, cold process
	BenchStdio  = "stdio"  // drover's stdio pool against websocketd
	BenchJobs   = "jobs"   // no-op conversion jobs, memory and Redis queue
	// BenchFailover: a dead farm noticed, a session resumed after its
	// manager was killed.
	BenchFailover = "failover"
	// benchCPU is not run by name: tput measures it.
	benchCPU = "cpu"
)

// BenchScenarios lists the scenarios in report order.
var BenchScenarios = []string{BenchRTT, BenchTput, BenchStream, BenchIdle, BenchOpen, BenchStdio, BenchJobs, BenchFailover}

// legacyScenarios maps the names of `drover load` to bench's.
var legacyScenarios = map[string]string{
	ScenarioLatency: BenchRTT, ScenarioThroughput: BenchTput, ScenarioBulk: BenchStream, ScenarioIdle: BenchIdle,
}

// BenchConfig configures `drover bench`. The zero value of each field means
// its default.
type BenchConfig struct {
	// Rounds is the number of interleaved rounds (4).
	Rounds int
	// Tasks is the number of sequential tasks of rtt per round and target
	// (5000).
	Tasks int
	// Duration is the measured time of tput, stream and stdio per round
	// and target (3 s), after a short warm-up.
	Duration time.Duration
	// Conns is the number of connections of tput, and of direct-64's
	// workers (64).
	Conns int
	// StreamConns are the connection counts of stream (1 and 8);
	// StreamBytes is what one stream task sends (64 MiB).
	StreamConns []int
	StreamBytes int
	// Idle is the number of idle connections of idle (4000).
	Idle int
	// IdleScale is the number of idle connections of idle's one run of
	// drover at scale (50,000), lowered to what the open-file limit allows
	// (the report says so); 0 skips it.
	IdleScale int
	// Opens is the number of sequential session opens per kind, round and
	// target (40).
	Opens int
	// StdioClients is the number of stdio clients exchanging lines (16);
	// StdioOpeners the number opening sessions at once (8).
	StdioClients int
	StdioOpeners int
	// Jobs is the number of conversion jobs per round and queue (20000).
	Jobs int
	// Image is the reference worker image of open's cold containers
	// (farm.DefaultImage, which make image builds); without Docker or
	// the image, that kind is skipped.
	Image string
	// Scenarios and Targets pick by name (all of BenchScenarios and Targets).
	Scenarios []string
	Targets   []string
	// Require makes a missing nginx, haproxy, websocketd or redis-server an
	// error instead of a skipped target.
	Require bool
	// JSON writes the report as JSON; Markdown as Markdown tables.
	JSON     bool
	Markdown bool
	// SVGDir, when set, receives one SVG bar chart per figure; the
	// Markdown report links them by this path.
	SVGDir string
	// FromJSON, when set, is a JSON report of an earlier run, written again
	// in the chosen format instead of measuring.
	FromJSON string
	// Drover is the argv prefix that runs drover (default this executable);
	// Env is added to the environment of the drover processes.
	Drover []string
	Env    []string
	// Progress, when set, receives one line per step and the skipped
	// targets.
	Progress io.Writer
}

func (c *BenchConfig) defaults() error {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Rounds, 4)
	def(&c.Tasks, 5000)
	def(&c.Conns, 64)
	def(&c.StreamBytes, 64<<20)
	def(&c.Idle, 4000)
	if c.IdleScale == 0 {
		c.IdleScale = 50000
	}
	def(&c.Opens, 40)
	def(&c.StdioClients, 16)
	def(&c.StdioOpeners, 8)
	def(&c.Jobs, 20000)
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Image == "" {
		c.Image = farm.DefaultImage
	}
	if len(c.StreamConns) == 0 {
		c.StreamConns = []int{1, 8}
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = BenchScenarios
	}
	var scs []string
	for _, s := range c.Scenarios {
		if n, ok := legacyScenarios[s]; ok {
			s = n
		}
		if !slices.Contains(BenchScenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (have %s)", s, strings.Join(BenchScenarios, ", "))
		}
		scs = append(scs, s)
	}
	c.Scenarios = scs
	if len(c.Targets) == 0 {
		c.Targets = Targets
	}
	for _, t := range c.Targets {
		if !slices.Contains(Targets, t) {
			return fmt.Errorf("bench: unknown target %q (have %s)", t, strings.Join(Targets, ", "))
		}
	}
	if len(c.Drover) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find own executable: %w", err)
		}
		c.Drover = []string{exe}
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// bench is one run of `drover bench`.
type bench struct {
	cfg     BenchConfig
	dir     string
	servers map[string]*server
	stops   []func()
	res     *results
	nofile  uint64
	// scaleRun is idle's run at scale: the connections measured and the
	// connections asked for.
	scaleRun [2]int
	// loadStart is the load average when the run started.
	loadStart string
	// image, when set, is the reference worker image of drover's
	// cold-container pool (Docker has it).
	image string
}

// Bench runs the selected scenarios against the selected targets and
// writes the report to out.
func Bench(ctx context.Context, cfg BenchConfig, out io.Writer) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	if cfg.FromJSON != "" {
		data, err := os.ReadFile(cfg.FromJSON)
		if err != nil {
			return err
		}
		var rep BenchReport
		if err := json.Unmarshal(data, &rep); err != nil {
			return fmt.Errorf("bench: %s: %w", cfg.FromJSON, err)
		}
		return rep.write(cfg, out)
	}
	dir, err := os.MkdirTemp("", "drover-bench")
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, dir: dir, servers: map[string]*server{}, res: newResults()}
	defer func() {
		for _, fn := range slices.Backward(b.stops) {
			fn()
		}
		_ = os.RemoveAll(dir)
	}()
	b.nofile = raiseNoFile()
	b.loadStart = readMachine().LoadAvg
	if err := b.start(ctx); err != nil {
		return err
	}
	for _, sc := range BenchScenarios {
		if !b.wants(sc) {
			continue
		}
		if err := b.scenario(ctx, sc); err != nil {
			return fmt.Errorf("bench: %s: %w", sc, err)
		}
	}
	return b.report().write(cfg, out)
}

// write writes the charts cfg asks for and the report in its format.
func (r *BenchReport) write(cfg BenchConfig, out io.Writer) error {
	if cfg.SVGDir != "" {
		if err := r.writeSVGs(cfg.SVGDir); err != nil {
			return err
		}
	}
	switch {
	case cfg.JSON:
		return r.writeJSON(out)
	case cfg.Markdown:
		return r.writeMarkdown(out, cfg.SVGDir)
	}
	return r.writeTable(out)
}

func (b *bench) wants(sc string) bool    { return slices.Contains(b.cfg.Scenarios, sc) }
func (b *bench) hasTarget(t string) bool { return slices.Contains(b.cfg.Targets, t) }
func (b *bench) progress(f string, a ...any) {
	fmt.Fprintf(b.cfg.Progress, "drover bench: "+f+"\n", a...)
}

// skip reports a target that cannot run; with Require it is an error.
func (b *bench) skip(target string, err error) error {
	if b.cfg.Require {
		return fmt.Errorf("bench: %s: %w", target, err)
	}
	b.progress("%s: skipped: %v", target, err)
	b.res.skipped = append(b.res.skipped, fmt.Sprintf("%s: %v", target, err))
	return nil
}

func (b *bench) keep(s *server) {
	b.servers[s.name] = s
	b.stops = append(b.stops, s.stop)
}

// start starts the servers the selected scenarios and targets need.
func (b *bench) start(ctx context.Context) error {
	any := func(scs ...string) bool { return slices.ContainsFunc(scs, b.wants) }
	proxied := any(BenchRTT, BenchTput, BenchStream, BenchIdle)
	needDirect := any(BenchRTT, BenchTput, BenchStream, BenchIdle, BenchOpen)
	if needDirect {
		b.progress("starting the direct worker")
		s, err := b.startDirect(ctx)
		if err != nil {
			return err
		}
		b.keep(s)
	}
	if b.wants(BenchTput) && b.hasTarget(TargetDirect64) {
		b.progress("starting %d direct workers", b.cfg.Conns)
		s, err := b.startDirect64(ctx, b.cfg.Conns)
		if err != nil {
			return err
		}
		b.keep(s)
	}
	if d64 := b.servers[TargetDirect64]; d64 != nil && b.hasTarget(TargetNginx64) {
		s, err := b.startNginx(ctx, TargetNginx64, d64.addrs...)
		if err != nil {
			if err := b.skip(TargetNginx64, err); err != nil {
				return err
			}
		} else {
			b.keep(s)
		}
	}
	if proxied && b.hasTarget(TargetNginx) {
		s, err := b.startNginx(ctx, TargetNginx, strings.TrimSuffix(strings.TrimPrefix(b.servers[TargetDirect].url, "ws://"), "/"))
		if err != nil {
			if err := b.skip(TargetNginx, err); err != nil {
				return err
			}
		} else {
			b.keep(s)
		}
	}
	if proxied && b.hasTarget(TargetHAProxy) {
		s, err := b.startHAProxy(ctx, strings.TrimSuffix(strings.TrimPrefix(b.servers[TargetDirect].url, "ws://"), "/"))
		if err != nil {
			if err := b.skip(TargetHAProxy, err); err != nil {
				return err
			}
		} else {
			b.keep(s)
		}
	}
	if b.wants(BenchStdio) && b.hasTarget(TargetWebsocket) {
		s, err := b.startWebsocketd(ctx)
		if err != nil {
			if err := b.skip(TargetWebsocket, err); err != nil {
				return err
			}
		} else {
			b.keep(s)
		}
	}
	if any(BenchRTT, BenchTput, BenchStream, BenchOpen, BenchStdio) && b.hasTarget(TargetDrover) {
		lines := 0
		if b.wants(BenchStdio) {
			lines = b.cfg.StdioClients
		}
		// The default pool has a warm instance per tput connection; the
		// cold pool gets a few free slots.
		warm := b.cfg.Conns
		relay := 0
		if b.wants(BenchStream) {
			relay = slices.Max(b.cfg.StreamConns)
		}
		slots := warm + lines + relay + 6
		if lines > 0 {
			// stdio's openers each hold a session on top of the warm
			// instances, and the instance of the session each closed last
			// holds its slot until its process is reaped. Without slots
			// for both, the pool refills only as fast as those processes
			// go, and sessions waiting for a slot evict the default
			// pool's warm workers, which then start again: 17 restarts in
			// 10 s of the stdio scenario measured, CPU that websocketd
			// does not spend.
			slots += 2 * b.cfg.StdioOpeners
		}
		if b.wants(BenchOpen) {
			if err := dockerImage(ctx, b.cfg.Image); err != nil {
				// Not an error even with Require: the image is built
				// apart (make image), and CI's smoke runs without it.
				b.progress("%s: skipped: %v", kindColdContainer, err)
				b.res.skipped = append(b.res.skipped, fmt.Sprintf("%s: %v", kindColdContainer, err))
			} else {
				b.image = b.cfg.Image
			}
		}
		b.progress("starting drover up: %d slots, %d warm workers, %d warm stdio instances, %d warm stream instances",
			slots, warm, lines, relay)
		s, err := b.startDrover(ctx, TargetDrover, warm, lines, relay, slots)
		if err != nil {
			return err
		}
		b.keep(s)
	}
	for _, t := range []string{TargetRemote, TargetRemoteDirect} {
		if b.wants(BenchStream) && b.hasTarget(t) {
			relay := slices.Max(b.cfg.StreamConns)
			b.progress("starting %s: drover manager and drover farm, %d warm stream instances", t, relay)
			s, err := b.startDroverRemote(ctx, t, relay, t == TargetRemoteDirect)
			if err != nil {
				return err
			}
			b.keep(s)
		}
	}
	return nil
}

// targets returns the started servers among names, in that order.
func (b *bench) targets(names ...string) []*server {
	var out []*server
	for _, n := range names {
		if s := b.servers[n]; s != nil && (n == TargetDirect || b.hasTarget(n)) {
			out = append(out, s)
		}
	}
	return out
}

// rewarm waits, before a drover measurement, until the instances the last
// sessions used have been replaced.
func (b *bench) rewarm(ctx context.Context, s *server) error {
	if s.streamOnly {
		return s.waitWarm(ctx, map[string]int{poolRelay: slices.Max(b.cfg.StreamConns)})
	}
	if s.status == "" || s.name != TargetDrover {
		return nil
	}
	want := map[string]int{poolDefault: b.cfg.Conns}
	if b.wants(BenchStdio) {
		want[poolLines] = b.cfg.StdioClients
	}
	if b.wants(BenchStream) {
		want[poolRelay] = slices.Max(b.cfg.StreamConns)
	}
	return s.waitWarm(ctx, want)
}

// rounds runs fn for every target in every round, round-robin.
func (b *bench) rounds(ctx context.Context, sc string, ts []*server, fn func(ctx context.Context, s *server) error) error {
	for r := range b.cfg.Rounds {
		for _, s := range ts {
			if err := b.rewarm(ctx, s); err != nil {
				return err
			}
			b.progress("%s: round %d/%d: %s", sc, r+1, b.cfg.Rounds, s.name)
			if err := fn(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
	}
	return nil
}

func (b *bench) scenario(ctx context.Context, sc string) error {
	switch sc {
	case BenchRTT:
		// An unmeasured pass over every target first: the first connections
		// of freshly started servers are slower than any later, and direct
		// would pay for it alone.
		for _, s := range b.targets(TargetDirect, TargetNginx, TargetHAProxy, TargetDrover) {
			if _, _, err := rtt(ctx, s.url, max(b.cfg.Tasks/5, 1)); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		return b.rounds(ctx, sc, b.targets(TargetDirect, TargetNginx, TargetHAProxy, TargetDrover), func(ctx context.Context, s *server) error {
			p50, p99, err := rtt(ctx, s.url, b.cfg.Tasks)
			b.res.add(sc, "p50", "µs", s.name, p50)
			b.res.add(sc, "p99", "µs", s.name, p99)
			return err
		})
	case BenchTput:
		ts := b.targets(TargetDirect, TargetDirect64, TargetNginx, TargetNginx64, TargetHAProxy, TargetDrover)
		return b.rounds(ctx, sc, ts, func(ctx context.Context, s *server) error {
			// For drover, the manager process alone, and with its
			// instances (the workers direct-64 runs too).
			var cpu0, cpu1, all0, all1 float64
			var insts []int
			first := true
			mark := func() {
				if s.name == TargetDrover && first {
					insts = children(s.pids()[0])
				}
				c, a := cpuSeconds(s.pids()), cpuSeconds(insts)
				if first {
					cpu0, all0, first = c, a, false
				} else {
					cpu1, all1 = c, a
				}
			}
			rate, tasks, err := throughput(ctx, s.urlFor, b.cfg.Conns, 1, b.cfg.Duration, mark)
			if err != nil {
				return err
			}
			b.res.add(sc, "tasks/s", "", s.name, rate)
			if tasks > 0 {
				const metric = "CPU per million tasks"
				b.res.add(benchCPU, metric, "s", s.name, (cpu1-cpu0)/float64(tasks)*1e6)
				if len(insts) > 0 {
					b.res.add(benchCPU, metric, "s", s.name+"+instances", (cpu1-cpu0+all1-all0)/float64(tasks)*1e6)
				}
			}
			return nil
		})
	case BenchStream:
		// drover twice: a viewer's /stream session (one relay to a stream
		// pool's instance), and the stream task on the task path (/ws);
		// the remote-farm targets: /stream only.
		ts := b.targets(TargetDirect, TargetNginx, TargetHAProxy, TargetDrover, TargetRemote, TargetRemoteDirect)
		return b.rounds(ctx, sc, ts, func(ctx context.Context, s *server) error {
			urls := [][2]string{{s.name, s.url}}
			switch {
			case s.streamOnly:
				urls = [][2]string{{s.name, s.streamURL}}
			case s.streamURL != "":
				urls = [][2]string{{s.name, s.streamURL}, {s.name + "-ws", s.url}}
			}
			for _, u := range urls {
				for _, n := range b.cfg.StreamConns {
					if err := b.rewarm(ctx, s); err != nil {
						return err
					}
					v, err := b.stream(ctx, u[1], n)
					if err != nil {
						return fmt.Errorf("%s: %w", u[1], err)
					}
					b.res.add(sc, fmt.Sprintf("%d conn", n), "MB/s", u[0], v/1e6)
				}
			}
			return nil
		})
	case BenchIdle:
		return b.idle(ctx)
	case BenchOpen:
		return b.open(ctx)
	case BenchStdio:
		return b.stdio(ctx)
	case BenchJobs:
		return b.jobs(ctx)
	case BenchFailover:
		if !b.hasTarget(TargetDrover) {
			return nil
		}
		return b.failover(ctx)
	}
	return fmt.Errorf("unknown scenario %q", sc)
}

// stream runs n bulk connections at once and returns their total bytes
// per second.
func (b *bench) stream(ctx context.Context, url string, n int) (float64, error) {
	type res struct {
		v   float64
		err error
	}
	ch := make(chan res, n)
	warm := min(b.cfg.StreamBytes, bulkWarmBytes)
	for range n {
		go func() {
			v, err := bulk(ctx, url, b.cfg.Duration, b.cfg.StreamBytes, warm)
			ch <- res{v, err}
		}()
	}
	var total float64
	var errs []error
	for range n {
		r := <-ch
		total += r.v
		errs = append(errs, r.err)
	}
	return total, errors.Join(errs...)
}

// rtt runs n sequential echo tasks (after n/10 unmeasured ones) on one
// connection and returns the p50 and p99 of their round trips in µs.
func rtt(ctx context.Context, url string, n int) (p50, p99 float64, err error) {
	c, err := dial(ctx, url, echoFrame)
	if err != nil {
		return 0, 0, err
	}
	defer c.close()
	c.deadline(time.Now().Add(readyLimit + stallLimit + time.Duration(n)*10*time.Millisecond))
	for range max(n/10, 1) {
		if _, err := c.roundTrip(c.task); err != nil {
			return 0, 0, failure(ctx, err)
		}
	}
	lat := make([]time.Duration, n)
	for i := range lat {
		t0 := time.Now()
		if _, err := c.roundTrip(c.task); err != nil {
			return 0, 0, failure(ctx, err)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return micros(lat, 0.50), micros(lat, 0.99), nil
}

// machine describes where the run happened.
type machine struct {
	CPU       string `json:"cpu"`
	NumCPU    int    `json:"num_cpu"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	LoadAvg   string `json:"loadavg"`
	// LoadAvgStart is the load average when the run started (LoadAvg is
	// at its end).
	LoadAvgStart string  `json:"loadavg_start"`
	NoFile       uint64  `json:"nofile_limit"`
	Date         string  `json:"date"`
	Rounds       int     `json:"rounds"`
	DurationS    float64 `json:"duration_s"`
	Tasks        int     `json:"rtt_tasks"`
	Conns        int     `json:"conns"`
	Idle         int     `json:"idle"`
	// IdleScale is the number of connections of idle's run at scale, and
	// IdleScaleWanted the number asked for.
	IdleScale       int      `json:"idle_scale,omitempty"`
	IdleScaleWanted int      `json:"idle_scale_wanted,omitempty"`
	Skipped         []string `json:"skipped,omitempty"`
}

func readMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

func itoa(n int) string { return strconv.Itoa(n) }
