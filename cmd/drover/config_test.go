package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/manager"
)

// TestPoolResetFromConfig reads the reset of reuse pools as a config file
// writes it: a YAML map, in block or flow style, JSON syntax (which YAML
// reads as the same map), or none.
func TestPoolResetFromConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
pools:
  - name: flow
    release: reuse
    reset: {command: reset}
  - name: block
    release: reuse
    reset:
      command: reset
      keep: [license]
  - name: json
    release: reuse
    reset: {"command": "reset"}
  - name: none
    release: reuse
    reset: none
  - name: kill
`), 0o600))
	cmd := newUpCmd()
	require.NoError(t, cmd.Flags().Set("config", path))
	var cfg app.UpConfig
	_, err := load(cmd.Flags(), &cfg)
	require.NoError(t, err)

	want := map[string]string{
		"flow":  `{"command":"reset"}`,
		"block": `{"command":"reset","keep":["license"]}`,
		"json":  `{"command":"reset"}`,
	}
	var pools []manager.Pool
	for _, p := range cfg.Pools {
		pools = append(pools, p.Pool)
		switch p.Pool.Name {
		case "none":
			require.Equal(t, manager.ResetNone, p.Reset)
		case "kill":
			require.Nil(t, p.Reset)
		default:
			b, err := json.Marshal(p.Reset)
			require.NoError(t, err)
			require.JSONEq(t, want[p.Pool.Name], string(b), p.Pool.Name)
		}
	}
	m, err := manager.New(manager.Config{Pools: pools})
	require.NoError(t, err)
	require.NoError(t, m.Shutdown(context.Background()))
}

// TestUpRefusesReuseWithoutReset: a reuse pool that does not say how its
// instances are reset stops drover up at start, with a message that names
// the pool and both ways out.
func TestUpRefusesReuseWithoutReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte("pools:\n  - name: cad\n    command: /bin/true\n    release: reuse\n"), 0o600))
	root := newRootCmd()
	root.SetArgs([]string{"up", "--config", path, "--addr", "127.0.0.1:0"})
	root.SetOut(io.Discard)
	err := root.Execute()
	require.Error(t, err)
	for _, want := range []string{`pool "cad"`, "release: reuse needs a reset", "reset: {command: reset}", "reset: none"} {
		require.Contains(t, err.Error(), want)
	}
}
