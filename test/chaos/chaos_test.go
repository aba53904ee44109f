//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/lib/httpguard"
	"github.com/drover-dev/drover/internal/testkit/clustertest"
)

// TestChaos is the chaos run (make chaos, make chaos-ci): a cluster of two
// managers, three farms, Redis and HAProxy under a steady mixed load
// (WebSocket sessions with tasks, resumes, crashes and logouts; REST
// sessions; conversion jobs with webhooks) while faults are injected at
// random for CHAOS_DURATION (default 3m): kill -9 of a farm or a manager
// and its restart, pause and unpause, partition and reconnection of either,
// a Redis restart. CHAOS_SEED replays a run's fault schedule (the load's
// timing varies). At the end it checks the invariants, prints a summary,
// and writes it to CHAOS_SUMMARY when set; CHAOS_LOGS names a directory
// for the containers' whole logs.
func TestChaos(t *testing.T) {
	cluster(t)
	duration := 3 * time.Minute
	if v := os.Getenv("CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("CHAOS_DURATION=%q: want a duration such as 90s or 15m", v)
		}
		duration = d
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an integer", v)
		}
		seed = s
	}
	t.Logf("chaos run: CHAOS_SEED=%d CHAOS_DURATION=%v", seed, duration)
	fmt.Printf("chaos run: CHAOS_SEED=%d CHAOS_DURATION=%v\n", seed, duration)

	c := clustertest.Start(t, clustertest.Options{Managers: 2, Farms: 3, Instances: 3,
		// Reclaims within seconds: a job's lease is 6 s.
		ManagerArgs: []string{"--job-lease=6s", "--max-attempts=5", "--webhook-min-backoff=200ms"}})
	hooks := startReceiver(t, c)
	l := newLedger()
	ep := &epochs{n: map[string]int{}}
	ld := &load{c: c, l: l, epochs: ep, hooks: hooks, stall: 3 * time.Second, limit: 30 * time.Second}

	var wg sync.WaitGroup
	startLoad := func(ctx context.Context, seed int64) {
		worker := func(i int, fn func(context.Context, *rand.Rand)) {
			wg.Add(1)
			rng := rand.New(rand.NewSource(seed + int64(i)))
			go func() {
				defer wg.Done()
				fn(ctx, rng)
			}()
		}
		for i := range 5 {
			worker(i+1, ld.wsWorker)
		}
		worker(10, ld.restWorker)
		for i := range 2 {
			worker(20+i, func(ctx context.Context, rng *rand.Rand) { ld.jobWorker(ctx, rng, i) })
		}
	}

	// Warm-up: the same load without faults for a few seconds, so that the
	// baseline holds what a manager or farm keeps once it has served (warm
	// instances, kept-alive connections, pools), not the empty process it
	// starts as; then the baseline, once the goroutines are steady.
	wctx, wstop := context.WithTimeout(context.Background(), warmUp)
	startLoad(wctx, seed^0x5eed)
	wg.Wait()
	wstop()
	base := map[string]sample{}
	for _, n := range append(append([]string{}, c.Managers...), c.Farms...) {
		s, err := steadySample(c, n)
		if err != nil {
			t.Fatalf("baseline of %s: %v", n, err)
		}
		base[n] = s
	}

	began := time.Now()
	ctx, stop := context.WithCancel(context.Background())
	startLoad(ctx, seed)

	in := &injector{t: t, c: c, l: l, epochs: ep, rng: rand.New(rand.NewSource(seed)), restarted: map[string]bool{}}
	in.run(began.Add(duration))
	stop()
	wg.Wait()
	loadTime := time.Since(began)
	t.Logf("load stopped after %.0f s; settling", loadTime.Seconds())

	// Settle: the jobs end, the webhooks arrive, the sessions the clients
	// gave up on expire (30 s grace), the survivors calm down: the
	// kept-alive connections of killed or cut-off peers close within the
	// servers' idle timeout (2 min, httpguard.DefaultIdle), so the settle
	// time allows a minute more. Polled until every check holds or the
	// settle time passes.
	l.mu.Lock()
	jobs := append([]*jobRec(nil), l.jobs...)
	l.mu.Unlock()
	var jwg sync.WaitGroup
	for _, j := range jobs {
		if j.final == nil {
			jwg.Add(1)
			go func() { defer jwg.Done(); ld.follow(context.Background(), j, 2*time.Minute) }()
		}
	}
	jwg.Wait()
	settle := time.Now()
	const settleFor = httpguard.DefaultIdle + time.Minute
	var checks []check
	var lostTasks, lostJobs int
	for {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		var taskCheck, jobCheck, hookCheck check
		taskCheck, lostTasks = checkTasks(l)
		jobCheck, hookCheck, lostJobs = checkJobs(c, l, hooks)
		checks = []check{taskCheck, checkBindings(l), checkResumes(l), jobCheck, hookCheck,
			checkOrphans(sctx, c), checkBaseline(sctx, c, base, in.restarted)}
		scancel()
		all := true
		for _, ch := range checks {
			all = all && ch.ok
		}
		if all || time.Since(settle) > settleFor {
			break
		}
		time.Sleep(2 * time.Second) // a poll's pace
	}
	t.Logf("settled after %.0f s", time.Since(settle).Seconds())

	var sum strings.Builder
	fmt.Fprintf(&sum, "chaos run summary (CHAOS_SEED=%d, CHAOS_DURATION=%v, load %.0f s, settle %.0f s)\n", seed, duration,
		loadTime.Seconds(), time.Since(settle).Seconds())
	fmt.Fprintf(&sum, "cluster: %d managers, %d farms × %d instances, Redis, HAProxy\n", len(c.Managers), len(c.Farms), 3)
	l.mu.Lock()
	fmt.Fprintf(&sum, "faults injected %s\n", counts(l.faults))
	fmt.Fprintf(&sum, "operations %s\n", counts(l.ops))
	fmt.Fprintf(&sum, "error answers clients got %s\n", counts(l.answers))
	if len(l.internal) > 0 {
		fmt.Fprintf(&sum, "internal errors said %q\n", l.internal)
	}
	l.mu.Unlock()
	passed := 0
	for _, ch := range checks {
		mark := "PASS"
		if ch.ok {
			passed++
		} else {
			mark = "FAIL"
		}
		fmt.Fprintf(&sum, "  %s  %s: %s\n", mark, ch.name, ch.detail)
	}
	fmt.Fprintf(&sum, "invariant checks: %d passed, %d failed\n", passed, len(checks)-passed)
	fmt.Fprintf(&sum, "lost: %d (tasks %d, jobs %d)\n", lostTasks+lostJobs, lostTasks, lostJobs)
	fmt.Print(sum.String())
	if p := os.Getenv("CHAOS_SUMMARY"); p != "" {
		if err := os.WriteFile(p, []byte(sum.String()), 0o644); err != nil {
			t.Errorf("write the summary: %v", err)
		}
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: %s", ch.name, ch.detail)
		}
	}
	if dir := os.Getenv("CHAOS_LOGS"); dir != "" {
		if err := c.SaveLogs(dir); err != nil {
			t.Errorf("save the containers' logs: %v", err)
		}
	}
	if t.Failed() {
		for _, n := range append(append([]string{}, c.Managers...), c.Farms...) {
			t.Logf("%s:\n%s", n, c.Logs(n))
		}
	}
}
