// Package limits holds drover's quotas and rate limits as plain types: a
// rate limiter per key (a user, an address) whose memory stays bounded
// however many keys it sees, a counter of concurrent holdings per key, and
// the Config that says how much of what each user and address may have.
//
// It does not know who a caller is or how a refusal reaches the client:
// the manager and the conversion API name the keys (a user and tenant, a
// remote address) and answer with an error frame or a 429.
package limits

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a token bucket: PerSecond events per second on average, and
// up to Burst at once after a quiet spell. The zero Rate (PerSecond 0 or
// less) is unlimited.
type Rate struct {
	PerSecond float64 `koanf:"per_second" json:"per_second"`
	// Burst is the size of the bucket; 0 means PerSecond rounded up, at
	// least 1.
	Burst int `koanf:"burst" json:"burst"`
}

// Unlimited reports whether r limits nothing.
func (r Rate) Unlimited() bool { return !(r.PerSecond > 0) } // NaN too

// burst is the bucket size r stands for.
func (r Rate) burst() int {
	if r.Burst > 0 {
		return r.Burst
	}
	if r.PerSecond >= math.MaxInt32 {
		return math.MaxInt32
	}
	return max(1, int(math.Ceil(r.PerSecond)))
}

func (r Rate) limit() rate.Limit {
	if math.IsInf(r.PerSecond, 1) {
		return rate.Inf
	}
	return rate.Limit(r.PerSecond)
}

// Config says how much each user and each remote address may do. The
// zero value of each field is unlimited.
//
// A user is a principal's user and tenant (a session without a principal
// counts as its remote address). Rates apply twice, per user and per
// address, each with its own bucket: a user cannot get past its rate by
// changing address, nor can an address by changing user. The per-address
// buckets are the IP fields; users behind one NAT share them, so they are
// best set several times the per-user ones.
type Config struct {
	// SessionsPerUser bounds the sessions a user has open at once on one
	// manager; the next is refused with quota_exceeded until one ends. A
	// resumed session is the same session, not a new one.
	SessionsPerUser int `koanf:"sessions_per_user" json:"sessions_per_user"`
	// SessionRate bounds how fast a user opens new sessions (WebSocket,
	// REST login, in-process); SessionIPRate the same per remote address.
	// Past it, a session is refused with rate_limited and the time to wait.
	SessionRate   Rate `koanf:"session_rate" json:"session_rate"`
	SessionIPRate Rate `koanf:"session_ip_rate" json:"session_ip_rate"`
	// TaskRate bounds how fast a user sends tasks, over all its sessions;
	// TaskIPRate the same per remote address. A task past it is answered
	// with rate_limited and the session goes on.
	TaskRate   Rate `koanf:"task_rate" json:"task_rate"`
	TaskIPRate Rate `koanf:"task_ip_rate" json:"task_ip_rate"`
	// UploadRate bounds how fast a user starts uploads to the conversion
	// API (upload, uploadArray, create, reconvert, uploadToken);
	// UploadIPRate the same per remote address. Past it: 429 with
	// Retry-After.
	UploadRate   Rate `koanf:"upload_rate" json:"upload_rate"`
	UploadIPRate Rate `koanf:"upload_ip_rate" json:"upload_ip_rate"`
	// TasksInFlight bounds the tasks a session has accepted and not yet
	// answered (REST and in-process callers may send them concurrently;
	// a WebSocket session reads its next task once the previous one is
	// answered). The task over it is answered with quota_exceeded.
	TasksInFlight int `koanf:"tasks_in_flight" json:"tasks_in_flight"`
	// MaxKeys bounds the keys each rate limiter remembers
	// (DefaultMaxKeys); see Keyed.
	MaxKeys int `koanf:"max_keys" json:"max_keys"`
}

// Enabled reports whether c limits anything.
func (c Config) Enabled() bool {
	return c.SessionsPerUser > 0 || c.TasksInFlight > 0 || c.sessionsLimited() || c.tasksLimited() ||
		c.uploadsLimited()
}

func (c Config) sessionsLimited() bool {
	return !c.SessionRate.Unlimited() || !c.SessionIPRate.Unlimited()
}
func (c Config) tasksLimited() bool { return !c.TaskRate.Unlimited() || !c.TaskIPRate.Unlimited() }
func (c Config) uploadsLimited() bool {
	return !c.UploadRate.Unlimited() || !c.UploadIPRate.Unlimited()
}

// RetryAfterSeconds is d as a Retry-After header says it: whole seconds,
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(1, s)
}
