package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/app"
)

// TestTenancyConfig: the tenant quotas come from flags, the config file
// and the environment, for `drover up` and `drover manager`; what is no
// number is refused.
func TestTenancyConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(file, []byte("tenant_max_conversions: 4\ntenant_max_storage: 1073741824\n"), 0o600))
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		want  app.TenancyConfig
		fails bool
	}{
		{name: "defaults: no limits"},
		{name: "flags", args: []string{"--tenant-max-conversions", "2", "--tenant-max-storage", "1000"},
			want: app.TenancyConfig{TenantMaxConversions: 2, TenantMaxStorage: 1000}},
		{name: "file", args: []string{"--config", file}, want: app.TenancyConfig{TenantMaxConversions: 4, TenantMaxStorage: 1 << 30}},
		{name: "env over file", args: []string{"--config", file}, env: map[string]string{"DROVER_TENANT_MAX_STORAGE": "5"},
			want: app.TenancyConfig{TenantMaxConversions: 4, TenantMaxStorage: 5}},
		{name: "bad flag", args: []string{"--tenant-max-storage", "1GB"}, fails: true},
	}
	for _, tt := range tests {
		for _, cmdName := range []string{"up", "manager"} {
			t.Run(tt.name+"/"+cmdName, func(t *testing.T) {
				for k, v := range tt.env {
					t.Setenv(k, v)
				}
				cmd := newManagerCmd()
				if cmdName == "up" {
					cmd = newUpCmd()
				}
				err := cmd.Flags().Parse(tt.args)
				if err == nil {
					var mc app.ManagerConfig
					var uc app.UpConfig
					if cmdName == "up" {
						_, err = load(cmd.Flags(), &uc)
					} else {
						_, err = load(cmd.Flags(), &mc)
					}
					if !tt.fails {
						require.NoError(t, err)
						got := mc.TenancyConfig
						if cmdName == "up" {
							got = uc.TenancyConfig
						}
						require.Equal(t, tt.want, got)
						return
					}
				}
				require.True(t, tt.fails, "unexpected error %v", err)
				require.Error(t, err)
			})
		}
	}
}
