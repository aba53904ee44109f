package app

import "github.com/drover-dev/drover/limits"

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
