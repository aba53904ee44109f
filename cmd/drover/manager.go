package main

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/app"
)

func newManagerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the public server; farms on other machines register with it",
		Long: `manager serves client sessions and places them on the farms that register
with it over REST (drover farm --manager URL --token T). It runs no instances
itself and refuses to start without a farm token. Pools (name, warm, release,
reset, task_timeout, queue_timeout, idle_timeout, max_lifetime) come from the YAML file
given with --config; without any, sessions go to pool "default". Every flag can
also be set in that file (the same names, with _ for -) or as DROVER_<NAME> in
the environment.`,
		Example: `  DROVER_FARM_TOKEN=s3cret drover manager --addr :8181 --admin-token adm1n`,
		Args:    cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.String("config", "", "YAML config file")
	fs.String("addr", ":8181", "address the manager listens on")
	fs.String("farm-token", "", "token farms authenticate with (required; prefer DROVER_FARM_TOKEN)")
	fs.String("admin-token", "", "token of admin calls (drain, end sessions, API keys, full /status); none: callers on this machine are admins while no other authentication is set (prefer DROVER_ADMIN_TOKEN)")
	fs.Int("warm", 0, "idle instances kept ready in the default pool (when the config has no pools)")
	fs.Float64("health-threshold", 0.9, "busy ratio at which /health answers 503")
	fs.Duration("resume-grace", 30*time.Second, "how long a dropped session stays resumable")
	fs.Int64("max-message-size", 4<<20, "largest client message in bytes")
	fs.Duration("heartbeat-interval", time.Second, "how often farms send heartbeats; a farm silent for 3 is dead")
	fs.Duration("shutdown-grace", 10*time.Second, "how long shutdown may take")
	fs.String("redis", "", "Redis URL (redis://[:password@]host:port/db) shared by the managers behind one load balancer; empty: in-memory state, this manager alone (prefer DROVER_REDIS when it holds a password)")
	fs.String("id", "", "this manager's id in the shared state (default: host name plus a random suffix)")
	conversionFlags(fs)
	securityFlags(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var cfg app.ManagerConfig
		if _, err := load(fs, &cfg); err != nil {
			return err
		}
		scrubSecretEnv("DROVER_FARM_TOKEN", "DROVER_ADMIN_TOKEN", "DROVER_REDIS", "DROVER_WEBHOOK_SECRET", "DROVER_URL_SECRET", "DROVER_METRICS_TOKEN")
		cfg.S3.TakeEnvCredentials()
		if cfg.FarmToken == "" {
			return app.ErrNoFarmToken
		}
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		node, err := app.NewManager(cfg, log, newRegistry())
		if err != nil {
			return err
		}
		defer reloadOnHangup(node, log)()
		base := httpBase(node.Addr())
		web, ws := schemes(cfg.TLSCert != "")
		admin := "POST " + web + "://" + base + "/api/v1/farms/ID/drain"
		if cfg.AdminToken == "" {
			admin += " (no --admin-token: an admin role, or this machine while no authentication is set)"
		}
		fmt.Fprintf(cmd.OutOrStdout(), `drover manager is up; farms register at %[1]s://%[3]s/api/v1/farms
  WebSocket sessions  %[2]s://%[3]s/ws
  dashboard           %[1]s://%[3]s/ui/
  health, status      %[1]s://%[3]s/health  %[1]s://%[3]s/status
  drain a farm        %[4]s
`, web, ws, base, admin)
		err = node.Run(cmd.Context())
		log.Info("drover manager stopped")
		return err
	}
	return cmd
}

// scrubSecretEnv removes secrets from the environment once the
// configuration holds them, so that no process started later (a farm's
// instances) inherits them.
func scrubSecretEnv(names ...string) {
	for _, n := range names {
		_ = os.Unsetenv(n)
	}
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
