package loadtest_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/tools/loadtest"
)

// buildDrover builds cmd/drover: bench runs drover as `drover worker` and
// `drover up` child processes, which the test binary cannot be.
func buildDrover(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "drover")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", exe, "../../../cmd/drover")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return exe
}

// TestBenchSmoke runs every scenario against every target with tiny
// counts and checks that the report is whole: every figure measured, every
// ratio computed. It asserts no timing. Under CI=true a missing nginx,
// haproxy, websocketd or redis-server fails it (CI runs scripts/setup.sh
// first); elsewhere such a target is skipped and left out of the checks.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx, haproxy, websocketd, redis-server and drover up")
	}
	cfg := loadtest.BenchConfig{
		Rounds:       1,
		Tasks:        50,
		Duration:     150 * time.Millisecond,
		Conns:        4,
		StreamConns:  []int{1, 2},
		StreamBytes:  256 << 10,
		Idle:         200,
		IdleScale:    400,
		Opens:        3,
		StdioClients: 2,
		StdioOpeners: 2,
		Jobs:         100,
		Require:      os.Getenv("CI") == "true",
		JSON:         true,
		SVGDir:       t.TempDir(),
		Drover:       []string{buildDrover(t)},
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	if testing.Verbose() {
		cfg.Progress = os.Stderr
	}
	var out bytes.Buffer
	require.NoError(t, loadtest.Bench(t.Context(), cfg, &out), "progress:\n%s", progress.String())

	var rep loadtest.BenchReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "%s", out.String())
	t.Logf("skipped: %v", rep.Machine.Skipped)
	require.NotEmpty(t, rep.Machine.CPU)
	require.Positive(t, rep.Machine.NoFile)
	skipped := func(target string) bool {
		return slices.ContainsFunc(rep.Machine.Skipped, func(s string) bool {
			return len(s) > len(target) && s[:len(target)+1] == target+":"
		})
	}
	optional := func(names ...string) []string {
		var have []string
		for _, n := range names {
			if !skipped(n) {
				have = append(have, n)
			}
		}
		return have
	}
	proxies := optional(loadtest.TargetNginx, loadtest.TargetHAProxy)
	proxies64 := append(proxies, optional(loadtest.TargetNginx64)...)
	want := map[string][]string{ // "scenario metric" → targets
		"rtt p50":                              append(append([]string{"direct"}, proxies...), "drover"),
		"rtt p99":                              append(append([]string{"direct"}, proxies...), "drover"),
		"tput tasks/s":                         append(append([]string{"direct", "direct-64"}, proxies64...), "drover"),
		"cpu CPU per million tasks":            append(append([]string{"direct", "direct-64"}, proxies64...), "drover", "drover+instances"),
		"stream 1 conn":                        append(append([]string{"direct"}, proxies...), "drover", "drover-ws", "drover-remote", "drover-remote-direct"),
		"stream 2 conn":                        append(append([]string{"direct"}, proxies...), "drover", "drover-ws", "drover-remote", "drover-remote-direct"),
		"idle memory per connection":           append(append([]string{"gorilla"}, proxies...), "drover"),
		"idle memory per connection at scale":  {"drover"},
		"open p50":                             append([]string{"direct", "drover-warm", "drover-cold"}, optional("drover-cold-container")...),
		"open p99":                             append([]string{"direct", "drover-warm", "drover-cold"}, optional("drover-cold-container")...),
		"stdio msgs/s at 2 clients":            append(optional(loadtest.TargetWebsocket), "drover"),
		"stdio sessions/s at 2 concurrent":     append(optional(loadtest.TargetWebsocket), "drover"),
		"stdio server CPU per session":         append(optional(loadtest.TargetWebsocket), "drover"),
		"jobs jobs/s":                          append([]string{"memory"}, optional("redis")...),
		"failover farm killed → instance_lost": {"drover"},
		"failover farm frozen → instance_lost": {"drover"},
	}
	if !skipped("redis") {
		want["failover manager killed → resumed"] = []string{"drover"}
	}
	got := map[string][]string{}
	for _, r := range rep.Rows {
		name := r.Scenario + " " + r.Metric
		got[name] = append(got[name], r.Target)
		require.Len(t, r.Rounds, 1, name)
		require.False(t, math.IsNaN(r.Median) || math.IsInf(r.Median, 0), "%s %s: %v", name, r.Target, r.Median)
		// An idle RSS delta of a few hundred connections may round to
		// nothing, and so may CPU time, counted in 10 ms ticks, over a
		// window this short on a loaded machine; every other figure is a
		// rate or a time.
		cpu := r.Scenario == "cpu" || strings.Contains(r.Metric, "CPU")
		if r.Scenario == loadtest.BenchIdle || cpu {
			require.GreaterOrEqual(t, r.Median, 0.0, "%s %s", name, r.Target)
		} else {
			require.Positive(t, r.Median, "%s %s", name, r.Target)
		}
		ref := map[string]string{"idle": "gorilla", "stdio": "websocketd", "jobs": "memory"}[r.Scenario]
		if ref == "" {
			ref = "direct"
		}
		if r.Scenario == "stdio" && skipped(loadtest.TargetWebsocket) || r.Scenario == "idle" || cpu ||
			r.Scenario == "failover" {
			continue // no reference to divide by, or a reference of ~0
		}
		require.NotNil(t, r.Ratio, "%s %s: no ratio", name, r.Target)
		require.Equal(t, ref, r.Ref, name)
		require.Positive(t, *r.Ratio, "%s %s: ratio", name, r.Target)
		if r.Scenario == "rtt" {
			require.NotNil(t, r.Added, "%s %s: no added latency", name, r.Target)
		}
		if r.Scenario == "tput" {
			require.NotNil(t, r.RatioDirect64, "%s %s: no ratio to direct-64", name, r.Target)
		}
	}
	for name, targets := range want {
		require.ElementsMatch(t, targets, got[name], "targets of %q; report:\n%s", name, out.String())
	}
	require.Len(t, got, len(want), "figures: %v", got)

	svgs, err := filepath.Glob(filepath.Join(cfg.SVGDir, "*.svg"))
	require.NoError(t, err)
	require.Len(t, svgs, len(want))
	b, err := os.ReadFile(filepath.Join(cfg.SVGDir, "tput-tasks-s.svg"))
	require.NoError(t, err)
	require.Contains(t, string(b), "<svg")
	require.Contains(t, string(b), ">drover<")
}

func TestBenchConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  loadtest.BenchConfig
		want string
	}{
		{loadtest.BenchConfig{Scenarios: []string{"rtt", "nope"}}, `unknown scenario "nope"`},
		{loadtest.BenchConfig{Targets: []string{"apache"}}, `unknown target "apache"`},
		// load's names map to bench's: only the unknown one is refused.
		{loadtest.BenchConfig{Scenarios: []string{"latency", "throughput", "bulk", "idle", "nope"}}, `unknown scenario "nope"`},
	} {
		err := loadtest.Bench(t.Context(), tc.cfg, &bytes.Buffer{})
		require.ErrorContains(t, err, tc.want)
	}
}
