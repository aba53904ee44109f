package queue

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// TestRedisPrune: consumers (farms) that hold nothing are deleted from the
// group once idle long enough; one that holds a lease is kept.
func TestRedisPrune(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	q, err := NewRedis(ctx, Options{}, RedisOptions{URL: srv.URL(), Prefix: "prune:"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	for _, id := range []string{"a", "b"} {
		require.NoError(t, q.Enqueue(ctx, Job{ID: id}))
	}
	ls, err := q.Lease(ctx, LeaseRequest{Consumer: "gone"})
	require.NoError(t, err)
	_, err = q.Complete(ctx, "a", ls[0].Token)
	require.NoError(t, err)
	_, err = q.Lease(ctx, LeaseRequest{Consumer: "busy"})
	require.NoError(t, err)

	consumers := func() []string {
		cs, err := srv.Client(t).XInfoConsumers(ctx, "prune:stream", group).Result()
		require.NoError(t, err)
		var names []string
		for _, c := range cs {
			names = append(names, c.Name)
		}
		return names
	}
	require.ElementsMatch(t, []string{"gone", "busy"}, consumers())
	require.NoError(t, q.prune(ctx, time.Hour))
	require.ElementsMatch(t, []string{"gone", "busy"}, consumers(), "not idle for an hour")
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, q.prune(ctx, time.Millisecond))
	require.Equal(t, []string{"busy"}, consumers())
}
