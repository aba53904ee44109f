package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/internal/lib/redisx"
)

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// URL is redis://[:password@]host:port/db (rediss:// for TLS), read by
	// redis.ParseURL, query options included.
	URL string
	// Prefix starts every key and the channel; managers that share a
	// queue use the same one. Default "drover:jobs:".
	Prefix string
	// OpTimeout bounds every call whose context has no earlier deadline,
	// and each dial and socket read or write. Default 3 s: conversion calls
	// are not latency-bound, and a burst of uploads on a loaded host waits
	// for a pooled connection longer than a second.
	OpTimeout time.Duration
	// Poll is the longest a waiting Lease sleeps without looking: the
	// notification channel is lossy (a reconnecting subscription misses
	// what was published meanwhile). Default 1 s.
	Poll time.Duration
	// Logger hears what no call can return. Default slog.Default().
	Logger *slog.Logger
}

// DefaultPrefix is RedisOptions.Prefix's default.
const DefaultPrefix = "drover:jobs:"

const (
	group     = "drover"   // the consumer group; consumers are the lease holders
	reclaimer = "~reclaim" // the consumer Reclaim claims expired entries to
	// reclaimBatch is XAUTOCLAIM's COUNT; Reclaim loops over the cursor.
	reclaimBatch = 100
	// Every pruneEvery, a Reclaim deletes the consumers (farms) that hold
	// nothing and leased nothing for pruneIdle, so that farms that come
	// and go with new ids do not pile up in the group.
	pruneEvery = 10 * time.Minute
	pruneIdle  = time.Hour
)

// Redis is a Queue in a Redis server (5 or later; 7 tested), shared by the
// managers that use the same server and prefix. It needs one server (or a
// primary with replicas), not a cluster: its scripts find job records by
// name.
//
// Keys, after the prefix:
//
//	stream       a stream of the ready and leased jobs, one entry per
//	             attempt (field j: the job id), with the consumer group
//	             "drover"; a leased job's entry is in the group's pending
//	             list under its consumer, with the attempt as its delivery
//	             count and the lease's expiry as its idle time
//	delayed      a sorted set of delayed job ids by due time (ms)
//	job:<id>     a hash: the job (item, payload, state, attempts, the
//	             current entry and lease token, the consumer, expiry or
//	             due time, reason, created and ended times, and the last
//	             ended attempt's outcome); an ended job's hash expires
//	             after Options.Retention
//	stats        a hash: done and failed counts
//	ready        the channel on which a job that becomes ready is
//	             announced, to wake waiting Leases in every manager
//
// A Lease waits on that channel, not on XREADGROUP BLOCK, which would hold
// a connection per waiting farm.
//
// Managers that share a prefix must share Options too: MaxLease is the
// idle time at which any of them reclaims a lease, MaxAttempts and the
// backoff decide in whichever manager's call ends an attempt.
//
// Calls fail with an error wrapping ErrUnavailable (and the go-redis error)
// when the server cannot be reached or does not answer within OpTimeout.
// The queue keeps nothing in the process but its waiting Leases, so what
// the server kept across an outage (all of it, with appendonly and
// appendfsync always) is the whole queue when it is back; a server that
// comes back empty is an empty queue, and the consumer group is made again.
type Redis struct {
	o    Options
	c    *redisx.Client
	poll time.Duration
	log  *slog.Logger
	ws   waiters

	stream, delayed, stats, jobPrefix, channel string

	lastPrune atomic.Int64 // unix ns

	done chan struct{} // closed by Close
	wg   sync.WaitGroup
	once sync.Once
	cerr error
}

var _ Queue = (*Redis)(nil)

// NewRedis connects to the server at ro.URL, makes the stream and its
// consumer group if they are missing, and subscribes to the ready channel.
func NewRedis(ctx context.Context, o Options, ro RedisOptions) (*Redis, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if ro.OpTimeout < 0 || ro.Poll < 0 {
		return nil, errors.New("queue: negative redis timeout")
	}
	if ro.Prefix == "" {
		ro.Prefix = DefaultPrefix
	}
	if ro.OpTimeout == 0 {
		ro.OpTimeout = 3 * time.Second
	}
	if ro.Poll == 0 {
		ro.Poll = time.Second
	}
	if ro.Logger == nil {
		ro.Logger = slog.Default()
	}
	// RESP2 unless the URL asks for 3: the queue needs no push
	// notifications, and go-redis looks for them around every command
	// under RESP3, a third of the client's time per job here.
	c, err := redisx.New(redisx.Options{URL: ro.URL, OpTimeout: ro.OpTimeout, RESP2: true,
		Pkg: "queue", Unavailable: ErrUnavailable})
	if err != nil {
		return nil, err
	}
	r := &Redis{
		o:         o,
		c:         c,
		poll:      ro.Poll,
		log:       ro.Logger,
		stream:    ro.Prefix + "stream",
		delayed:   ro.Prefix + "delayed",
		stats:     ro.Prefix + "stats",
		jobPrefix: ro.Prefix + "job:",
		channel:   ro.Prefix + "ready",
		done:      make(chan struct{}),
	}
	if err := r.makeGroup(ctx); err != nil {
		_ = r.c.Close()
		return nil, err
	}
	// The subscription lives as long as the queue, across reconnections.
	ps, err := r.c.SubscribeConfirmed(ctx, r.channel)
	if err != nil {
		_ = r.c.Close()
		return nil, err
	}
	r.wg.Add(1)
	go r.listen(ps)
	return r, nil
}

// listen wakes waiting Leases when another manager (or this one) announces
// ready jobs, until Close.
func (r *Redis) listen(ps *redis.PubSub) {
	defer r.wg.Done()
	defer func() { _ = ps.Close() }()
	msgs := ps.Channel()
	for {
		select {
		case <-r.done:
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			n, err := strconv.Atoi(m.Payload)
			if err != nil || n < 1 {
				n = 1
			}
			r.ws.wake(n)
		}
	}
}

// makeGroup makes the stream and its group, from the stream's start so
// that no entry is skipped, if they are missing.
func (r *Redis) makeGroup(ctx context.Context) error {
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	err := r.c.XGroupCreateMkStream(octx, r.stream, group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return r.c.Fail(ctx, "create group", err)
	}
	return nil
}

func (r *Redis) closed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// run runs a script. A server that lost the consumer group (it came back
// empty, or someone deleted the stream) gets it again, and the script
// runs once more.
func (r *Redis) run(ctx context.Context, name string, sc *redis.Script, keys []string, args ...any) (any, error) {
	if r.closed() {
		return nil, errClosed
	}
	for try := 0; ; try++ {
		octx, cancel := r.c.Op(ctx)
		v, err := sc.Run(octx, r.c, keys, args...).Result()
		cancel()
		if err == nil {
			return v, nil
		}
		if try == 0 && strings.Contains(err.Error(), "NOGROUP") {
			if gerr := r.makeGroup(ctx); gerr != nil {
				return nil, gerr
			}
			r.log.Warn("queue: the consumer group was missing; made it again", "stream", r.stream)
			continue
		}
		return nil, r.c.Fail(ctx, name, err)
	}
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

func (r *Redis) jobKey(id string) string { return r.jobPrefix + id }

// Enqueue implements Queue.
func (r *Redis) Enqueue(ctx context.Context, job Job) error {
	if err := checkJob(job); err != nil {
		return err
	}
	var delay int64
	if !job.NotBefore.IsZero() {
		// The server's clock times the delay: the managers' clocks need
		// not agree with it.
		delay = max(ms(time.Until(job.NotBefore)), 0)
	}
	payload := job.Payload
	if payload == nil {
		payload = []byte{}
	}
	v, err := r.run(ctx, "enqueue", scriptEnqueue, []string{r.jobKey(job.ID), r.stream, r.delayed},
		job.ID, job.Item, payload, delay, r.channel)
	if err != nil {
		return err
	}
	if v == "exists" {
		return fmt.Errorf("%w: %s", ErrExists, job.ID)
	}
	return nil
}

// Lease implements Queue.
func (r *Redis) Lease(ctx context.Context, req LeaseRequest) ([]Lease, error) {
	req, err := req.check(r.o)
	if err != nil {
		return nil, err
	}
	if r.closed() {
		return nil, errClosed
	}
	keys := []string{r.stream, r.delayed}
	args := []any{group, req.Consumer, req.Max, ms(req.Duration), ms(r.o.MaxLease), r.jobPrefix, r.channel}
	return r.ws.wait(ctx, req, r.done, r.poll, func(ctx context.Context) ([]Lease, time.Time, error) {
		v, err := r.run(ctx, "lease", scriptLease, keys, args...)
		if err != nil {
			return nil, time.Time{}, err
		}
		leases, next, err := decodeLeases(v, req.Consumer)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("queue: redis lease: %w", err)
		}
		return leases, next, nil
	})
}

// Renew implements Queue.
func (r *Redis) Renew(ctx context.Context, jobID, token string, d time.Duration) (time.Time, error) {
	v, err := r.run(ctx, "renew", scriptRenew, []string{r.jobKey(jobID), r.stream},
		token, group, ms(r.o.leaseFor(d)), ms(r.o.MaxLease))
	if err != nil {
		return time.Time{}, err
	}
	a, _ := v.([]any)
	if err := verdict(a, jobID); err != nil {
		return time.Time{}, err
	}
	if len(a) != 2 {
		return time.Time{}, fmt.Errorf("queue: redis renew: reply %v", v)
	}
	exp, err := msTime(a[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("queue: redis renew: %w", err)
	}
	return exp, nil
}

// verdict turns a script's refusal into an error.
func verdict(a []any, jobID string) error {
	if len(a) == 0 {
		return errors.New("queue: redis: empty reply")
	}
	switch a[0] {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("%w: %s", ErrNotFound, jobID)
	case "lost":
		return fmt.Errorf("%w: job %s", ErrLeaseLost, jobID)
	case "dup":
		return fmt.Errorf("%w: job %s", ErrDuplicate, jobID)
	}
	return fmt.Errorf("queue: redis: unexpected reply %v", a[0])
}

// outcome reads the reply of Complete or Fail.
func outcome(v any, jobID string) (Outcome, error) {
	a, _ := v.([]any)
	err := verdict(a, jobID)
	if err != nil && !errors.Is(err, ErrDuplicate) {
		return Outcome{}, err
	}
	o, derr := decodeOutcome(jobID, a)
	if derr != nil {
		return Outcome{}, fmt.Errorf("queue: redis: %w", derr)
	}
	return o, err
}

// Complete implements Queue.
func (r *Redis) Complete(ctx context.Context, jobID, token string) (Outcome, error) {
	v, err := r.run(ctx, "complete", scriptComplete, []string{r.jobKey(jobID), r.stream, r.stats},
		token, group, ms(r.o.Retention))
	if err != nil {
		return Outcome{}, err
	}
	return outcome(v, jobID)
}

// Fail implements Queue.
func (r *Redis) Fail(ctx context.Context, jobID, token string, f Failure) (Outcome, error) {
	final := 0
	if f.Final {
		final = 1
	}
	b := r.o.Backoff
	v, err := r.run(ctx, "fail", scriptFail, []string{r.jobKey(jobID), r.stream, r.delayed, r.stats},
		token, group, f.Reason, final, r.o.MaxAttempts, ms(b.Base), ms(b.Max),
		strconv.FormatFloat(b.Jitter, 'f', -1, 64), strconv.FormatFloat(rand.Float64(), 'f', -1, 64),
		ms(r.o.Retention), jobID, r.channel)
	if err != nil {
		return Outcome{}, err
	}
	return outcome(v, jobID)
}

// Reclaim implements Queue.
func (r *Redis) Reclaim(ctx context.Context) ([]Outcome, error) {
	keys := []string{r.stream, r.delayed, r.stats}
	var out []Outcome
	cursor := "0-0"
	// Each call scans a part of the pending list; the bound keeps a
	// Reclaim short whatever the list's length, and the next one goes on.
	for range 100 {
		v, err := r.run(ctx, "reclaim", scriptReclaim, keys,
			group, reclaimer, ms(r.o.MaxLease), cursor, reclaimBatch, r.jobPrefix, r.o.MaxAttempts,
			ms(r.o.Retention), r.channel)
		if err != nil {
			return out, err
		}
		var got []Outcome
		cursor, got, err = decodeReclaim(v)
		if err != nil {
			return out, fmt.Errorf("queue: redis reclaim: %w", err)
		}
		out = append(out, got...)
		if cursor == "0-0" {
			break
		}
	}
	if last := r.lastPrune.Load(); time.Since(time.Unix(0, last)) >= pruneEvery &&
		r.lastPrune.CompareAndSwap(last, time.Now().UnixNano()) {
		if err := r.prune(ctx, pruneIdle); err != nil {
			r.log.Warn("queue: pruning idle consumers", "err", err)
		}
	}
	return out, nil
}

// prune deletes the consumers that hold no lease and were idle for idle.
func (r *Redis) prune(ctx context.Context, idle time.Duration) error {
	_, err := r.run(ctx, "prune consumers", scriptPrune, []string{r.stream}, group, ms(idle))
	return err
}

// Delete implements Queue.
func (r *Redis) Delete(ctx context.Context, jobID string) error {
	v, err := r.run(ctx, "delete", scriptDelete, []string{r.jobKey(jobID), r.stream, r.delayed}, group, jobID)
	if err != nil {
		return err
	}
	if v == "notfound" {
		return fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	return nil
}

// Get implements Queue.
func (r *Redis) Get(ctx context.Context, jobID string) (Info, error) {
	if r.closed() {
		return Info{}, errClosed
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	// Not HGETALL: the payload stays in Redis.
	v, err := r.c.HMGet(octx, r.jobKey(jobID), infoFields...).Result()
	if err != nil {
		return Info{}, r.c.Fail(ctx, "get", err)
	}
	h := make(map[string]string, len(infoFields))
	for i, x := range v {
		if s, ok := x.(string); ok {
			h[infoFields[i]] = s
		}
	}
	if len(h) == 0 {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	in, err := decodeInfo(jobID, h)
	if err != nil {
		return Info{}, fmt.Errorf("queue: redis get %s: %w", jobID, err)
	}
	return in, nil
}

// infoFields are the fields of a job's hash that Get reads.
var infoFields = []string{"item", "state", "attempts", "consumer", "exp", "due", "reason", "created", "ended"}

// Stats implements Queue.
func (r *Redis) Stats(ctx context.Context) (Stats, error) {
	v, err := r.run(ctx, "stats", scriptStats, []string{r.stream, r.delayed, r.stats}, group)
	if err != nil {
		return Stats{}, err
	}
	a, _ := v.([]any)
	var n [5]int64
	if len(a) != len(n) {
		return Stats{}, fmt.Errorf("queue: redis stats: reply %v", v)
	}
	for i := range n {
		if n[i], err = integer(a[i]); err != nil {
			return Stats{}, fmt.Errorf("queue: redis stats: %w", err)
		}
	}
	return Stats{Pending: n[0], Delayed: n[1], Leased: n[2], Done: n[3], Failed: n[4]}, nil
}

// Close wakes the waiting Leases, ends the subscription and closes the
// client; later calls fail with ErrUnavailable. The jobs stay in Redis.
func (r *Redis) Close() error {
	r.once.Do(func() {
		close(r.done)
		r.wg.Wait()
		r.cerr = r.c.Close()
	})
	return r.cerr
}
