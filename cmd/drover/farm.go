package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/app"
)

func newFarmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "farm",
		Short: "Run instances for managers on other machines",
		Long: `farm runs instances in --instances slots, registers with every --manager over
REST with the farm token, sends heartbeats, and serves its instances' WebSockets
on --addr. Pools come from the YAML file given with --config (name, command,
args, env, dir, protocol, start_timeout, runtime, image, ...); without any,
the farm runs the reference worker as pool "default": a process, or with
--runtime docker a container of --image.

SIGTERM (or a manager's drain) drains the farm: it takes no new instances,
waits until its sessions have ended or --max-drain passed, stops what is left,
deregisters and exits 0. A second SIGINT stops it at once.

A restarted farm first kills the instance processes its previous run left
behind, recorded in --state-dir, and removes the containers labelled with its
id, so keep --id (by default derived from the host name and --addr) stable.

Every flag can also be set in the config file (the same names, with _ for -)
or as DROVER_<NAME> in the environment; lists and labels there are
comma-separated (DROVER_MANAGER=http://a:8181,http://b:8181).`,
		Example: `  DROVER_TOKEN=s3cret drover farm --manager http://manager:8181 --addr :8282 --instances 8 --labels gpu=1`,
		Args:    cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.String("config", "", "YAML config file")
	fs.String("addr", ":8282", "address the farm's API and its instances' WebSockets listen on")
	fs.String("advertise", "", "the farm's base URL as managers reach it (default http://<addr>)")
	fs.StringSlice("manager", nil, "manager base URL to register with (repeatable or comma-separated)")
	fs.String("token", "", "farm token shared with the managers (required; prefer DROVER_TOKEN)")
	fs.Int("instances", 0, "instance slots (default one per CPU)")
	fs.StringToString("labels", nil, "labels clients can ask for, k=v,...")
	fs.Int("priority", 0, "placement priority; higher farms are filled first")
	fs.String("id", "", "farm id (default derived from the host name and --addr)")
	fs.Bool("direct", false, "advertise native and stream instances at their own ports instead of the farm's one port")
	fs.String("instance-host", "127.0.0.1", "address instances listen on (with --direct: one managers can reach)")
	fs.String("name", "", "display name (default the id)")
	fs.String("state-dir", "", "where the farm records its instance processes (default $XDG_STATE_HOME/drover/farm-ID or /tmp/drover-farm-ID)")
	fs.Duration("max-drain", 5*time.Minute, "longest wait for sessions to end when draining")
	fs.Duration("orphan-grace", farm.DefaultOrphanGrace,
		"stop a ready instance no manager is connected to after this long; keep it longer than the managers' --resume-grace")
	fs.Duration("shutdown-grace", 10*time.Second, "how long shutdown may take")
	fs.Int("job-slots", farm.DefaultJobSlots, "conversion jobs the farm runs at once (maxConversions); 0: none")
	converterFlags(fs)
	fs.Bool("shared-data", false, "the managers' --data directory is mounted here at the same path: read job inputs there")
	fs.String("job-dir", "", "where running conversion jobs keep their files (default in the temporary directory; if another farm process uses it, DIR.2, DIR.3, ...)")
	cacheFlags(fs, "cache in --state-dir")
	runtimeFlags(fs)
	hardenFlags(fs, false)
	farmTLSFlags(fs)
	fs.Duration("reconcile-interval", 30*time.Second, "how often the farm removes the containers labelled with its id that it does not track")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var cfg app.FarmConfig
		if _, err := load(fs, &cfg); err != nil {
			return err
		}
		scrubSecretEnv("DROVER_TOKEN") // the instances inherit the environment
		if cfg.Token == "" {
			return app.ErrNoToken
		}
		if cfg.Instances < 0 {
			return errors.New("--instances must not be negative")
		}
		log, err := newLogger(cmd)
		if err != nil {
			return err
		}
		node, err := app.NewFarm(cfg, log, newRegistry())
		if err != nil {
			return err
		}
		defer reloadOnHangup(node, log)()
		f := node.Farm
		web, _ := schemes(cfg.TLSCert != "")
		fmt.Fprintf(cmd.OutOrStdout(), `drover farm %s is up: %d instance slots, %d job slots, pools %s
  listening on        %s://%s
  advertised as       %s
  managers            %s
`, f.ID(), f.Slots(), max(cfg.JobSlots, 0), strings.Join(f.Pools(), ", "), web, node.Addr(), node.URL(), strings.Join(cfg.Managers, ", "))

		// The first SIGINT or SIGTERM drains; a second SIGINT stops at
		// once. main's context ends with the first signal too, or when an
		// embedding program cancels it: that drains as well.
		ctx, stop := context.WithCancel(context.WithoutCancel(cmd.Context()))
		defer stop()
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		go func() {
			parent := cmd.Context().Done()
			signalled := false
			for {
				select {
				case <-ctx.Done():
					return
				case <-parent:
					parent = nil
					node.Drain()
				case sig := <-sigs:
					switch {
					case !signalled:
						signalled = true
						log.Info("draining; a second SIGINT stops at once", "signal", sig.String())
						node.Drain()
					case sig == os.Interrupt:
						log.Info("stopping now", "signal", sig.String())
						stop()
						return
					default:
						log.Info("already draining", "signal", sig.String())
					}
				}
			}
		}()
		err = node.Run(ctx)
		log.Info("drover farm stopped", "farm", f.ID())
		return err
	}
	return cmd
}
