package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/internal/lib/httpguard"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
)

// The HTTP limits come from the defaults, a config file, the environment
// and flags, in that order, on every command that runs a server; the
// body bound only where there are gin routes (up and manager).
func TestHardenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte("http_body_timeout: 45s\nhttp_max_header_bytes: 65536\n"), 0o600))
	t.Setenv("DROVER_HTTP_IDLE_TIMEOUT", "30s")
	want := app.HardenConfig{HTTPReadHeaderTimeout: 5 * time.Second, HTTPIdleTimeout: 30 * time.Second,
		HTTPBodyTimeout: 45 * time.Second, HTTPBodyMinBytes: httpguard.DefaultBodyMinBytes,
		HTTPWriteStallTimeout: httpguard.DefaultWriteStall, HTTPMaxHeaderBytes: 65536}

	for _, cmd := range []struct {
		name   string
		routes bool
	}{{"up", true}, {"manager", true}, {"farm", false}} {
		t.Run(cmd.name, func(t *testing.T) {
			var got app.HardenConfig
			switch cmd.name {
			case "up":
				c := newUpCmd()
				require.NoError(t, c.Flags().Set("config", path))
				require.NoError(t, c.Flags().Set("http-read-header-timeout", "5s"))
				var uc app.UpConfig
				_, err := load(c.Flags(), &uc)
				require.NoError(t, err)
				got = uc.HardenConfig
			case "manager":
				c := newManagerCmd()
				require.NoError(t, c.Flags().Set("config", path))
				require.NoError(t, c.Flags().Set("http-read-header-timeout", "5s"))
				var mc app.ManagerConfig
				_, err := load(c.Flags(), &mc)
				require.NoError(t, err)
				got = mc.HardenConfig
			case "farm":
				c := newFarmCmd()
				require.NoError(t, c.Flags().Set("config", path))
				require.NoError(t, c.Flags().Set("http-read-header-timeout", "5s"))
				require.Nil(t, c.Flags().Lookup("http-max-body-bytes"))
				var fc app.FarmConfig
				_, err := load(c.Flags(), &fc)
				require.NoError(t, err)
				got = fc.HardenConfig
			}
			w := want
			if cmd.routes {
				w.HTTPMaxBodyBytes = bodylimit.DefaultBodyLimit
				w.TrustedProxies = []string{} // the flag's empty default
			}
			require.Equal(t, w, got)
		})
	}
}
