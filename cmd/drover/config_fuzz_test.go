package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/manager"
)

// FuzzConfigFile reads any bytes as the --config file of drover up,
// manager and farm, and checks what the file says the way those commands
// do before they start anything: the pools by manager.New and farm.New,
// the limits by LimitsConfig. Nothing may panic; a file load refuses is
// refused with an error that says it is the config's fault ("read config"
// for the YAML, "config:" for a value of the wrong type); and loading is
// deterministic.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"",
		"addr: 127.0.0.1:0\ninstances: 2\nwarm: 1\n",
		"pools:\n  - name: cad\n    command: /bin/true\n    release: reuse\n    reset: {command: reset}\n",
		"pools:\n  - name: a\n    command: x\n  - name: a\n    command: y\n",
		"pools: [{name: s, protocol: stream, readiness: liveliness, liveliness: 5s}]\n",
		"pools:\n  - name: d\n    protocol: dial\n    command: cc\n    args: ['{{.Port}}', '{{.Bogus']\n",
		"limits_task_roles:\n  - roles: [viewer]\n    deny: [save]\nlimits_task_rate: 2.5\n",
		"managers: [http://m1:8181, http://m2:8181]\ntoken: t\nport_min: 9000\nport_max: 8000\n",
		"shutdown_grace: forever\n",
		"instances: [1, 2]\n",
		"pools: {name: x}\n",
		"&a [*a, *a]\n",
		"key: !!binary AAAA\n",
		"{\"pools\": [{\"name\": \"j\", \"labels\": {\"k\": \"v\"}}]}",
		"auth_jwt_key: |\n  -----BEGIN PUBLIC KEY-----\n  xx\n",
		"\t- tab\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	cmds := []struct {
		name string
		new  func() *cobra.Command
		cfg  func() any
	}{
		{"up", newUpCmd, func() any { return new(app.UpConfig) }},
		{"manager", newManagerCmd, func() any { return new(app.ManagerConfig) }},
		{"farm", newFarmCmd, func() any { return new(app.FarmConfig) }},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "drover.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			cfg, again := c.cfg(), c.cfg()
			err := loadFile(t, c.new(), path, cfg)
			errAgain := loadFile(t, c.new(), path, again)
			if (err == nil) != (errAgain == nil) {
				t.Fatalf("%s: loading twice: %v, then %v", c.name, err, errAgain)
			}
			if err != nil {
				if msg := err.Error(); !strings.HasPrefix(msg, "read config ") && !strings.HasPrefix(msg, "config: ") {
					t.Fatalf("%s: the error does not say it is the config's: %q", c.name, msg)
				}
				continue
			}
			check(t, cfg)
		}
	})
}

// loadFile loads the config file at path with the flags of cmd into cfg.
func loadFile(t *testing.T, cmd *cobra.Command, path string, cfg any) error {
	t.Helper()
	if err := cmd.Flags().Set("config", path); err != nil {
		t.Fatal(err)
	}
	_, err := load(cmd.Flags(), cfg)
	return err
}

// check validates a loaded config as the commands do before they start:
// errors are fine, panics are not.
func check(t *testing.T, cfg any) {
	var pools []app.PoolConfig
	switch c := cfg.(type) {
	case *app.UpConfig:
		pools = c.Pools
		_ = c.Limits()
		_ = c.TaskFilter()
	case *app.ManagerConfig:
		_ = c.Limits()
		_ = c.TaskFilter()
	case *app.FarmConfig:
		pools = c.Pools
	}
	if len(pools) > 16 {
		return // each pool costs; the fuzzer finds the parsers' bugs in fewer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mp := make([]manager.Pool, 0, len(pools))
	specs := make([]farm.PoolSpec, 0, len(pools))
	for _, p := range pools {
		mp = append(mp, p.Pool)
		specs = append(specs, p.PoolSpec)
	}
	if m, err := manager.New(manager.Config{Pools: mp}); err == nil {
		if err := m.Shutdown(ctx); err != nil {
			t.Fatalf("manager shutdown: %v", err)
		}
	}
	if fm, err := farm.New(farm.Config{Slots: 1, Pools: specs}); err == nil {
		if err := fm.Close(ctx); err != nil {
			t.Fatalf("farm close: %v", err)
		}
	}
}
