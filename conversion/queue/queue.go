// Package queue is the conversion job queue: jobs wait in it until a farm
// leases one, the farm renews its lease while the converter runs, and the
// attempt ends with Complete or Fail. A lease that is not renewed expires;
// Reclaim puts the job back for another attempt elsewhere, and a late
// Complete or Fail of the expired attempt is refused with ErrLeaseLost, so
// a job succeeds once, with one attempt's outputs. Attempts are counted;
// after Options.MaxAttempts the job ends failed with the reason. Failed
// attempts are retried after a backoff.
//
// Memory keeps the queue in the process (one manager, `drover up`); Redis
// keeps it in a Redis server (Streams, a consumer group, Lua), so that any
// manager serves any farm and a manager's death loses no job. Both pass
// the same suite, queuetest.Run.
//
// The package owns jobs, leases, attempts and their outcomes. It does not
// own what a job means: items and their states, storage of inputs and
// outputs, webhooks, the farm API over which farms lease (farms never talk
// to Redis), or metrics; its callers build those on Stats and on the
// outcomes it returns.
//
// # Every job ends once
//
// A job ends when an attempt completes it, when an attempt fails and no
// attempt is left (or the failure is final), or when its last attempt's
// lease expires. Each end is returned to exactly one caller: by the
// Complete or Fail call that ended it, or in the list a Reclaim returns;
// Outcome.Terminal tells which outcomes are ends. A repeated Complete or
// Fail of the same attempt (a farm retrying its acknowledgement) returns
// the first call's outcome with ErrDuplicate and ends nothing. A caller
// that dies between an end and acting on it finds the end with Get for
// Options.Retention. Deleted jobs do not end; their deleter knows.
package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no job of that id (never enqueued, deleted, or its end
	// is older than Options.Retention).
	ErrNotFound = errors.New("queue: job not found")
	// ErrExists: Enqueue of an id whose job has not ended.
	ErrExists = errors.New("queue: job exists")
	// ErrLeaseLost: the token is not the job's current lease. The attempt's
	// lease expired and was reclaimed, or the attempt already ended. Its
	// holder stops and drops its results.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrDuplicate: this attempt already made the same call; the Outcome
	// returned with it is the first call's, which was reported then.
	ErrDuplicate = errors.New("queue: attempt already ended")
	// ErrUnavailable: the queue cannot be reached (Redis is down or does
	// not answer in time), or it is closed. Nothing of the call happened,
	// or, for a call whose reply was lost, the call happened as one piece.
	ErrUnavailable = errors.New("queue: unavailable")
)

// Queue is the job queue. Implementations are safe for concurrent use.
type Queue interface {
	// Enqueue adds a job: ready at once, or delayed until job.NotBefore.
	// An id whose job has not ended is ErrExists; an ended job's record is
	// replaced, and its old tokens are lost.
	Enqueue(ctx context.Context, job Job) error
	// Lease hands up to req.Max ready jobs, oldest first, to
	// req.Consumer, each for one attempt. With none ready it waits up to
	// req.Wait for one (woken when one is enqueued or becomes due), then
	// returns none and a nil error. It returns ctx's error if ctx ends
	// first. Whatever it leased when ctx ended is lost to the caller and
	// comes back when the lease expires.
	Lease(ctx context.Context, req LeaseRequest) ([]Lease, error)
	// Renew extends the lease of the attempt token to d from now (d ≤ 0:
	// Options.Lease; at most Options.MaxLease) and returns its new expiry.
	// A lease past its expiry that nobody reclaimed yet is renewed.
	Renew(ctx context.Context, jobID, token string, d time.Duration) (time.Time, error)
	// Complete ends the job successfully by the attempt token, which must
	// hold the job's lease (an expired lease not yet reclaimed still
	// does): the outcome is terminal. Otherwise ErrLeaseLost, ErrNotFound,
	// or ErrDuplicate with the first Complete's outcome.
	Complete(ctx context.Context, jobID, token string) (Outcome, error)
	// Fail ends the attempt token with a reason. The job is retried after
	// a backoff (StateDelayed, at Outcome.RetryAt), or ends failed if this
	// was its last attempt or f.Final is set. Errors as for Complete.
	Fail(ctx context.Context, jobID, token string, f Failure) (Outcome, error)
	// Reclaim takes back every expired lease: the job is ready again for
	// its next attempt (StatePending), or ends failed when the expired
	// attempt was its last. It returns one outcome per lease it took, and
	// moves delayed jobs that are due to ready. Run it on a ticker; several
	// callers may run it at once, each lease is taken by one of them. With
	// an error it still returns the outcomes of the leases it took before:
	// act on them, or their ends are never reported.
	Reclaim(ctx context.Context) ([]Outcome, error)
	// Delete removes a job in any state, and its record. A leased job's
	// holder gets ErrNotFound from its next call. Unknown ids are
	// ErrNotFound.
	Delete(ctx context.Context, jobID string) error
	// Get returns the job's state; ended jobs stay for Options.Retention.
	Get(ctx context.Context, jobID string) (Info, error)
	// Stats counts the jobs by state, for /status and /metrics.
	Stats(ctx context.Context) (Stats, error)
	// Close stops the queue: waiting Leases return, and every later call
	// fails with ErrUnavailable. It does not remove any job. Closing again
	// returns the first result.
	Close() error
}

// Job is what Enqueue adds.
type Job struct {
	// ID names the job, unique among the jobs that have not ended. Its
	// caller chooses it (for example the item id and a generation).
	ID string
	// Item is the conversion item the job is for, carried for the caller.
	Item string
	// Payload is the caller's description of the work, opaque here.
	Payload []byte
	// NotBefore delays the job's first attempt until then; zero: ready now.
	NotBefore time.Time
}

// LeaseRequest asks Lease for jobs.
type LeaseRequest struct {
	// Consumer is who takes the leases: a farm's id. Required.
	Consumer string
	// Max is the most jobs to lease at once (a farm's free job slots).
	// Default 1, at most MaxBatch.
	Max int
	// Duration is each lease's length. Default Options.Lease; at most
	// Options.MaxLease.
	Duration time.Duration
	// Wait is how long to wait for a first job when none is ready
	// (a long poll). Zero returns at once.
	Wait time.Duration
}

// MaxBatch is the most jobs one Lease call hands out.
const MaxBatch = 256

// Lease is one attempt at a job, held by a consumer until Expires.
type Lease struct {
	JobID   string
	Item    string
	Payload []byte
	// Attempt counts the job's attempts, this one included, from 1.
	Attempt int
	// Token names this attempt. Renew, Complete and Fail take it; a token
	// of an attempt that lost its lease is refused. Opaque; it travels to
	// the farm and back.
	Token    string
	Consumer string
	// Expires is when the lease ends unless renewed, by the queue's clock
	// (for Redis the server's).
	Expires time.Time
}

// Failure is why an attempt failed.
type Failure struct {
	// Reason says why, for the item's error state and the logs.
	Reason string
	// Final ends the job now, without the attempts left: the input cannot
	// convert, and trying again would fail the same way.
	Final bool
}

// State is where a job is in its life.
type State string

// Job states.
const (
	// StatePending: ready, waiting for a lease.
	StatePending State = "pending"
	// StateDelayed: waiting until its NotBefore or its retry's due time.
	StateDelayed State = "delayed"
	// StateLeased: an attempt runs.
	StateLeased State = "leased"
	// StateDone: ended; an attempt completed it.
	StateDone State = "done"
	// StateFailed: ended; its last attempt failed or its lease expired, or
	// a failure was final.
	StateFailed State = "failed"
)

// Ended reports whether s is an end: StateDone or StateFailed.
func (s State) Ended() bool { return s == StateDone || s == StateFailed }

func (s State) valid() bool {
	switch s {
	case StatePending, StateDelayed, StateLeased, StateDone, StateFailed:
		return true
	}
	return false
}

// Outcome is what became of a job when an attempt ended: by Complete, Fail
// or an expired lease that Reclaim took.
type Outcome struct {
	JobID string
	Item  string
	// State is the job's state after it: StateDone or StateFailed (the job
	// ended: Terminal), StateDelayed (Fail; retried at RetryAt) or
	// StatePending (Reclaim; ready for another attempt).
	State State
	// Attempt is the number of the attempt that ended.
	Attempt int
	// Consumer held the attempt's lease.
	Consumer string
	// Reason is the failure's reason, or "lease expired"; empty for done.
	Reason string
	// RetryAt is when a delayed job is ready again.
	RetryAt time.Time
}

// Terminal reports whether the job ended with this outcome. Exactly one
// outcome of every job that ends is terminal.
func (o Outcome) Terminal() bool { return o.State.Ended() }

// ReasonLeaseExpired is the reason of an attempt whose lease expired.
const ReasonLeaseExpired = "lease expired"

// Info is a job's state as Get reports it.
type Info struct {
	ID    string
	Item  string
	State State
	// Attempts counts the attempts started so far.
	Attempts int
	// Consumer holds the lease (leased), or held the last attempt's.
	Consumer string
	// Expires: a leased job's lease expiry.
	Expires time.Time
	// Due: when a delayed job becomes ready.
	Due time.Time
	// Reason is the last failed attempt's reason.
	Reason  string
	Created time.Time
	// Ended: when a done or failed job ended.
	Ended time.Time
}

// Stats counts jobs, for /status and /metrics.
type Stats struct {
	Pending int64 // ready, waiting for a lease
	Delayed int64 // waiting for a due time (NotBefore or a retry)
	Leased  int64 // running, expired leases not yet reclaimed included
	// Done and Failed count the jobs that ended since the queue began
	// (for Redis, since its keys were created; shared by all managers).
	Done   int64
	Failed int64
}

// Options configure a queue; both implementations read the same ones.
// Zero values take the defaults.
type Options struct {
	// Lease is the default lease length. Default 30 s.
	Lease time.Duration
	// MaxLease is the longest lease (or renewal) a caller may ask for.
	// Redis reclaims by the idle time of a stream entry, against this
	// bound. Default 10 min.
	MaxLease time.Duration
	// MaxAttempts is how many attempts a job gets. Default 3.
	MaxAttempts int
	// Backoff spaces a failed job's attempts.
	Backoff Backoff
	// Retention is how long an ended job's record stays for Get, and its
	// attempts' duplicate calls are recognized. Default 24 h.
	Retention time.Duration
}

// Backoff is an exponential backoff: the retry after attempt n waits
// Base·2^(n-1), at most Max, shortened by up to Jitter of itself so that
// jobs that failed together do not retry together.
type Backoff struct {
	Base   time.Duration // default 2 s
	Max    time.Duration // default 1 min
	Jitter float64       // 0 … 1; default 0.2; negative: none
}

// Delay is the wait after failed attempt n (≥ 1), with r in [0, 1) the
// random draw of the jitter.
func (b Backoff) Delay(n int, r float64) time.Duration {
	d := float64(b.Max)
	if n < 63 {
		d = min(float64(b.Base)*math.Pow(2, float64(n-1)), d)
	}
	if b.Jitter > 0 {
		d -= d * b.Jitter * r
	}
	return time.Duration(d)
}

// Defaults of Options.
const (
	DefaultLease       = 30 * time.Second
	DefaultMaxLease    = 10 * time.Minute
	DefaultMaxAttempts = 3
	DefaultRetention   = 24 * time.Hour
	DefaultBackoffBase = 2 * time.Second
	DefaultBackoffMax  = time.Minute
	DefaultJitter      = 0.2
)

// withDefaults fills in the defaults and checks o.
func (o Options) withDefaults() (Options, error) {
	if o.Lease < 0 || o.MaxLease < 0 || o.MaxAttempts < 0 || o.Retention < 0 ||
		o.Backoff.Base < 0 || o.Backoff.Max < 0 || o.Backoff.Jitter > 1 {
		return o, errors.New("queue: negative duration or count, or jitter above 1")
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.MaxLease == 0 {
		o.MaxLease = max(DefaultMaxLease, o.Lease)
	}
	if o.Lease > o.MaxLease {
		return o, fmt.Errorf("queue: lease %v above MaxLease %v", o.Lease, o.MaxLease)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.Backoff.Base == 0 {
		o.Backoff.Base = DefaultBackoffBase
	}
	if o.Backoff.Max == 0 {
		o.Backoff.Max = max(DefaultBackoffMax, o.Backoff.Base)
	}
	if o.Backoff.Jitter == 0 {
		o.Backoff.Jitter = DefaultJitter
	}
	return o, nil
}

// leaseFor is the length of a lease asked for as d.
func (o Options) leaseFor(d time.Duration) time.Duration {
	if d <= 0 {
		return o.Lease
	}
	return min(d, o.MaxLease)
}

// check validates a lease request and fills in its defaults.
func (r LeaseRequest) check(o Options) (LeaseRequest, error) {
	if r.Consumer == "" {
		return r, errors.New("queue: lease without a consumer")
	}
	if r.Max < 0 || r.Wait < 0 {
		return r, errors.New("queue: negative lease count or wait")
	}
	r.Max = min(max(r.Max, 1), MaxBatch)
	r.Duration = o.leaseFor(r.Duration)
	return r, nil
}

func checkJob(j Job) error {
	if j.ID == "" {
		return errors.New("queue: job without an id")
	}
	return nil
}
