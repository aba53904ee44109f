package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/tools/loadtest"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure drover against the direct worker, nginx, HAProxy and websocketd",
		Long: `bench starts the targets as child processes on loopback: the reference
worker (direct), one worker per connection started as a farm starts them
(direct-64), Debian's nginx and HAProxy proxying to the direct worker,
` + "`drover up`" + ` and websocketd. It measures them with the same Go client in
interleaved rounds and prints medians with their ratios to direct (idle: to a
plain gorilla server; stdio: to websocketd). A missing nginx, haproxy,
websocketd or redis-server is skipped with a line, unless --require.
Scenarios: rtt, tput (with CPU per task), stream, idle, open (warm, cold
process, cold container: needs Docker and --image, which make image builds),
stdio, jobs, failover.
BENCHMARKS.md describes the method; make bench-report reruns it.`,
		Args: cobra.NoArgs,
	}
	var cfg loadtest.BenchConfig
	fs := cmd.Flags()
	fs.IntVar(&cfg.Rounds, "rounds", 4, "interleaved rounds; the report gives medians")
	fs.IntVar(&cfg.Tasks, "tasks", 5000, "sequential tasks of rtt per round and target")
	fs.DurationVar(&cfg.Duration, "duration", 3*time.Second, "measured time of tput, stream and stdio per round and target")
	fs.IntVar(&cfg.Conns, "conns", 64, "connections of tput (and workers of direct-64)")
	fs.IntSliceVar(&cfg.StreamConns, "stream-conns", []int{1, 8}, "connection counts of stream")
	fs.IntVar(&cfg.StreamBytes, "stream-bytes", 64<<20, "bytes of one stream task, in 64 KiB frames")
	fs.IntVar(&cfg.Idle, "idle", 4000, "connections of idle")
	fs.IntVar(&cfg.IdleScale, "idle-scale", 50000, "connections of idle's run of drover at scale, as many as the open-file limit allows (-1: none)")
	fs.IntVar(&cfg.Opens, "opens", 40, "sequential session opens per kind, round and target")
	fs.IntVar(&cfg.StdioClients, "stdio-clients", 16, "clients of stdio's message rate")
	fs.IntVar(&cfg.StdioOpeners, "stdio-openers", 8, "concurrent openers of stdio's session rate")
	fs.IntVar(&cfg.Jobs, "jobs", 20000, "conversion jobs per round and queue")
	fs.StringVar(&cfg.Image, "image", farm.DefaultImage, "reference worker image of open's cold containers (make image builds it)")
	fs.StringSliceVar(&cfg.Scenarios, "scenarios", loadtest.BenchScenarios, "scenarios to run (load's names work too)")
	fs.StringSliceVar(&cfg.Targets, "targets", loadtest.Targets, "targets to measure")
	fs.StringSliceVar(&cfg.Drover, "drover-bin", nil, "the drover executable whose up, manager, farm and worker are measured (default this one): an older build, for a before-and-after table")
	fs.BoolVar(&cfg.Require, "require", false, "fail instead of skipping a target whose program is missing")
	fs.BoolVar(&cfg.JSON, "json", false, "write the report as JSON")
	fs.BoolVar(&cfg.Markdown, "markdown", false, "write the report as Markdown tables (BENCHMARKS.md's figures)")
	fs.StringVar(&cfg.SVGDir, "svg", "", "write one SVG bar chart per figure into this directory")
	fs.StringVar(&cfg.FromJSON, "from-json", "", "write the report of an earlier --json run in the chosen format instead of measuring")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg.Progress = cmd.ErrOrStderr()
		return loadtest.Bench(cmd.Context(), cfg, cmd.OutOrStdout())
	}
	return cmd
}
