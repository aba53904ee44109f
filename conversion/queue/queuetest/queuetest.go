// Package queuetest is the conformance suite of queue.Queue: every
// implementation runs Run, so that the in-process queue and Redis behave
// alike, down to their errors, their attempt numbers and the one terminal
// outcome of every job.
package queuetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/queue"
)

const (
	// clockSlack bounds the gap between the test's clock and the queue's
	// (for Redis the server's, on the same machine), and a scheduler's
	// delay on a busy machine.
	clockSlack = time.Second
	// within bounds every wait for something the queue does by itself.
	within = 10 * time.Second
)

// Open returns an empty queue with options o. The suite closes it when the
// test ends, so Close must be idempotent. Each call is a queue of its own
// (for Redis, a prefix of its own).
type Open func(t *testing.T, o queue.Options) queue.Queue

// Run runs the suite. Subtests run in parallel.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(queue.Options) queue.Queue)
	}{
		{"EnqueueLease", testEnqueueLease},
		{"EnqueueExists", testEnqueueExists},
		{"Invalid", testInvalid},
		{"FIFO", testFIFO},
		{"NotBefore", testNotBefore},
		{"LongPollWakesOnEnqueue", testLongPollWakes},
		{"LongPollTimesOut", testLongPollTimesOut},
		{"LongPollCanceled", testLongPollCanceled},
		{"ManyWaiters", testManyWaiters},
		{"Renew", testRenew},
		{"LeaseExpiry", testLeaseExpiry},
		{"LongPollWakesOnReclaim", testWakesOnReclaim},
		{"ExpiredNotReclaimed", testExpiredNotReclaimed},
		{"FailRetry", testFailRetry},
		{"MaxAttempts", testMaxAttempts},
		{"MaxAttemptsByExpiry", testMaxAttemptsByExpiry},
		{"FailFinal", testFailFinal},
		{"Delete", testDelete},
		{"Stats", testStats},
		{"Concurrent", testConcurrent},
		{"ExactlyOnce", testExactlyOnce},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, func(o queue.Options) queue.Queue {
				q := open(t, o)
				t.Cleanup(func() { _ = q.Close() })
				return q
			})
		})
	}
}

func enqueue(t *testing.T, q queue.Queue, id string) {
	t.Helper()
	require.NoError(t, q.Enqueue(t.Context(), queue.Job{ID: id, Item: "item-" + id, Payload: []byte("p-" + id)}))
}

// lease1 leases one job that must be ready.
func lease1(t *testing.T, q queue.Queue, consumer string, d time.Duration) queue.Lease {
	t.Helper()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: consumer, Duration: d})
	require.NoError(t, err)
	require.Len(t, ls, 1, "a ready job")
	return ls[0]
}

// leaseWait leases one job, waiting for it.
func leaseWait(t *testing.T, q queue.Queue, consumer string, d time.Duration) queue.Lease {
	t.Helper()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: consumer, Duration: d, Wait: within})
	require.NoError(t, err)
	require.Len(t, ls, 1, "a job within %v", within)
	return ls[0]
}

func requireNone(t *testing.T, q queue.Queue) {
	t.Helper()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: "none"})
	require.NoError(t, err)
	require.Empty(t, ls)
}

func stats(t *testing.T, q queue.Queue) queue.Stats {
	t.Helper()
	s, err := q.Stats(t.Context())
	require.NoError(t, err)
	return s
}

func get(t *testing.T, q queue.Queue, id string) queue.Info {
	t.Helper()
	in, err := q.Get(t.Context(), id)
	require.NoError(t, err)
	return in
}

func near(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.WithinDuration(t, want, got, clockSlack, what)
}

func reclaim(t *testing.T, q queue.Queue) []queue.Outcome {
	t.Helper()
	out, err := q.Reclaim(t.Context())
	require.NoError(t, err)
	return out
}

// reclaimOne waits for l's lease to expire and reclaims it.
func reclaimOne(t *testing.T, q queue.Queue, l queue.Lease) queue.Outcome {
	t.Helper()
	time.Sleep(time.Until(l.Expires) + 20*time.Millisecond)
	var out []queue.Outcome
	require.Eventually(t, func() bool {
		out = append(out, reclaim(t, q)...)
		return len(out) > 0
	}, within, 20*time.Millisecond)
	require.Len(t, out, 1)
	return out[0]
}

func testEnqueueLease(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	payload := []byte{0, 1, 2, 0xff, '\n', 0}
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "a", Item: "item-a", Payload: payload}))
	require.Equal(t, queue.StatePending, get(t, q, "a").State)
	start := time.Now()
	l := lease1(t, q, "f1", 10*time.Second)
	require.Equal(t, "a", l.JobID)
	require.Equal(t, "item-a", l.Item)
	require.Equal(t, payload, l.Payload)
	require.Equal(t, 1, l.Attempt)
	require.Equal(t, "f1", l.Consumer)
	require.NotEmpty(t, l.Token)
	near(t, start.Add(10*time.Second), l.Expires, "lease expiry")
	requireNone(t, q)

	in := get(t, q, "a")
	require.Equal(t, queue.StateLeased, in.State)
	require.Equal(t, "item-a", in.Item)
	require.Equal(t, 1, in.Attempts)
	require.Equal(t, "f1", in.Consumer)
	require.Equal(t, l.Expires, in.Expires)
	near(t, start, in.Created, "created")

	// No payload, and the default lease length.
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "b"}))
	l = lease1(t, q, "f1", 0)
	require.Empty(t, l.Payload)
	near(t, time.Now().Add(queue.DefaultLease), l.Expires, "default lease")

	_, err := q.Get(ctx, "nope")
	require.ErrorIs(t, err, queue.ErrNotFound)
}

func testEnqueueExists(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	enqueue(t, q, "a")
	require.ErrorIs(t, q.Enqueue(ctx, queue.Job{ID: "a"}), queue.ErrExists)
	l := lease1(t, q, "f1", 0)
	require.ErrorIs(t, q.Enqueue(ctx, queue.Job{ID: "a"}), queue.ErrExists, "leased")
	_, err := q.Complete(ctx, "a", l.Token)
	require.NoError(t, err)

	// An ended job's id starts a new job; the old one's tokens are lost.
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "a", Item: "again"}))
	require.Equal(t, queue.StatePending, get(t, q, "a").State)
	l2 := lease1(t, q, "f2", 0)
	require.Equal(t, 1, l2.Attempt)
	require.Equal(t, "again", l2.Item)
	require.NotEqual(t, l.Token, l2.Token)
	_, err = q.Complete(ctx, "a", l.Token)
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	_, err = q.Complete(ctx, "a", l2.Token)
	require.NoError(t, err)
}

func testInvalid(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	require.Error(t, q.Enqueue(ctx, queue.Job{}), "no id")
	_, err := q.Lease(ctx, queue.LeaseRequest{})
	require.Error(t, err, "no consumer")
	_, err = q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Max: -1})
	require.Error(t, err)
	for _, call := range []func() error{
		func() error { _, err := q.Complete(ctx, "nope", "t"); return err },
		func() error { _, err := q.Fail(ctx, "nope", "t", queue.Failure{}); return err },
		func() error { _, err := q.Renew(ctx, "nope", "t", 0); return err },
		func() error { return q.Delete(ctx, "nope") },
	} {
		require.ErrorIs(t, call(), queue.ErrNotFound)
	}
	enqueue(t, q, "a")
	_, err = q.Complete(ctx, "a", "")
	require.ErrorIs(t, err, queue.ErrLeaseLost, "pending: no token holds it")
	l := lease1(t, q, "f", 0)
	for _, tok := range []string{"", "x", l.Token + "0", "0-0"} {
		_, err = q.Complete(ctx, "a", tok)
		require.ErrorIs(t, err, queue.ErrLeaseLost, "token %q", tok)
	}
}

func testFIFO(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	for i := range 10 {
		enqueue(t, q, fmt.Sprint(i))
	}
	for i := range 10 {
		require.Equal(t, fmt.Sprint(i), lease1(t, q, "f", 0).JobID)
	}
	requireNone(t, q)
	for i := range 5 {
		enqueue(t, q, fmt.Sprint("b", i))
	}
	var got []string
	for _, want := range []int{3, 2} {
		ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Max: 3})
		require.NoError(t, err)
		require.Len(t, ls, want)
		for _, l := range ls {
			got = append(got, l.JobID)
		}
	}
	require.Equal(t, []string{"b0", "b1", "b2", "b3", "b4"}, got)
}

func testNotBefore(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	const delay = 400 * time.Millisecond
	start := time.Now()
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "later", NotBefore: start.Add(delay)}))
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "past", NotBefore: start.Add(-time.Hour)}))
	require.Equal(t, queue.Stats{Pending: 1, Delayed: 1}, stats(t, q))
	in := get(t, q, "later")
	require.Equal(t, queue.StateDelayed, in.State)
	near(t, start.Add(delay), in.Due, "due")
	require.Equal(t, "past", lease1(t, q, "f", 0).JobID)
	requireNone(t, q)

	l := leaseWait(t, q, "f", 0)
	require.Equal(t, "later", l.JobID)
	require.Equal(t, 1, l.Attempt)
	// The server's clock may run a little apart from the test's.
	require.GreaterOrEqual(t, time.Since(start), delay-100*time.Millisecond)
}

func testLongPollWakes(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	got := make(chan []queue.Lease, 1)
	go func() {
		ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- ls
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("Lease returned before a job was enqueued")
	default:
	}
	enqueued := time.Now()
	enqueue(t, q, "a")
	select {
	case ls := <-got:
		require.Len(t, ls, 1)
		require.Equal(t, "a", ls[0].JobID)
		// Woken by the enqueue, not by a poll: well under a second.
		require.Less(t, time.Since(enqueued), 500*time.Millisecond)
	case <-time.After(within):
		t.Fatal("the waiting Lease was not woken")
	}
}

func testLongPollTimesOut(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	start := time.Now()
	requireNone(t, q)
	require.Less(t, time.Since(start), clockSlack, "Wait 0 returns at once")

	start = time.Now()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: "f", Wait: 300 * time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, ls)
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 300*time.Millisecond)
	require.Less(t, took, 300*time.Millisecond+clockSlack)
}

func testLongPollCanceled(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, queue.ErrUnavailable)
	require.Empty(t, ls)
	require.Less(t, time.Since(start), clockSlack)
	// The queue is fine, and the next waiter is woken.
	enqueue(t, q, "a")
	require.Equal(t, "a", leaseWait(t, q, "f", 0).JobID)
}

// testManyWaiters: jobs enqueued one by one reach as many waiting Leases,
// each one job: no wake-up is lost when one wakes one waiter.
func testManyWaiters(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	const n = 8
	got := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: fmt.Sprint("f", i), Wait: within})
			if err != nil {
				t.Error(err)
				return
			}
			for _, l := range ls {
				got <- l.JobID
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	for i := range n {
		enqueue(t, q, fmt.Sprint(i))
	}
	start := time.Now()
	wg.Wait()
	close(got)
	seen := map[string]bool{}
	for id := range got {
		require.False(t, seen[id], "job %s leased twice", id)
		seen[id] = true
	}
	require.Len(t, seen, n)
	require.Less(t, time.Since(start), within/2)
}

func testRenew(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	enqueue(t, q, "a")
	const d = 400 * time.Millisecond
	l := lease1(t, q, "f", d)
	first := l.Expires
	// Renewed, the lease outlives its first expiry three times over.
	for time.Now().Before(first.Add(2 * d)) {
		exp, err := q.Renew(ctx, "a", l.Token, d)
		require.NoError(t, err)
		near(t, time.Now().Add(d), exp, "renewed expiry")
		require.Equal(t, exp, get(t, q, "a").Expires)
		require.Empty(t, reclaim(t, q), "a renewed lease is not reclaimed")
		time.Sleep(d / 4)
	}
	_, err := q.Renew(ctx, "a", l.Token+"x", d)
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	o, err := q.Complete(ctx, "a", l.Token)
	require.NoError(t, err)
	require.Equal(t, 1, o.Attempt)
	_, err = q.Renew(ctx, "a", l.Token, d)
	require.ErrorIs(t, err, queue.ErrLeaseLost, "an ended attempt renews nothing")
}

func testLeaseExpiry(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 3})
	ctx := t.Context()
	enqueue(t, q, "a")
	l1 := lease1(t, q, "f1", 300*time.Millisecond)
	require.Empty(t, reclaim(t, q), "not expired yet")
	o := reclaimOne(t, q, l1)
	require.Equal(t, queue.Outcome{
		JobID: "a", Item: "item-a", State: queue.StatePending, Attempt: 1, Consumer: "f1",
		Reason: queue.ReasonLeaseExpired,
	}, o)
	require.False(t, o.Terminal())
	require.Empty(t, reclaim(t, q), "taken once")
	in := get(t, q, "a")
	require.Equal(t, queue.StatePending, in.State)
	require.Equal(t, 1, in.Attempts)
	require.Equal(t, queue.ReasonLeaseExpired, in.Reason)

	l2 := lease1(t, q, "f2", 0)
	require.Equal(t, 2, l2.Attempt)
	require.NotEqual(t, l1.Token, l2.Token)
	// The first attempt's late calls are refused.
	_, err := q.Complete(ctx, "a", l1.Token)
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	_, err = q.Fail(ctx, "a", l1.Token, queue.Failure{Reason: "late"})
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	_, err = q.Renew(ctx, "a", l1.Token, 0)
	require.ErrorIs(t, err, queue.ErrLeaseLost)

	o, err = q.Complete(ctx, "a", l2.Token)
	require.NoError(t, err)
	want := queue.Outcome{JobID: "a", Item: "item-a", State: queue.StateDone, Attempt: 2, Consumer: "f2"}
	require.Equal(t, want, o)
	require.True(t, o.Terminal())
	// The same attempt's repeated acknowledgement: the first outcome, as a
	// duplicate.
	o, err = q.Complete(ctx, "a", l2.Token)
	require.ErrorIs(t, err, queue.ErrDuplicate)
	require.Equal(t, want, o)
	_, err = q.Fail(ctx, "a", l2.Token, queue.Failure{Reason: "x"})
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	_, err = q.Complete(ctx, "a", l1.Token)
	require.ErrorIs(t, err, queue.ErrLeaseLost)

	in = get(t, q, "a")
	require.Equal(t, queue.StateDone, in.State)
	require.Equal(t, 2, in.Attempts)
	near(t, time.Now(), in.Ended, "ended")
	require.Equal(t, queue.Stats{Done: 1}, stats(t, q))
}

func testWakesOnReclaim(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	enqueue(t, q, "a")
	l := lease1(t, q, "f1", 200*time.Millisecond)
	got := make(chan queue.Lease, 1)
	go func() {
		ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: "f2", Wait: time.Minute})
		if err != nil || len(ls) != 1 {
			t.Errorf("lease: %v, %d", err, len(ls))
			return
		}
		got <- ls[0]
	}()
	reclaimOne(t, q, l)
	reclaimed := time.Now()
	select {
	case l2 := <-got:
		require.Equal(t, 2, l2.Attempt)
		require.Less(t, time.Since(reclaimed), 500*time.Millisecond)
	case <-time.After(within):
		t.Fatal("a reclaimed job did not wake the waiting Lease")
	}
}

// testExpiredNotReclaimed: a lease past its expiry that nobody took back
// still holds the job: no other attempt exists.
func testExpiredNotReclaimed(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	enqueue(t, q, "a")
	enqueue(t, q, "b")
	la := lease1(t, q, "f", 100*time.Millisecond)
	lb := lease1(t, q, "f", 100*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	_, err := q.Renew(ctx, "b", lb.Token, time.Minute)
	require.NoError(t, err)
	o, err := q.Complete(ctx, "a", la.Token)
	require.NoError(t, err)
	require.Equal(t, queue.StateDone, o.State)
	require.Empty(t, reclaim(t, q))
	require.Equal(t, queue.Stats{Leased: 1, Done: 1}, stats(t, q))
}

func testFailRetry(t *testing.T, open func(queue.Options) queue.Queue) {
	const base = 300 * time.Millisecond
	q := open(queue.Options{MaxAttempts: 3, Backoff: queue.Backoff{Base: base, Max: 10 * time.Second, Jitter: -1}})
	ctx := t.Context()
	enqueue(t, q, "a")
	l := lease1(t, q, "f1", 0)
	failed := time.Now()
	o, err := q.Fail(ctx, "a", l.Token, queue.Failure{Reason: "boom"})
	require.NoError(t, err)
	require.False(t, o.Terminal())
	require.Equal(t, queue.StateDelayed, o.State)
	require.Equal(t, "boom", o.Reason)
	require.Equal(t, 1, o.Attempt)
	require.Equal(t, "f1", o.Consumer)
	near(t, failed.Add(base), o.RetryAt, "retry after the base backoff")

	dup, err := q.Fail(ctx, "a", l.Token, queue.Failure{Reason: "boom again"})
	require.ErrorIs(t, err, queue.ErrDuplicate)
	require.Equal(t, o, dup)
	_, err = q.Complete(ctx, "a", l.Token)
	require.ErrorIs(t, err, queue.ErrLeaseLost, "a failed attempt cannot complete")

	in := get(t, q, "a")
	require.Equal(t, queue.StateDelayed, in.State)
	require.Equal(t, "boom", in.Reason)
	require.Equal(t, o.RetryAt, in.Due)
	require.Equal(t, queue.Stats{Delayed: 1}, stats(t, q))
	requireNone(t, q)

	l2 := leaseWait(t, q, "f2", 0)
	require.Equal(t, 2, l2.Attempt)
	require.False(t, time.Now().Before(o.RetryAt.Add(-100*time.Millisecond)), "not before the backoff")
	failed = time.Now()
	o, err = q.Fail(ctx, "a", l2.Token, queue.Failure{Reason: "boom 2"})
	require.NoError(t, err)
	near(t, failed.Add(2*base), o.RetryAt, "the backoff doubles")
}

func testMaxAttempts(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 2, Backoff: queue.Backoff{Base: 10 * time.Millisecond}})
	ctx := t.Context()
	enqueue(t, q, "a")
	l := lease1(t, q, "f", 0)
	o, err := q.Fail(ctx, "a", l.Token, queue.Failure{Reason: "first"})
	require.NoError(t, err)
	require.False(t, o.Terminal())
	l = leaseWait(t, q, "f", 0)
	require.Equal(t, 2, l.Attempt)
	o, err = q.Fail(ctx, "a", l.Token, queue.Failure{Reason: "second"})
	require.NoError(t, err)
	require.True(t, o.Terminal())
	require.Equal(t, queue.Outcome{JobID: "a", Item: "item-a", State: queue.StateFailed, Attempt: 2, Consumer: "f", Reason: "second"}, o)
	dup, err := q.Fail(ctx, "a", l.Token, queue.Failure{Reason: "second"})
	require.ErrorIs(t, err, queue.ErrDuplicate)
	require.Equal(t, o, dup)

	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: 200 * time.Millisecond})
	require.NoError(t, err)
	require.Empty(t, ls, "an ended job runs no more")
	in := get(t, q, "a")
	require.Equal(t, queue.StateFailed, in.State)
	require.Equal(t, "second", in.Reason)
	require.Equal(t, 2, in.Attempts)
	require.Equal(t, queue.Stats{Failed: 1}, stats(t, q))
}

func testMaxAttemptsByExpiry(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 2})
	ctx := t.Context()
	enqueue(t, q, "a")
	reclaimOne(t, q, lease1(t, q, "f1", 100*time.Millisecond))
	l := lease1(t, q, "f2", 100*time.Millisecond)
	require.Equal(t, 2, l.Attempt)
	o := reclaimOne(t, q, l)
	require.True(t, o.Terminal())
	require.Equal(t, queue.Outcome{
		JobID: "a", Item: "item-a", State: queue.StateFailed, Attempt: 2, Consumer: "f2",
		Reason: queue.ReasonLeaseExpired,
	}, o)
	require.Empty(t, reclaim(t, q))
	_, err := q.Complete(ctx, "a", l.Token)
	require.ErrorIs(t, err, queue.ErrLeaseLost)
	require.Equal(t, queue.StateFailed, get(t, q, "a").State)
	require.Equal(t, queue.Stats{Failed: 1}, stats(t, q))
	requireNone(t, q)
}

func testFailFinal(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 5})
	enqueue(t, q, "a")
	l := lease1(t, q, "f", 0)
	o, err := q.Fail(t.Context(), "a", l.Token, queue.Failure{Reason: "Specify startPath with ZIP", Final: true})
	require.NoError(t, err)
	require.True(t, o.Terminal())
	require.Equal(t, queue.StateFailed, o.State)
	require.Equal(t, 1, o.Attempt)
	require.Equal(t, queue.Stats{Failed: 1}, stats(t, q))
}

func testDelete(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	enqueue(t, q, "pending")
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "delayed", NotBefore: time.Now().Add(200 * time.Millisecond)}))
	enqueue(t, q, "leased")
	enqueue(t, q, "done")
	enqueue(t, q, "after")
	require.NoError(t, q.Delete(ctx, "pending"))
	require.NoError(t, q.Delete(ctx, "delayed"))
	l := lease1(t, q, "f", 0)
	require.Equal(t, "leased", l.JobID)
	require.NoError(t, q.Delete(ctx, "leased"))
	ld := lease1(t, q, "f", 0)
	require.Equal(t, "done", ld.JobID)
	_, err := q.Complete(ctx, "done", ld.Token)
	require.NoError(t, err)
	require.NoError(t, q.Delete(ctx, "done"))

	for _, id := range []string{"pending", "delayed", "leased", "done"} {
		_, err := q.Get(ctx, id)
		require.ErrorIs(t, err, queue.ErrNotFound, id)
		require.ErrorIs(t, q.Delete(ctx, id), queue.ErrNotFound, id)
	}
	// The deleted attempt's holder learns on its next call.
	_, err = q.Renew(ctx, "leased", l.Token, 0)
	require.ErrorIs(t, err, queue.ErrNotFound)
	_, err = q.Complete(ctx, "leased", l.Token)
	require.ErrorIs(t, err, queue.ErrNotFound)
	require.Equal(t, queue.Stats{Pending: 1, Done: 1}, stats(t, q))

	// A deleted id starts afresh, and runs once.
	enqueue(t, q, "pending")
	time.Sleep(300 * time.Millisecond) // "delayed" would be due
	require.Equal(t, "after", lease1(t, q, "f", 0).JobID)
	l = lease1(t, q, "f", 0)
	require.Equal(t, "pending", l.JobID)
	require.Equal(t, 1, l.Attempt)
	requireNone(t, q)
	require.Empty(t, reclaim(t, q))
	require.Equal(t, queue.Stats{Leased: 2, Done: 1}, stats(t, q))
}

func testStats(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 1})
	ctx := t.Context()
	require.Equal(t, queue.Stats{}, stats(t, q))
	for _, id := range []string{"done", "failed", "leased", "p1", "p2"} {
		enqueue(t, q, id)
	}
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "delayed", NotBefore: time.Now().Add(time.Hour)}))
	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Max: 3})
	require.NoError(t, err)
	require.Len(t, ls, 3)
	_, err = q.Complete(ctx, "done", ls[0].Token)
	require.NoError(t, err)
	_, err = q.Fail(ctx, "failed", ls[1].Token, queue.Failure{Reason: "x"})
	require.NoError(t, err)
	require.Equal(t, queue.Stats{Pending: 2, Delayed: 1, Leased: 1, Done: 1, Failed: 1}, stats(t, q))
}

// testConcurrent: 50 consumers lease and complete 500 jobs enqueued
// meanwhile. Each job is leased and completed once, none is lost.
func testConcurrent(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{Lease: time.Minute})
	ctx := t.Context()
	const jobs, consumers = 500, 50
	var leased, completed [jobs]atomic.Int32
	var done atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range jobs {
			if err := q.Enqueue(ctx, queue.Job{ID: fmt.Sprint(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for c := range consumers {
		wg.Go(func() {
			for done.Load() < jobs && !t.Failed() {
				ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: fmt.Sprint("f", c), Max: 1 + c%4, Wait: 100 * time.Millisecond})
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range ls {
					var i int
					_, _ = fmt.Sscan(l.JobID, &i)
					leased[i].Add(1)
					if l.Attempt != 1 {
						t.Errorf("job %s attempt %d", l.JobID, l.Attempt)
					}
					o, err := q.Complete(ctx, l.JobID, l.Token)
					if err != nil || o.State != queue.StateDone {
						t.Errorf("complete %s: %v %v", l.JobID, o, err)
						continue
					}
					completed[i].Add(1)
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	for i := range jobs {
		require.EqualValues(t, 1, leased[i].Load(), "job %d leased", i)
		require.EqualValues(t, 1, completed[i].Load(), "job %d completed", i)
	}
	require.Equal(t, queue.Stats{Done: jobs}, stats(t, q))
}

// testExactlyOnce: consumers complete, fail, complete twice at once, let
// leases expire and complete late, while reclaimers run. Every job ends
// exactly once, in the one terminal outcome some call returned.
func testExactlyOnce(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{MaxAttempts: 3, Lease: 150 * time.Millisecond, Backoff: queue.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	const jobs, consumers, reclaimers = 200, 16, 3
	for i := range jobs {
		require.NoError(t, q.Enqueue(ctx, queue.Job{ID: fmt.Sprint(i), Item: fmt.Sprint("item", i)}))
	}
	var mu sync.Mutex
	terminal := map[string][]queue.Outcome{} // every terminal outcome returned, by job
	successes := map[string]int{}            // Completes that returned no error
	// How often each path ran: the test proves nothing about a path it
	// did not take.
	var lost, dups, lateOK, requeued, expiredEnd atomic.Int32
	record := func(o queue.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		if o.Terminal() {
			terminal[o.JobID] = append(terminal[o.JobID], o)
		}
	}
	ended := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(terminal)
	}
	// accept checks a Complete's or Fail's error: the lease may have been
	// reclaimed under a slow caller.
	accept := func(op string, o queue.Outcome, err error) bool {
		switch {
		case err == nil:
			record(o)
			return true
		case errors.Is(err, queue.ErrLeaseLost):
			lost.Add(1)
			return false
		case errors.Is(err, queue.ErrDuplicate):
			dups.Add(1)
			return false
		default:
			t.Errorf("%s: %v", op, err)
			return false
		}
	}
	var wg sync.WaitGroup
	for range reclaimers {
		wg.Go(func() {
			for ctx.Err() == nil && ended() < jobs {
				out, err := q.Reclaim(ctx)
				if err != nil && ctx.Err() == nil {
					t.Error(err)
				}
				for _, o := range out {
					if o.Terminal() {
						expiredEnd.Add(1)
					} else {
						requeued.Add(1)
					}
					record(o)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	for c := range consumers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for ctx.Err() == nil && ended() < jobs {
				ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: fmt.Sprint("f", c), Max: 2, Wait: 50 * time.Millisecond})
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				for _, l := range ls {
					switch p := rng.IntN(100); {
					case p < 40: // complete
						o, err := q.Complete(ctx, l.JobID, l.Token)
						if accept("complete", o, err) {
							mu.Lock()
							successes[l.JobID]++
							mu.Unlock()
							if o.Attempt != l.Attempt {
								t.Errorf("job %s: completed attempt %d reported as %d", l.JobID, l.Attempt, o.Attempt)
							}
						}
					case p < 55: // complete twice at once: a retried acknowledgement
						var inner sync.WaitGroup
						for range 2 {
							inner.Go(func() {
								o, err := q.Complete(ctx, l.JobID, l.Token)
								if accept("complete twice", o, err) {
									mu.Lock()
									successes[l.JobID]++
									mu.Unlock()
								}
							})
						}
						inner.Wait()
					case p < 75: // fail, once in a while finally
						o, err := q.Fail(ctx, l.JobID, l.Token, queue.Failure{Reason: "boom", Final: p < 58})
						accept("fail", o, err)
					case p < 88: // freeze past the lease, then complete late
						time.Sleep(time.Until(l.Expires) + time.Duration(rng.IntN(60))*time.Millisecond)
						o, err := q.Complete(ctx, l.JobID, l.Token)
						if accept("late complete", o, err) {
							lateOK.Add(1)
							mu.Lock()
							successes[l.JobID]++
							mu.Unlock()
						}
					default: // die: the lease expires
					}
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, ctx.Err(), "every job ends in time")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, terminal, jobs)
	for id, outs := range terminal {
		require.Len(t, outs, 1, "job %s ended more than once: %+v", id, outs)
		o := outs[0]
		require.LessOrEqual(t, successes[id], 1, "job %s completed twice", id)
		require.Equal(t, o.State == queue.StateDone, successes[id] == 1, "job %s: %+v", id, o)
		require.LessOrEqual(t, o.Attempt, 3)
		in := get(t, q, id)
		require.Equal(t, o.State, in.State, "job %s", id)
		require.Equal(t, o.Attempt, in.Attempts, "job %s", id)
	}
	s := stats(t, q)
	require.Equal(t, queue.Stats{}, queue.Stats{Pending: s.Pending, Delayed: s.Delayed, Leased: s.Leased})
	require.EqualValues(t, jobs, s.Done+s.Failed)
	t.Logf("%d done, %d failed; %d leases reclaimed, %d ended by expiry; late calls: %d refused, %d in time; %d duplicates",
		s.Done, s.Failed, requeued.Load(), expiredEnd.Load(), lost.Load(), lateOK.Load(), dups.Load())
	require.Positive(t, lost.Load(), "late calls were refused")
	require.Positive(t, dups.Load(), "duplicate acknowledgements were made")
	require.Positive(t, requeued.Load()+expiredEnd.Load(), "leases expired")
}

func testCanceledContext(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	enqueue(t, q, "a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"Enqueue":  func() error { return q.Enqueue(ctx, queue.Job{ID: "b"}) },
		"Lease":    func() error { _, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f"}); return err },
		"Complete": func() error { _, err := q.Complete(ctx, "a", "t"); return err },
		"Reclaim":  func() error { _, err := q.Reclaim(ctx); return err },
		"Stats":    func() error { _, err := q.Stats(ctx); return err },
		"Get":      func() error { _, err := q.Get(ctx, "a"); return err },
	}
	for name, call := range calls {
		err := call()
		require.ErrorIs(t, err, context.Canceled, name)
		require.NotErrorIs(t, err, queue.ErrUnavailable, "%s: the caller gave up; the queue is fine", name)
	}
	require.Equal(t, queue.Stats{Pending: 1}, stats(t, q))
}

func testClose(t *testing.T, open func(queue.Options) queue.Queue) {
	q := open(queue.Options{})
	ctx := t.Context()
	enqueue(t, q, "a")
	errc := make(chan error, 1)
	go func() {
		_, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: time.Minute, Max: 2})
		if err == nil {
			// It got "a" first; the next waits.
			_, err = q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
		}
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, q.Close())
	select {
	case err := <-errc:
		require.ErrorIs(t, err, queue.ErrUnavailable)
	case <-time.After(within):
		t.Fatal("a waiting Lease outlived Close")
	}
	require.ErrorIs(t, q.Enqueue(ctx, queue.Job{ID: "b"}), queue.ErrUnavailable)
	_, err := q.Stats(ctx)
	require.ErrorIs(t, err, queue.ErrUnavailable)
	require.NoError(t, q.Close(), "closing again")
}
