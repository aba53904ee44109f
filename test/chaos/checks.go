//go:build chaos

package chaos

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/testkit/clustertest"
)

// check is one named invariant and whether it held.
type check struct {
	name   string
	ok     bool
	detail string
}

func failed(name string, problems []string, okDetail string) check {
	if len(problems) == 0 {
		return check{name, true, okDetail}
	}
	if len(problems) > 8 {
		problems = append(problems[:8], fmt.Sprintf("… %d more", len(problems)-8))
	}
	return check{name, false, strings.Join(problems, "; ")}
}

// checkTasks: every task got exactly one terminal answer, or none because
// its connection was cut under it (the protocol's "failed": the client
// saw its connection end). It returns the tasks lost.
func checkTasks(l *ledger) (check, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	once, cut := 0, 0
	for _, r := range l.order {
		switch {
		case len(r.answers) == 1:
			once++
		case len(r.answers) == 0 && r.cut:
			cut++
		case len(r.answers) == 0:
			problems = append(problems, fmt.Sprintf("task %s (%s) has no answer", r.key, r.what))
		default:
			problems = append(problems, fmt.Sprintf("task %s (%s) has %d answers %v", r.key, r.what, len(r.answers), r.answers))
		}
	}
	for _, n := range l.notes {
		problems = append(problems, n)
	}
	return failed("every task got exactly one terminal answer", problems,
		fmt.Sprintf("%d tasks: %d answered once, %d cut with their connection", len(l.order), once, cut)), len(problems)
}

// checkBindings: no instance, and no process of a farm, was bound to two
// sessions at the same time (the span of a binding runs from its first
// observation to its last).
func checkBindings(l *ledger) check {
	l.mu.Lock()
	defer l.mu.Unlock()
	type span struct {
		session     string
		first, last time.Time
	}
	var problems []string
	overlap := func(what string, groups map[string]map[string]*span) {
		for key, bySession := range groups {
			var spans []*span
			for _, s := range bySession {
				spans = append(spans, s)
			}
			sort.Slice(spans, func(i, j int) bool { return spans[i].first.Before(spans[j].first) })
			for i := 1; i < len(spans); i++ {
				if !spans[i].first.After(spans[i-1].last) {
					problems = append(problems, fmt.Sprintf("%s %s: sessions %s and %s at once", what, key, spans[i-1].session, spans[i].session))
				}
			}
		}
	}
	byInstance := map[string]map[string]*span{}
	byPID := map[string]map[string]*span{}
	add := func(groups map[string]map[string]*span, key string, b binding) {
		if groups[key] == nil {
			groups[key] = map[string]*span{}
		}
		s := groups[key][b.session]
		if s == nil {
			s = &span{session: b.session, first: b.at}
			groups[key][b.session] = s
		}
		s.last = b.at
	}
	for _, b := range l.obs {
		add(byInstance, b.instance, b)
		if b.farm != "?" {
			add(byPID, fmt.Sprintf("%s (epoch %d) pid %d", b.farm, b.epoch, b.pid), b)
		}
	}
	overlap("instance", byInstance)
	overlap("process", byPID)
	return failed("no instance was bound to two sessions at once", problems,
		fmt.Sprintf("%d observations of %d instances", len(l.obs), len(byInstance)))
}

// checkResumes: every resumed session found its own instance, process and
// state.
func checkResumes(l *ledger) check {
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	for _, r := range l.resumes {
		if !r.ok {
			problems = append(problems, "session "+r.session+": "+r.why)
		}
	}
	return failed("every resumed session found its own instance and state", problems,
		fmt.Sprintf("%d resumes checked", len(l.resumes)))
}

// checkJobs: every job ended SUCCESS or ERROR, a broken model ERROR, a
// SUCCESS with one GLB that is the one its outputs list (one attempt's),
// and the webhook receiver saw the final state and no other. It returns
// the jobs lost (never ended).
func checkJobs(c *clustertest.Cluster, l *ledger, hooks *receiver) (check, check, int) {
	l.mu.Lock()
	jobs := append([]*jobRec(nil), l.jobs...)
	l.mu.Unlock()
	var problems, hookProblems []string
	lost, success, errs := 0, 0, 0
	for _, j := range jobs {
		l.mu.Lock()
		final, states := j.final, append([]string(nil), j.states...)
		l.mu.Unlock()
		if final == nil {
			lost++
			problems = append(problems, fmt.Sprintf("item %s (%s) did not end: states %v", j.item, j.name, states))
			continue
		}
		state, _ := final["conversionState"].(string)
		if state == "SUCCESS" {
			success++
			if j.broken {
				problems = append(problems, fmt.Sprintf("item %s (%s, broken) ended SUCCESS", j.item, j.name))
			}
			if why := checkGLB(c, j.item, final); why != "" {
				problems = append(problems, fmt.Sprintf("item %s (%s): %s", j.item, j.name, why))
			}
		} else {
			errs++
		}
		seen := hooks.states(j.item)
		switch {
		case len(seen) == 0:
			hookProblems = append(hookProblems, fmt.Sprintf("item %s ended %s: no webhook", j.item, state))
		case len(seen) > 1 || !seen[state]:
			hookProblems = append(hookProblems, fmt.Sprintf("item %s ended %s: webhooks said %v", j.item, state, keys(seen)))
		}
	}
	if hooks.bad > 0 {
		hookProblems = append(hookProblems, fmt.Sprintf("%d webhooks with a bad signature or body", hooks.bad))
	}
	return failed("every job ended SUCCESS or ERROR once, with one attempt's outputs", problems,
			fmt.Sprintf("%d jobs: %d SUCCESS, %d ERROR", len(jobs), success, errs)),
		failed("every webhook receiver saw the final state", hookProblems, fmt.Sprintf("%d items' webhooks", len(jobs))),
		lost
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkGLB downloads the item's GLB and compares it with its outputs: one
// output, a GLB of the listed size whose header says that length.
func checkGLB(c *clustertest.Cluster, item string, final map[string]any) string {
	outs, _ := final["outputs"].([]any)
	if len(outs) != 1 {
		return fmt.Sprintf("%d outputs, want the one GLB: %v", len(outs), outs)
	}
	o, _ := outs[0].(map[string]any)
	size, _ := o["size"].(float64)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(c.URL + "/api/file/" + item + "/glb")
	if err != nil {
		return "GET its GLB: " + err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("GET its GLB: HTTP %d %v", resp.StatusCode, err)
	}
	if len(b) < 12 || string(b[:4]) != "glTF" || int(binary.LittleEndian.Uint32(b[8:12])) != len(b) {
		return fmt.Sprintf("its GLB (%d bytes) is not a whole GLB", len(b))
	}
	if float64(len(b)) != size {
		return fmt.Sprintf("its GLB has %d bytes, its outputs say %.0f", len(b), size)
	}
	return ""
}

// checkOrphans: on every farm, the instance processes are the instances
// the managers list (none once every session ended), no converter runs,
// and no job or session directory is left.
func checkOrphans(ctx context.Context, c *clustertest.Cluster) check {
	return checkOrphansOf(ctx, c, c.Farms...)
}

// checkOrphansOf is checkOrphans of the farms named.
func checkOrphansOf(ctx context.Context, c *clustertest.Cluster, farms ...string) check {
	listed := map[string]map[string]bool{}
	for _, m := range c.Managers {
		st, err := c.Status(ctx, m)
		if err != nil {
			return check{"no orphan process, container or directory on the farms", false, m + " /status: " + err.Error()}
		}
		for _, in := range st.Instances {
			if listed[in.Farm] == nil {
				listed[in.Farm] = map[string]bool{}
			}
			listed[in.Farm][in.ID] = true
		}
	}
	var problems []string
	for _, f := range farms {
		procs, err := c.Processes(ctx, f)
		if err != nil {
			problems = append(problems, f+": docker top: "+err.Error())
			continue
		}
		workers, converters := 0, 0
		for _, p := range procs {
			switch {
			case strings.Contains(p, "drover worker"):
				workers++
			case strings.Contains(p, "assimp"):
				converters++
			}
		}
		if workers != len(listed[f]) || converters != 0 {
			problems = append(problems, fmt.Sprintf("%s runs %d instance processes (the managers list %d) and %d converters",
				f, workers, len(listed[f]), converters))
		}
		tmp, err := c.Entries(ctx, f, "/tmp")
		if err != nil {
			problems = append(problems, f+": list /tmp: "+err.Error())
			continue
		}
		for _, e := range tmp {
			top, rest, _ := strings.Cut(e, "/")
			if rest == ".lock" {
				continue // a job directory's lock file: the running farm's, kept by design (farm/jobdir.go)
			}
			if rest != "" && !strings.Contains(rest, "/") && (strings.HasPrefix(top, "drover-jobs-") ||
				strings.HasPrefix(top, "drover-sessions-") && len(listed[f]) == 0) {
				problems = append(problems, fmt.Sprintf("%s: /tmp/%s is left", f, e))
			}
		}
	}
	return failed("no orphan process, container or directory on the farms", problems, "every farm clean")
}

// sample is what a survivor's /metrics said.
type sample struct{ goroutines, heap, rss float64 }

func sampleOf(ctx context.Context, c *clustertest.Cluster, name string) (sample, error) {
	m, err := c.Metrics(ctx, name)
	if err != nil {
		return sample{}, err
	}
	return sample{m["go_goroutines"], m["go_memstats_heap_inuse_bytes"], m["process_resident_memory_bytes"]}, nil
}

// warmUp is the load without faults before the baseline is taken.
const warmUp = 10 * time.Second

// steadySample samples node n until its goroutine count holds still (within
// 2 over three polls a second apart, at most 30 s): the baseline after the
// warm-up, once the sessions it opened have ended.
func steadySample(c *clustertest.Cluster, n string) (sample, error) {
	var last sample
	same := 0
	for end := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := sampleOf(ctx, c, n)
		cancel()
		if err != nil {
			return s, err
		}
		if d := s.goroutines - last.goroutines; d >= -2 && d <= 2 {
			same++
		} else {
			same = 0
		}
		last = s
		if same >= 3 || time.Now().After(end) {
			return s, nil
		}
		time.Sleep(time.Second) // a poll's pace: goroutine counts have no event
	}
}

// checkBaseline: the goroutines and memory of every manager and farm that
// was never killed are back near what they were before the load.
func checkBaseline(ctx context.Context, c *clustertest.Cluster, base map[string]sample, restarted map[string]bool) check {
	var problems []string
	var names []string
	for n := range base {
		names = append(names, n)
	}
	sort.Strings(names)
	var got []string
	for _, n := range names {
		if restarted[n] {
			continue
		}
		b := base[n]
		s, err := sampleOf(ctx, c, n)
		if err != nil {
			problems = append(problems, n+": "+err.Error())
			continue
		}
		got = append(got, fmt.Sprintf("%s %0.f→%0.f goroutines, heap %.1f→%.1f MiB, RSS %.1f→%.1f MiB", n,
			b.goroutines, s.goroutines, b.heap/(1<<20), s.heap/(1<<20), b.rss/(1<<20), s.rss/(1<<20)))
		if s.goroutines > b.goroutines*1.2+20 {
			problems = append(problems, fmt.Sprintf("%s: %0.f goroutines, baseline %0.f", n, s.goroutines, b.goroutines))
		}
		if s.heap > b.heap*2+16<<20 {
			problems = append(problems, fmt.Sprintf("%s: heap in use %.1f MiB, baseline %.1f MiB", n, s.heap/(1<<20), b.heap/(1<<20)))
		}
		if s.rss > b.rss*2+64<<20 {
			problems = append(problems, fmt.Sprintf("%s: RSS %.1f MiB, baseline %.1f MiB", n, s.rss/(1<<20), b.rss/(1<<20)))
		}
	}
	if len(got) == 0 && len(problems) == 0 {
		// The injector spares the last farm and the last manager from
		// kills: with none left unkilled the check would compare nothing.
		problems = append(problems, "no manager or farm ran the whole time: nothing to compare with its baseline")
	}
	return failed("goroutines and memory of the survivors returned to their baseline", problems, strings.Join(got, "; "))
}
