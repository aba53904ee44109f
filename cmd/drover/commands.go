package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/internal/tools/loadtest"
	"github.com/drover-dev/drover/worker"
	"github.com/drover-dev/drover/worker/viewer"
)

var version = "dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "drover",
		Short:         "Session instance manager over WebSockets",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.AddCommand(newUpCmd(), newManagerCmd(), newFarmCmd(), newWorkerCmd(), newCallCmd(), newLoadCmd(), newBenchCmd(), newConvertCmd(), newKeysCmd())
	return root
}

// load merges, lowest first: flag defaults, the YAML file named by --config,
// DROVER_* environment variables, and the flags given explicitly.
func load(fs *pflag.FlagSet, out any) (*koanf.Koanf, error) {
	k := koanf.New(".")
	if path, _ := fs.GetString("config"); path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	if err := k.Load(env.ProviderWithValue("DROVER_", ".", func(key, value string) (string, any) {
		key = strings.ToLower(strings.TrimPrefix(key, "DROVER_"))
		return key, envValue(fs, key, value)
	}), nil); err != nil {
		return nil, err
	}
	// Given k, posflag takes a flag the user typed always, and a default only
	// where neither the file nor the environment set the key.
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		return strings.ReplaceAll(f.Name, "-", "_"), posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return nil, err
	}
	if err := k.UnmarshalWithConf("", out, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return k, nil
}

// envValue parses an environment value the way the flag of the same name
// would: lists are comma-separated, maps are k=v pairs. Other values stay
// strings for the decoder.
func envValue(fs *pflag.FlagSet, key, value string) any {
	f := fs.Lookup(strings.ReplaceAll(key, "_", "-"))
	if f == nil {
		return value
	}
	switch f.Value.Type() {
	case "stringSlice", "stringArray":
		var out []string
		for v := range strings.SplitSeq(value, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	case "stringToString":
		out := map[string]any{}
		for kv := range strings.SplitSeq(value, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if k != "" {
				out[k] = v
			}
		}
		return out
	}
	return value
}

func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	lvl, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(lvl)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q", lvl)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q", format)
}

func newUpCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a manager and a local farm of reference workers on this machine",
		Long: `up runs the whole system with no configuration: a manager, a local farm
and an in-memory store. Every flag can also be set in the YAML file given with
--config (the same names, with _ for -) or as DROVER_<NAME> in the environment.`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.String("config", "", "YAML config file")
	fs.String("addr", ":8181", "address the manager listens on")
	fs.Int("instances", 8, "instance slots of the local farm")
	fs.Int("warm", 2, "idle instances kept ready in the default pool")
	fs.Int("procs", 0, "CPUs drover runs Go code on at once (GOMAXPROCS); 0: half of the machine's, at least 1, the rest left to the local instances, unless $GOMAXPROCS says otherwise. On 2 CPUs, 2 opens sessions that each start a process faster, at some added latency a task")
	fs.Float64("health-threshold", 0.9, "busy ratio at which /health answers 503")
	fs.Duration("resume-grace", 30*time.Second, "how long a dropped session stays resumable")
	fs.Int64("max-message-size", 4<<20, "largest client message in bytes")
	fs.Duration("shutdown-grace", 10*time.Second, "how long shutdown may take")
	fs.String("redis", "", "Redis URL to share state with other managers (see drover manager); empty: in-memory")
	fs.Int("job-slots", farm.DefaultJobSlots, "conversion jobs the local farm runs at once (maxConversions); 0: none")
	fs.String("admin-token", "", "token of admin calls (drain, end sessions, API keys, full /status); none: callers on this machine are admins while no other authentication is set (prefer DROVER_ADMIN_TOKEN)")
	cacheFlags(fs, "one per --data directory in $XDG_STATE_HOME/drover or the temporary directory")
	converterFlags(fs)
	conversionFlags(fs)
	securityFlags(fs)
	runtimeFlags(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var cfg app.UpConfig
		if _, err := load(fs, &cfg); err != nil {
			return err
		}
		if cfg.Instances < 1 {
			return errors.New("--instances must be at least 1")
		}
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		runtime.GOMAXPROCS(upProcs(cfg.Procs))
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		scrubSecretEnv("DROVER_REDIS", "DROVER_WEBHOOK_SECRET", "DROVER_URL_SECRET", "DROVER_ADMIN_TOKEN", "DROVER_METRICS_TOKEN") // the local farm's instances inherit the environment
		cfg.S3.TakeEnvCredentials()
		up, err := app.NewUp(cfg, log, reg)
		if err != nil {
			return err
		}
		defer reloadOnHangup(up, log)()
		base := httpBase(up.Addr())
		web, ws := schemes(cfg.TLSCert != "")
		warm := 0
		for _, p := range up.Manager.Status().Pools {
			warm += p.Warm
		}
		fmt.Fprintf(cmd.OutOrStdout(), `drover is up: %[1]d instance slots, %[2]d warm
  WebSocket sessions  %[4]s://%[3]s/ws
  conversions         %[5]s://%[3]s/api/ (%[6]d job slots; files in %[7]s)
  conversion page     %[5]s://%[3]s/ui/convert.html
  dashboard           %[5]s://%[3]s/ui/
  health, status      %[5]s://%[3]s/health  %[5]s://%[3]s/status
Press Ctrl-C to stop.
`, up.Farm.Slots(), warm, base, ws, web, max(cfg.JobSlots, 0), filesWhere(cfg.ConversionConfig))
		err = up.Run(cmd.Context())
		log.Info("drover stopped")
		return err
	}
	return cmd
}

// upProcs is the GOMAXPROCS of drover up: n when set; else half of what
// Go would take (at least 1), unless $GOMAXPROCS decides. up runs its
// instances on the same machine, and they need CPUs of their own: a
// manager whose every CPU is also an instance's pays for each handoff
// between its goroutines with a thread wake-up (a futex) instead of a run
// queue push. On 2 CPUs, one for the manager took its CPU per task from
// 51 to 39 µs and its added latency from +66 to +46 µs, at the same
// throughput (drover bench rtt,tput). It costs process-heavy work: stdio
// sessions that each start a process opened at 0.38 of websocketd's rate
// with 1 against 0.66 with 2 while blocking waits held the P, and 0.57
// with 1 since (drover bench stdio, 2026-12-07, separate runs). What is
// left is the fork: os/exec forks with vfork, whose thread keeps the only
// P until the child has exec'd, and a child the kernel queues behind a
// busy CPU holds the whole manager for a millisecond or more. A later run
// (BENCHMARKS.md, stop 29): with 2, stdio sessions 0.93 of websocketd's
// against 0.71 and tput 0.81 of nginx-64's against 0.65, but an added p50
// 1.30× nginx's against 1.15×, so the default stays.
func upProcs(n int) int {
	if n > 0 {
		return n
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// conversionFlags are the flags of app.ConversionConfig.
func conversionFlags(fs *pflag.FlagSet) {
	fs.String("data", drover.DefaultDataDir, "data directory of conversions: uploads, outputs, item records")
	fs.Int64("max-upload", conversion.DefaultMaxUpload, "largest upload of one conversion item, in bytes")
	fs.String("webhook-secret", "", "secret that signs webhooks (prefer DROVER_WEBHOOK_SECRET; empty: a random one)")
	fs.StringSlice("webhook-allow", nil, "hosts webhooks may reach although private or loopback (repeatable)")
	fs.Duration("webhook-retry-for", webhook.DefaultRetryFor, "how long a webhook is retried")
	fs.Duration("webhook-min-backoff", webhook.DefaultMinBackoff, "wait before a webhook's first retry, doubled for each further one")
	fs.Int("max-attempts", queue.DefaultMaxAttempts, "attempts of a conversion job before it ends in ERROR")
	fs.Duration("job-lease", queue.DefaultLease, "length of a job's lease; farms renew it at a third")
	streamFlags(fs)
	s3Flags(fs)
	tokenFlags(fs)
	retentionFlags(fs)
	tenancyFlags(fs)
}

func coalesceData(d string) string {
	if d == "" {
		return drover.DefaultDataDir
	}
	return d
}

// runtimeFlags are the flags of app.RuntimeConfig.
func runtimeFlags(fs *pflag.FlagSet) {
	fs.String("runtime", farm.RuntimeProcess, "where instances of pools that name no runtime run: process or docker (a container each)")
	fs.String("image", farm.DefaultImage, "the image of docker pools that name none (make image builds the reference worker's)")
	fs.Duration("stop-grace", farm.DefaultStopGrace,
		"how long a stopped instance has to exit after SIGTERM (a container: its stop signal) before SIGKILL")
}

// httpBase turns a listen address into one a browser can use.
func httpBase(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func newWorkerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the reference instance program (native protocol)",
		Long: `worker listens on --addr, or on --host:$DROVER_PORT, and serves tasks:
echo, sleep, set, get, reset, pid, model, stream, results, fail and crash. reset
empties the state of set and get; model lists the files of --model-dir.`,
		Args: cobra.NoArgs,
	}
	addr := cmd.Flags().String("addr", "", "listen address (default --host:$DROVER_PORT)")
	host := cmd.Flags().String("host", "127.0.0.1", "listen host with $DROVER_PORT (0.0.0.0 in a container)")
	modelDir := cmd.Flags().String("model-dir", "", "the directory of the model the instance serves")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		return worker.Run(cmd.Context(), worker.Config{Addr: *addr, Host: *host, ModelDir: *modelDir, Logger: log})
	}
	cmd.AddCommand(newViewerCmd())
	return cmd
}

func newViewerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "viewer",
		Short: "Run the reference stream instance: serves the GLB models of a directory over a WebSocket",
		Long: `viewer listens on --listen (default 127.0.0.1:$DROVER_PORT, as a farm starts it)
and serves the .glb files of --models to viewers: {"type":"list"} answers the
model names; {"type":"get","name":N} answers a model header, the GLB in binary
frames of at most 1 MiB and an end frame. Streaming sessions run it as the
viewer pool when no HOOPS SC server is configured.`,
		Args: cobra.NoArgs,
	}
	listen := cmd.Flags().String("listen", "", "listen address (default 127.0.0.1:$DROVER_PORT)")
	models := cmd.Flags().String("models", "", "the directory of models to serve (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		return viewer.Run(cmd.Context(), *listen, viewer.Config{Dir: *models, Logger: log})
	}
	return cmd
}

func newLoadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Measure drover against a direct connection to the reference worker",
		Long: `load starts a reference worker and a drover stack in this process, runs the
same clients against both and prints each figure with its ratio drover/direct,
so that the numbers mean something on any machine. Scenarios: latency
(sequential echo tasks), throughput (--conns connections), bulk (64 KiB binary
frames) and idle (memory per idle connection). --target and --baseline measure
servers that run elsewhere instead.`,
		Args: cobra.NoArgs,
	}
	var cfg loadtest.Config
	fs := cmd.Flags()
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measuring time per scenario and target")
	fs.IntVar(&cfg.Conns, "conns", 64, "connections of the throughput scenario")
	fs.IntVar(&cfg.Window, "window", 1, "tasks in flight per throughput connection")
	fs.IntVar(&cfg.Idle, "idle", 1000, "connections of the idle scenario")
	fs.StringSliceVar(&cfg.Scenarios, "scenarios", loadtest.Scenarios, "scenarios to run")
	fs.StringVar(&cfg.Target, "target", "", "WebSocket URL of a drover to measure (ws://host:port/ws) instead of starting one")
	fs.StringVar(&cfg.Baseline, "baseline", "", "WebSocket URL of a reference worker to measure against instead of starting one")
	fs.BoolVar(&cfg.JSON, "json", false, "write the report as JSON")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.StringVar(&cfg.Role, "role", "", "internal: run as the idle scenario's client process")
	_ = fs.MarkHidden("role")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// The servers started here log every session at info level.
		if f := cmd.Flag("log-level"); f != nil && !f.Changed {
			_ = f.Value.Set("warn")
		}
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		cfg.Logger, cfg.Progress = log, cmd.ErrOrStderr()
		return loadtest.Run(cmd.Context(), cfg, cmd.OutOrStdout())
	}
	return cmd
}
