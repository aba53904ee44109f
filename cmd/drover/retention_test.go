package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/internal/lib/duration"
)

// TestRetentionConfig: the retention settings take days from flags, the
// config file and the environment, and refuse what is no duration.
func TestRetentionConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(file, []byte("retention_max_age: 30d\nretention_unfinished: 36h\n"), 0o600))
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		want  app.RetentionConfig
		fails bool
	}{
		{name: "defaults", want: app.RetentionConfig{
			RetentionInterval: duration.Duration(conversion.DefaultRetentionInterval)}},
		{name: "flags", args: []string{"--retention-max-age", "30d", "--retention-unfinished", "1d12h",
			"--retention-interval", "5m"}, want: app.RetentionConfig{RetentionMaxAge: duration.Duration(30 * duration.Day),
			RetentionUnfinished: duration.Duration(36 * time.Hour), RetentionInterval: duration.Duration(5 * time.Minute)}},
		{name: "file", args: []string{"--config", file}, want: app.RetentionConfig{
			RetentionMaxAge: duration.Duration(30 * duration.Day), RetentionUnfinished: duration.Duration(36 * time.Hour),
			RetentionInterval: duration.Duration(conversion.DefaultRetentionInterval)}},
		{name: "env over file", args: []string{"--config", file}, env: map[string]string{"DROVER_RETENTION_MAX_AGE": "7d"},
			want: app.RetentionConfig{RetentionMaxAge: duration.Duration(7 * duration.Day),
				RetentionUnfinished: duration.Duration(36 * time.Hour),
				RetentionInterval:   duration.Duration(conversion.DefaultRetentionInterval)}},
		{name: "bad flag", args: []string{"--retention-max-age", "30"}, fails: true},
		{name: "bad env", env: map[string]string{"DROVER_RETENTION_UNFINISHED": "-1d"}, fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cmd := newManagerCmd()
			err := cmd.Flags().Parse(tt.args)
			if err == nil {
				var cfg app.ManagerConfig
				_, err = load(cmd.Flags(), &cfg)
				if !tt.fails {
					require.NoError(t, err)
					require.Equal(t, tt.want, cfg.RetentionConfig)
					return
				}
			}
			require.True(t, tt.fails, "unexpected error %v", err)
			require.Error(t, err)
		})
	}
}
