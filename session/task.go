package session

import (
	"sync"
	"time"
)

// Task is one task on its way through the middleware chain to an instance.
type Task struct {
	// ID is the client's raw JSON id, echoed verbatim in every frame about the
	// task. Tasks a middleware adds may leave it nil.
	ID []byte
	// Data is the raw JSON task data. A middleware may replace it.
	Data []byte
	// Session is the session the task runs in. A task a middleware makes
	// may leave it nil: it runs in the session of the task it came with.
	Session *Info
}

// ResultWriter receives the results of one task, in order. A middleware may
// wrap it to observe or change results. Calls for one task never overlap.
type ResultWriter interface {
	// WriteResult sends one JSON result. data must be a valid JSON value and
	// is not retained after the call returns.
	WriteResult(data []byte) error
	// WriteBinary sends one binary result; data is not retained.
	WriteBinary(data []byte) error
}

// Info describes a session to middleware and hooks. The identity fields are
// set before the connect hooks run and do not change afterwards, except User,
// which a connect hook may set.
type Info struct {
	ID       string
	User     string
	Pool     string
	Remote   string
	Created  time.Time
	Instance string // set once bound
	Farm     string // set once bound

	values sync.Map
}

// Set stores a value for the lifetime of the session, for middleware that
// keeps per-session state.
func (i *Info) Set(key, value any) { i.values.Store(key, value) }

// Get returns a value stored with Set.
func (i *Info) Get(key any) (any, bool) { return i.values.Load(key) }

// Error codes carried in error frames.
const (
	CodeBadRequest   = "bad_request"
	CodeNoCapacity   = "no_capacity"
	CodeTimeout      = "timeout"
	CodeInstanceLost = "instance_lost"
	CodeTaskFailed   = "task_failed"
	CodeRejected     = "rejected"
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeShutdown     = "shutdown"
	CodeInternal     = "internal"
	// CodeUnavailable: the shared state (Redis) cannot be reached, so no
	// new session can be placed; running sessions are not affected.
	CodeUnavailable = "unavailable"
	// CodeInterrupted: the session ended or moved to another connection
	// while the task ran (a logout from another request, a resume
	// elsewhere); the task may or may not have taken effect.
	CodeInterrupted = "interrupted"
	// CodeForbidden: the caller is authenticated but may not do this (a
	// role, a tenant, a read-only key, a foreign Origin).
	CodeForbidden = "forbidden"
	// CodeRateLimited: too many requests of this kind from this user or
	// address; try again after the Retry-After the error carries.
	CodeRateLimited = "rate_limited"
	// CodeQuotaExceeded: a standing limit is reached (concurrent sessions
	// of a user, tasks in flight of a session, a tenant's conversions or
	// storage); it clears when something ends.
	CodeQuotaExceeded = "quota_exceeded"
	// CodeTooLarge: a REST request body over its route's bound (413).
	CodeTooLarge = "too_large"
)

// Error is an error with a protocol code. Middleware returns one to answer a
// task with a specific code and message. Any other error reaches the client
// as "internal" with the message "internal error": its text may hold what
// clients must not see (addresses, ids, Go error chains), so the manager
// logs it instead. Messages are plain sentences.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// NewError is a short form of &Error{Code: code, Message: msg}.
func NewError(code, msg string) *Error { return &Error{Code: code, Message: msg} }
