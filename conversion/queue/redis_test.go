package queue_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/queue/queuetest"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// openRedis opens a queue on srv, by default under a prefix of its own.
// Waiting Leases poll only once a minute: in tests, every wake-up must
// come from a notification.
func openRedis(t testing.TB, srv *redistest.Server, o queue.Options, ro queue.RedisOptions) *queue.Redis {
	t.Helper()
	ro.URL = cmp.Or(ro.URL, srv.URL())
	ro.Prefix = cmp.Or(ro.Prefix, redistest.Prefix())
	ro.Poll = cmp.Or(ro.Poll, time.Minute)
	return redistest.Open(t, func(ctx context.Context) (*queue.Redis, error) { return queue.NewRedis(ctx, o, ro) })
}

func TestRedis(t *testing.T) {
	srv := redistest.Start(t)
	queuetest.Run(t, func(t *testing.T, o queue.Options) queue.Queue {
		return openRedis(t, srv, o, queue.RedisOptions{})
	})
}

// TestRedisShared: queues with the same prefix are one queue, and a job
// enqueued through one wakes a Lease waiting on another; another prefix is
// another queue.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := openRedis(t, srv, queue.Options{}, queue.RedisOptions{Prefix: "shared:"})
	b := openRedis(t, srv, queue.Options{}, queue.RedisOptions{Prefix: "shared:"})
	other := openRedis(t, srv, queue.Options{}, queue.RedisOptions{Prefix: "other:"})

	got := make(chan []queue.Lease, 1)
	go func() {
		ls, err := a.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- ls
	}()
	time.Sleep(200 * time.Millisecond)
	enqueued := time.Now()
	require.NoError(t, b.Enqueue(ctx, queue.Job{ID: "j", Item: "i"}))
	var l queue.Lease
	select {
	case ls := <-got:
		require.Len(t, ls, 1)
		l = ls[0]
		require.Less(t, time.Since(enqueued), 500*time.Millisecond, "woken by the other manager's enqueue")
	case <-time.After(10 * time.Second):
		t.Fatal("not woken")
	}
	s, err := other.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, queue.Stats{}, s)
	o, err := b.Complete(ctx, "j", l.Token)
	require.NoError(t, err, "any manager acknowledges")
	require.Equal(t, 1, o.Attempt)
	_, err = a.Complete(ctx, "j", l.Token)
	require.ErrorIs(t, err, queue.ErrDuplicate)
}

// TestRedisLayout: the keys are under the prefix, and a leased job's
// pending entry carries the attempt as its delivery count.
func TestRedisLayout(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	raw := srv.Client(t)
	q := openRedis(t, srv, queue.Options{MaxAttempts: 3, Backoff: queue.Backoff{Base: time.Hour, Jitter: -1}},
		queue.RedisOptions{Prefix: "lay:"})
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "a", Item: "i", Payload: []byte("p")}))
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "b"}))

	pending := func() []redis.XPendingExt {
		p, err := raw.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "lay:stream", Group: "drover", Start: "-", End: "+", Count: 10}).Result()
		require.NoError(t, err)
		return p
	}
	l1, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f1", Duration: 200 * time.Millisecond})
	require.NoError(t, err)
	p := pending()
	require.Len(t, p, 1)
	require.Equal(t, l1[0].Token, p[0].ID)
	require.Equal(t, "f1", p[0].Consumer)
	require.EqualValues(t, 1, p[0].RetryCount, "delivery count = attempt")

	time.Sleep(300 * time.Millisecond)
	out, err := q.Reclaim(ctx)
	require.NoError(t, err)
	require.Len(t, out, 1)
	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f2", Max: 2})
	require.NoError(t, err)
	require.Len(t, ls, 2)
	require.Equal(t, []string{"b", "a"}, []string{ls[0].JobID, ls[1].JobID}, "a reclaimed job goes to the tail")
	p = pending()
	require.Len(t, p, 2)
	require.Equal(t, ls[1].Token, p[1].ID, "each attempt its own entry")
	require.EqualValues(t, 2, p[1].RetryCount)
	require.Equal(t, "f2", p[1].Consumer)

	_, err = q.Fail(ctx, "b", ls[0].Token, queue.Failure{Reason: "x"})
	require.NoError(t, err)
	due, err := raw.ZScore(ctx, "lay:delayed", "b").Result()
	require.NoError(t, err)
	require.InDelta(t, float64(time.Now().Add(time.Hour).UnixMilli()), due, float64(time.Second.Milliseconds()))
	_, err = q.Complete(ctx, "a", ls[1].Token)
	require.NoError(t, err)
	require.Empty(t, pending())
	n, err := raw.XLen(ctx, "lay:stream").Result()
	require.NoError(t, err)
	require.Zero(t, n, "entries leave the stream with their attempt")
	ttl, err := raw.PTTL(ctx, "lay:job:a").Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 23*time.Hour, "an ended job's record expires after the retention")

	keys, err := raw.Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"lay:stream", "lay:delayed", "lay:job:a", "lay:job:b", "lay:stats"}, keys)
}

// TestRedisOutage: with the server down, calls fail with ErrUnavailable
// within OpTimeout; when it is back (empty: no persistence) the queue
// works again, its consumer group made anew, and waiting Leases are woken
// again.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	const opTimeout = 300 * time.Millisecond
	q := openRedis(t, srv, queue.Options{}, queue.RedisOptions{OpTimeout: opTimeout})
	ctx := t.Context()
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "a"}))

	srv.Stop()
	calls := map[string]func() error{
		"Enqueue": func() error { return q.Enqueue(ctx, queue.Job{ID: "b"}) },
		"Lease":   func() error { _, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f"}); return err },
		"LeaseWait": func() error {
			_, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
			return err
		},
		"Renew":    func() error { _, err := q.Renew(ctx, "a", "t", 0); return err },
		"Complete": func() error { _, err := q.Complete(ctx, "a", "t"); return err },
		"Fail":     func() error { _, err := q.Fail(ctx, "a", "t", queue.Failure{}); return err },
		"Reclaim":  func() error { _, err := q.Reclaim(ctx); return err },
		"Delete":   func() error { return q.Delete(ctx, "a") },
		"Get":      func() error { _, err := q.Get(ctx, "a"); return err },
		"Stats":    func() error { _, err := q.Stats(ctx); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		require.ErrorIs(t, err, queue.ErrUnavailable, name)
		require.Less(t, time.Since(start), opTimeout+300*time.Millisecond, name)
	}

	srv.Restart()
	require.Eventually(t, func() bool { _, err := q.Stats(ctx); return err == nil }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "after"}))
	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f"})
	require.NoError(t, err)
	require.Len(t, ls, 1, "the group is made again, from the stream's start")
	require.Equal(t, "after", ls[0].JobID)

	// The subscription comes back by itself: a waiting Lease is woken by
	// an enqueue again (Poll is a minute).
	got := make(chan []queue.Lease, 1)
	go func() {
		ls, _ := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Wait: 20 * time.Second})
		got <- ls
	}()
	for i := 0; ; i++ {
		require.NoError(t, q.Enqueue(ctx, queue.Job{ID: fmt.Sprint("wake", i)}))
		select {
		case ls := <-got:
			require.NotEmpty(t, ls)
			return
		case <-time.After(200 * time.Millisecond):
		}
		require.Less(t, i, 50, "no wake-up after the outage")
	}
}

// TestRedisPause: a server that stops answering for a while (CLIENT
// PAUSE) fails calls with ErrUnavailable, and loses nothing: when it
// answers again every job is where it was. A call whose reply was lost
// happened as a whole or not at all.
func TestRedisPause(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	const opTimeout = 300 * time.Millisecond
	q := openRedis(t, srv, queue.Options{}, queue.RedisOptions{OpTimeout: opTimeout})
	for _, id := range []string{"leased", "pending"} {
		require.NoError(t, q.Enqueue(ctx, queue.Job{ID: id}))
	}
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "delayed", NotBefore: time.Now().Add(1500 * time.Millisecond)}))
	l := lease1(t, q, "f", 10*time.Second)
	require.Equal(t, "leased", l.JobID)

	require.NoError(t, srv.Client(t).Do(ctx, "CLIENT", "PAUSE", 1000, "ALL").Err())
	require.ErrorIs(t, q.Enqueue(ctx, queue.Job{ID: "during"}), queue.ErrUnavailable)
	_, err := q.Stats(ctx)
	require.ErrorIs(t, err, queue.ErrUnavailable)

	require.Eventually(t, func() bool { _, err := q.Stats(ctx); return err == nil }, 10*time.Second, 50*time.Millisecond)
	_, err = q.Renew(ctx, "leased", l.Token, 0)
	require.NoError(t, err, "the lease survived")
	o, err := q.Complete(ctx, "leased", l.Token)
	require.NoError(t, err)
	require.Equal(t, 1, o.Attempt)
	want := []string{"pending", "delayed"}
	if in, err := q.Get(ctx, "during"); err == nil {
		require.Equal(t, queue.StatePending, in.State, "enqueued whole")
		want = []string{"pending", "during", "delayed"}
	} else {
		require.ErrorIs(t, err, queue.ErrNotFound)
	}
	var got []string
	for range want {
		got = append(got, leaseWait(t, q, "f").JobID)
	}
	require.Equal(t, want, got)
}

// TestRedisCrash: a server killed with SIGKILL, with an append-only file
// synced on every write, comes back with every job where it was: a lease
// still held by its token, a delayed job still delayed, the counters.
func TestRedisCrash(t *testing.T) {
	srv := redistest.StartPersistent(t)
	ctx := t.Context()
	q := openRedis(t, srv, queue.Options{}, queue.RedisOptions{OpTimeout: 300 * time.Millisecond})
	for _, id := range []string{"done", "failed", "leased", "pending"} {
		require.NoError(t, q.Enqueue(ctx, queue.Job{ID: id, Payload: []byte(id)}))
	}
	require.NoError(t, q.Enqueue(ctx, queue.Job{ID: "delayed", NotBefore: time.Now().Add(2 * time.Second)}))
	ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: "f", Max: 3, Duration: time.Minute})
	require.NoError(t, err)
	require.Len(t, ls, 3)
	_, err = q.Complete(ctx, "done", ls[0].Token)
	require.NoError(t, err)
	_, err = q.Fail(ctx, "failed", ls[1].Token, queue.Failure{Reason: "x", Final: true})
	require.NoError(t, err)
	before, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, queue.Stats{Pending: 1, Delayed: 1, Leased: 1, Done: 1, Failed: 1}, before)

	srv.Kill()
	_, err = q.Stats(ctx)
	require.ErrorIs(t, err, queue.ErrUnavailable)
	srv.Restart()
	require.Eventually(t, func() bool { _, err := q.Stats(ctx); return err == nil }, 10*time.Second, 20*time.Millisecond)
	after, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after)

	o, err := q.Complete(ctx, "leased", ls[2].Token)
	require.NoError(t, err, "the lease survived the crash")
	require.Equal(t, queue.StateDone, o.State)
	l := leaseWait(t, q, "f")
	require.Equal(t, "pending", l.JobID)
	require.Equal(t, []byte("pending"), l.Payload)
	require.Equal(t, "delayed", leaseWait(t, q, "f").JobID)
	in, err := q.Get(ctx, "failed")
	require.NoError(t, err)
	require.Equal(t, queue.StateFailed, in.State)
}

// TestRedisURL: NewRedis's errors never carry the password, and a server
// that does not answer is ErrUnavailable, fast.
func TestRedisURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())
	for _, tt := range []struct {
		name, url   string
		unavailable bool
	}{
		{"bad escape", "redis://:hunter2%zzSecret@127.0.0.1:6379/0", false},
		{"bad scheme", "http://:hunter2Secret@127.0.0.1:6379/0", false},
		{"refused", "redis://:hunter2Secret@" + closed + "/0", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := queue.NewRedis(t.Context(), queue.Options{}, queue.RedisOptions{URL: tt.url, OpTimeout: 500 * time.Millisecond})
			require.Error(t, err)
			require.Less(t, time.Since(start), time.Second)
			require.Equal(t, tt.unavailable, errors.Is(err, queue.ErrUnavailable), "%v", err)
			for _, part := range []string{"hunter2", "Secret"} {
				require.NotContains(t, err.Error(), part)
			}
		})
	}
}

func lease1(t *testing.T, q queue.Queue, consumer string, d time.Duration) queue.Lease {
	t.Helper()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: consumer, Duration: d})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	return ls[0]
}

func leaseWait(t *testing.T, q queue.Queue, consumer string) queue.Lease {
	t.Helper()
	ls, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: consumer, Wait: 10 * time.Second})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	return ls[0]
}

// TestRedisClose: Close ends the queue's goroutines (its subscription) and
// the waiting Leases.
func TestRedisClose(t *testing.T) {
	srv := redistest.Start(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	q, err := queue.NewRedis(t.Context(), queue.Options{}, queue.RedisOptions{URL: srv.URL(), Prefix: "close:"})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := q.Lease(t.Context(), queue.LeaseRequest{Consumer: "f", Wait: time.Minute})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, q.Close())
	require.ErrorIs(t, <-errc, queue.ErrUnavailable)
	require.NoError(t, q.Close())
}
