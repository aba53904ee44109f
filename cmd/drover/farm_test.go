package main

import (
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/app"
)

// The CLI's --orphan-grace is the farm server's default, whose reason (a
// session may resume elsewhere within the managers' resume grace) it must
// not contradict.
func TestFarmOrphanGraceDefault(t *testing.T) {
	fs := newFarmCmd().Flags()
	f := fs.Lookup("orphan-grace")
	require.NotNil(t, f)
	require.Equal(t, farm.DefaultOrphanGrace.String(), f.DefValue)
	grace, err := fs.GetDuration("orphan-grace")
	require.NoError(t, err)
	resumeGrace, err := newManagerCmd().Flags().GetDuration("resume-grace")
	require.NoError(t, err)
	require.Greater(t, grace, resumeGrace, "an instance outlives the grace in which its session may resume")
}

// --stop-grace, on drover farm and drover up, defaults to the farm's own
// and reaches the config (stop_grace in YAML, DROVER_STOP_GRACE).
func TestStopGraceFlag(t *testing.T) {
	for name, cmd := range map[string]*cobra.Command{"farm": newFarmCmd(), "up": newUpCmd()} {
		fs := cmd.Flags()
		f := fs.Lookup("stop-grace")
		require.NotNil(t, f, name)
		require.Equal(t, farm.DefaultStopGrace.String(), f.DefValue, name)
		require.NoError(t, fs.Set("stop-grace", "45s"))
		var cfg app.RuntimeConfig
		_, err := load(fs, &cfg)
		require.NoError(t, err, name)
		require.Equal(t, 45*time.Second, cfg.StopGrace, name)
	}
}
