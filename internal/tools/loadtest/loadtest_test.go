package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/internal/lib/forkthread"
	"github.com/drover-dev/drover/internal/tools/loadtest"
	"github.com/drover-dev/drover/worker"
)

// roleEnv makes the test binary one of the processes the load tool starts:
// the reference worker of the drover stack, or the idle client.
const roleEnv = "DROVER_LOADTEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "worker":
		exit(worker.Run(context.Background(), worker.Config{}))
	case loadtest.RoleIdleClient:
		fs := flag.NewFlagSet(loadtest.RoleIdleClient, flag.ExitOnError)
		target := fs.String("target", "", "")
		idle := fs.Int("idle", 0, "")
		_ = fs.Parse(os.Args[1:])
		exit(loadtest.Run(context.Background(),
			loadtest.Config{Role: loadtest.RoleIdleClient, Target: *target, Idle: *idle}, os.Stdout))
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"), goleak.IgnoreTopFunction(forkthread.Goroutine))
}

func exit(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// shortConfig is a run short enough for a test, with the test binary as the
// worker and as the idle client.
func shortConfig(t *testing.T) loadtest.Config {
	cfg := loadtest.Config{
		Duration:      300 * time.Millisecond,
		Conns:         4,
		Idle:          20,
		WorkerCommand: []string{os.Args[0]},
		WorkerEnv:     []string{roleEnv + "=worker"},
		ClientCommand: []string{os.Args[0]},
		ClientEnv:     []string{roleEnv + "=" + loadtest.RoleIdleClient},
	}
	if testing.Verbose() {
		cfg.Progress = os.Stderr
	}
	return cfg
}

type row struct {
	direct, drover, ratio float64
}

// parseTable reads the table Run writes, keyed by "scenario metric".
func parseTable(t *testing.T, out string) map[string]row {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Greater(t, len(lines), 1, "table:\n%s", out)
	require.Equal(t, []string{"scenario", "metric", "direct", "drover", "ratio", "note"}, strings.Fields(lines[0]))
	rows := map[string]row{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		// The metric is one or two words ("msg/s", "p50 µs").
		i := 2
		if _, err := strconv.ParseFloat(f[i], 64); err != nil {
			i++
		}
		require.GreaterOrEqual(t, len(f), i+3, "line %q", line)
		var nums [3]float64
		for j := range nums {
			v, err := strconv.ParseFloat(f[i+j], 64)
			require.NoError(t, err, "line %q", line)
			nums[j] = v
		}
		rows[f[0]+" "+strings.Join(f[1:i], " ")] = row{nums[0], nums[1], nums[2]}
	}
	return rows
}

var allRows = []string{
	"latency p50 µs", "latency p90 µs", "latency p99 µs",
	"throughput msg/s", "bulk MB/s", "idle KiB/conn",
}

func TestRunEveryScenario(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, loadtest.Run(t.Context(), shortConfig(t), &out))
	t.Logf("\n%s", out.String())
	rows := parseTable(t, out.String())
	require.Len(t, rows, len(allRows))
	for _, name := range allRows {
		r, ok := rows[name]
		require.True(t, ok, "no row %q in\n%s", name, out.String())
		require.Positive(t, r.direct, name)
		require.Positive(t, r.drover, name)
		require.Positive(t, r.ratio, name)
	}
}

// TestTargetMode measures a worker served by httptest as the "drover"
// target: the client needs no welcome, so any server of protocol v1 works.
// The idle scenario is skipped, and --json works.
func TestTargetMode(t *testing.T) {
	srv := httptest.NewServer(worker.New(worker.Config{}).Handler())
	defer srv.Close()
	cfg := shortConfig(t)
	cfg.Target = "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/"
	cfg.JSON = true
	var out bytes.Buffer
	require.NoError(t, loadtest.Run(t.Context(), cfg, &out))

	var rep struct {
		Config struct {
			Drover string `json:"drover_url"`
		} `json:"config"`
		Rows []loadtest.Row `json:"rows"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "%s", out.String())
	require.Equal(t, cfg.Target, rep.Config.Drover)
	var names []string
	for _, r := range rep.Rows {
		names = append(names, r.Scenario+" "+r.Metric)
		require.Positive(t, r.Direct, r.Metric)
		require.Positive(t, r.Drover, r.Metric)
		require.InDelta(t, r.Drover/r.Direct, r.Ratio, 1e-4)
	}
	require.Equal(t, allRows[:len(allRows)-1], names)
	require.NotNil(t, rep.Rows[0].AddedMicros)
}

// TestCancel checks that every loop ends when the context does.
func TestCancel(t *testing.T) {
	srv := httptest.NewServer(worker.New(worker.Config{}).Handler())
	defer srv.Close()
	url := "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/"
	for _, sc := range []string{loadtest.ScenarioLatency, loadtest.ScenarioThroughput, loadtest.ScenarioBulk} {
		t.Run(sc, func(t *testing.T) {
			cfg := loadtest.Config{Duration: time.Hour, Conns: 4, Scenarios: []string{sc}, Target: url, Baseline: url}
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := loadtest.Run(ctx, cfg, &bytes.Buffer{})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  loadtest.Config
		want string
	}{
		{"unknown scenario", loadtest.Config{Scenarios: []string{"latency", "nope"}}, `unknown scenario "nope"`},
		{"bad target", loadtest.Config{Target: "http://x/ws"}, "not a ws://"},
		{"unknown role", loadtest.Config{Role: "boss"}, `unknown role "boss"`},
		{"idle client without target", loadtest.Config{Role: loadtest.RoleIdleClient}, "needs a target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadtest.Run(t.Context(), tc.cfg, &bytes.Buffer{})
			require.ErrorContains(t, err, tc.want)
		})
	}
}
