package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// TestLimitsConfig: the limits come from flags, the config file and the
// environment under their flat keys, and off but for tasks in flight by
// default.
func TestLimitsConfig(t *testing.T) {
	for _, cmd := range []*cobra.Command{newUpCmd(), newManagerCmd()} {
		var cfg app.ManagerConfig
		_, err := load(cmd.Flags(), &cfg)
		require.NoError(t, err)
		require.Equal(t, limits.Config{TasksInFlight: 1024}, cfg.Limits(), "defaults of %s", cmd.Name())
	}

	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte("limits_sessions_per_user: 2\nlimits_session_rate: 0.5\nlimits_session_burst: 3\n"), 0o600))
	t.Setenv("DROVER_LIMITS_UPLOAD_IP_RATE", "2.5")
	for _, cmdName := range []string{"up", "manager"} {
		t.Run(cmdName, func(t *testing.T) {
			cmd := newUpCmd()
			if cmdName == "manager" {
				cmd = newManagerCmd()
			}
			fs := cmd.Flags()
			require.NoError(t, fs.Set("config", path))
			require.NoError(t, fs.Set("limits-task-rate", "20"))
			require.NoError(t, fs.Set("limits-task-burst", "40"))
			require.NoError(t, fs.Set("limits-tasks-in-flight", "8"))
			var cfg app.ManagerConfig
			_, err := load(fs, &cfg)
			require.NoError(t, err)
			require.Equal(t, limits.Config{
				SessionsPerUser: 2,
				SessionRate:     limits.Rate{PerSecond: 0.5, Burst: 3},
				TaskRate:        limits.Rate{PerSecond: 20, Burst: 40},
				UploadIPRate:    limits.Rate{PerSecond: 2.5},
				TasksInFlight:   8,
			}, cfg.Limits())
		})
	}
}

// TestTaskRolesFromConfig: the task filter by role is read from the
// config file, and filters as its rules say.
func TestTaskRolesFromConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
limits_task_roles:
  - {roles: [admin], allow: ["*"]}
  - roles: [viewer]
    allow: [load, render]
  - {deny: ["*"]}
limits_task_command_field: op
`), 0o600))
	cmd := newUpCmd()
	require.NoError(t, cmd.Flags().Set("config", path))
	var cfg app.UpConfig
	_, err := load(cmd.Flags(), &cfg)
	require.NoError(t, err)
	require.Equal(t, []app.TaskRoleRule{{Roles: []string{"admin"}, Allow: []string{"*"}},
		{Roles: []string{"viewer"}, Allow: []string{"load", "render"}}, {Deny: []string{"*"}}}, cfg.LimitsTaskRoles)

	h := middleware.Chain{cfg.TaskFilter()}.Then(middleware.HandlerFunc(
		func(context.Context, *session.Task, session.ResultWriter) error { return nil }))
	run := func(roles []string, data string) error {
		info := &session.Info{ID: "s"}
		auth.SetSession(info, &auth.Principal{User: "u", Roles: roles})
		return h.ServeTask(context.Background(), &session.Task{Data: []byte(data), Session: info}, nil)
	}
	require.NoError(t, run([]string{"viewer"}, `{"op":"render"}`))
	require.NoError(t, run([]string{"admin"}, `{"op":"drop"}`))
	var se *session.Error
	require.ErrorAs(t, run([]string{"viewer"}, `{"op":"drop","command":"render"}`), &se)
	require.Equal(t, session.CodeForbidden, se.Code)
	require.ErrorAs(t, run(nil, `{"op":"render"}`), &se)

	var none app.UpConfig
	require.Nil(t, none.TaskFilter(), "no rules, no filter")
}
