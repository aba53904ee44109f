package limits

import "time"

// Limits applies a Config: the rate limiters and the session counter it
// asks for, each nil (and free) when its limit is off. Its methods take a
// user key and an address key; an empty key is not limited, so a caller
// without an address (an in-process session) is limited by user only.
type Limits struct {
	cfg                    Config
	sessions               *Counter
	sessionUser, sessionIP *Keyed
	taskUser, taskIP       *Keyed
	uploadUser, uploadIP   *Keyed
}

// New returns the limits of cfg.
func New(cfg Config) *Limits {
	return &Limits{
		cfg:         cfg,
		sessions:    NewCounter(cfg.SessionsPerUser),
		sessionUser: NewKeyed(cfg.SessionRate, cfg.MaxKeys),
		sessionIP:   NewKeyed(cfg.SessionIPRate, cfg.MaxKeys),
		taskUser:    NewKeyed(cfg.TaskRate, cfg.MaxKeys),
		taskIP:      NewKeyed(cfg.TaskIPRate, cfg.MaxKeys),
		uploadUser:  NewKeyed(cfg.UploadRate, cfg.MaxKeys),
		uploadIP:    NewKeyed(cfg.UploadIPRate, cfg.MaxKeys),
	}
}

// Config is what l applies.
func (l *Limits) Config() Config { return l.cfg }

// Tasks reports whether tasks are limited at all: a rate or the tasks in
// flight of a session.
func (l *Limits) Tasks() bool { return l.cfg.tasksLimited() || l.cfg.TasksInFlight > 0 }

// AllowSession takes a new session from the user's and the address's
// buckets.
func (l *Limits) AllowSession(user, ip string) (bool, time.Duration) {
	return allow(l.sessionUser, l.sessionIP, user, ip)
}

// AllowTask takes a task from the user's and the address's buckets.
func (l *Limits) AllowTask(user, ip string) (bool, time.Duration) {
	return allow(l.taskUser, l.taskIP, user, ip)
}

// AllowUpload takes an upload from the user's and the address's buckets.
func (l *Limits) AllowUpload(user, ip string) (bool, time.Duration) {
	return allow(l.uploadUser, l.uploadIP, user, ip)
}

// AcquireSession takes one of the user's concurrent sessions; see
// Counter.Acquire.
func (l *Limits) AcquireSession(user string) (release func(), ok bool) {
	if user == "" {
		return func() {}, true
	}
	return l.sessions.Acquire(user)
}

// HoldSession counts one of the user's sessions without refusing it (a
// session moved here from another manager); see Counter.Hold.
func (l *Limits) HoldSession(user string) (release func()) {
	if user == "" {
		return func() {}
	}
	return l.sessions.Hold(user)
}

// SessionsPerUser is the most sessions a user may hold; 0: no limit.
func (l *Limits) SessionsPerUser() int { return l.sessions.Max() }

// Sweep drops the idle keys of every rate limiter; see Keyed.Sweep. A
// nil *Limits has none.
func (l *Limits) Sweep() {
	if l == nil {
		return
	}
	for _, k := range []*Keyed{l.sessionUser, l.sessionIP, l.taskUser, l.taskIP, l.uploadUser, l.uploadIP} {
		k.Sweep()
	}
}

// allow checks the user's bucket, then the address's. A refusal by the
// user's bucket leaves the address's untouched.
func allow(byUser, byIP *Keyed, user, ip string) (bool, time.Duration) {
	if user != "" {
		if ok, wait := byUser.Allow(user); !ok {
			return false, wait
		}
	}
	if ip != "" {
		if ok, wait := byIP.Allow(ip); !ok {
			return false, wait
		}
	}
	return true, 0
}
