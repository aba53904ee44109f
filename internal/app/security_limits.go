package app

import (
	"cmp"

	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/middleware"
)

// LimitsConfig: quotas and rate limits of sessions, tasks and uploads, per
// user and per remote address (package limits). A rate of 0 is no limit;
// a burst of 0 is the rate rounded up.
type LimitsConfig struct {
	LimitsSessionsPerUser int     `koanf:"limits_sessions_per_user"`
	LimitsSessionRate     float64 `koanf:"limits_session_rate"`
	LimitsSessionBurst    int     `koanf:"limits_session_burst"`
	LimitsSessionIPRate   float64 `koanf:"limits_session_ip_rate"`
	LimitsSessionIPBurst  int     `koanf:"limits_session_ip_burst"`
	LimitsTaskRate        float64 `koanf:"limits_task_rate"`
	LimitsTaskBurst       int     `koanf:"limits_task_burst"`
	LimitsTaskIPRate      float64 `koanf:"limits_task_ip_rate"`
	LimitsTaskIPBurst     int     `koanf:"limits_task_ip_burst"`
	LimitsUploadRate      float64 `koanf:"limits_upload_rate"`
	LimitsUploadBurst     int     `koanf:"limits_upload_burst"`
	LimitsUploadIPRate    float64 `koanf:"limits_upload_ip_rate"`
	LimitsUploadIPBurst   int     `koanf:"limits_upload_ip_burst"`
	LimitsTasksInFlight   int     `koanf:"limits_tasks_in_flight"`
	// LimitsTaskRoles filter tasks by the roles of their session's
	// principal (middleware.RoleFilter): the first rule whose roles the
	// principal holds decides. Config file only:
	//
	//	limits_task_roles:
	//	  - {roles: [admin], allow: ["*"]}
	//	  - {roles: [viewer], allow: [load, render]}
	//	  - {deny: ["*"]}
	LimitsTaskRoles []TaskRoleRule `koanf:"limits_task_roles"`
	// LimitsTaskCommandField is the member of task data that names its
	// command (middleware.DefaultCommandField, "command").
	LimitsTaskCommandField string `koanf:"limits_task_command_field"`
}

// TaskRoleRule is one rule of LimitsTaskRoles (middleware.RoleRule).
type TaskRoleRule struct {
	Roles []string `koanf:"roles"`
	Allow []string `koanf:"allow"`
	Deny  []string `koanf:"deny"`
}

// TaskFilter is the middleware of LimitsTaskRoles; nil without rules.
func (c LimitsConfig) TaskFilter() middleware.Middleware {
	if len(c.LimitsTaskRoles) == 0 {
		return nil
	}
	rules := make([]middleware.RoleRule, 0, len(c.LimitsTaskRoles))
	for _, r := range c.LimitsTaskRoles {
		rules = append(rules, middleware.RoleRule{Roles: r.Roles, Allow: r.Allow, Deny: r.Deny})
	}
	return middleware.RoleFilterOn(cmp.Or(c.LimitsTaskCommandField, middleware.DefaultCommandField), rules...)
}

// Limits is c as the manager takes it (manager.Config.Limits).
func (c LimitsConfig) Limits() limits.Config {
	return limits.Config{
		SessionsPerUser: c.LimitsSessionsPerUser,
		SessionRate:     limits.Rate{PerSecond: c.LimitsSessionRate, Burst: c.LimitsSessionBurst},
		SessionIPRate:   limits.Rate{PerSecond: c.LimitsSessionIPRate, Burst: c.LimitsSessionIPBurst},
		TaskRate:        limits.Rate{PerSecond: c.LimitsTaskRate, Burst: c.LimitsTaskBurst},
		TaskIPRate:      limits.Rate{PerSecond: c.LimitsTaskIPRate, Burst: c.LimitsTaskIPBurst},
		UploadRate:      limits.Rate{PerSecond: c.LimitsUploadRate, Burst: c.LimitsUploadBurst},
		UploadIPRate:    limits.Rate{PerSecond: c.LimitsUploadIPRate, Burst: c.LimitsUploadIPBurst},
		TasksInFlight:   c.LimitsTasksInFlight,
	}
}
