package main

import "github.com/spf13/pflag"

// Default limits: generous where a limit costs nothing to legitimate use,
// off where only the operator knows the traffic (a rate per address
// would hurt users behind one NAT).
const defaultTasksInFlight = 1024

// limitsFlags are the flags of app.LimitsConfig.
func limitsFlags(fs *pflag.FlagSet) {
	fs.Int("limits-sessions-per-user", 0, "sessions a user may have open at once on this manager; more are refused with quota_exceeded (0: no limit)")
	rate := func(name, what, per string) {
		fs.Float64("limits-"+name+"-rate", 0, what+" per second "+per+", on average; past it: rate_limited, or 429 with Retry-After (0: no limit)")
		fs.Int("limits-"+name+"-burst", 0, what+" "+per+" at once after a quiet spell (0: the rate rounded up)")
	}
	rate("session", "new sessions", "per user")
	rate("session-ip", "new sessions", "per remote address")
	rate("task", "tasks", "per user")
	rate("task-ip", "tasks", "per remote address")
	rate("upload", "conversion uploads (upload, uploadArray, create, reconvert, uploadToken)", "per user")
	rate("upload-ip", "conversion uploads", "per remote address")
	fs.Int("limits-tasks-in-flight", defaultTasksInFlight, "tasks a session may have accepted and not yet answered (REST and in-process callers); more get quota_exceeded (0: no limit)")
}
