package items_test

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/items/itemstest"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// openRedis opens a store on srv, by default under a prefix of its own.
func openRedis(t *testing.T, srv *redistest.Server, o items.RedisOptions) *items.Redis {
	t.Helper()
	o.URL = cmp.Or(o.URL, srv.URL())
	o.Prefix = cmp.Or(o.Prefix, redistest.Prefix())
	return redistest.Open(t, func(ctx context.Context) (*items.Redis, error) { return items.NewRedis(ctx, o) })
}

func TestRedis(t *testing.T) {
	srv := redistest.Start(t)
	itemstest.Run(t, func(t *testing.T) items.Store { return openRedis(t, srv, items.RedisOptions{}) })
}

// TestRedisShared: managers on one server and prefix share items, their
// LastUpdated and their events, and lose no update of each other's; a
// store opened later (a manager restarted) has them all; another prefix
// is another store.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := openRedis(t, srv, items.RedisOptions{Prefix: "shared:"})
	b := openRedis(t, srv, items.RedisOptions{Prefix: "shared:"})
	other := openRedis(t, srv, items.RedisOptions{Prefix: "other:"})
	chB, err := b.Subscribe(ctx)
	require.NoError(t, err)
	chOther, err := other.Subscribe(ctx)
	require.NoError(t, err)

	created, err := a.Create(ctx, items.Item{ID: "x", Name: "m.stl", State: items.StatePending})
	require.NoError(t, err)
	got, err := b.Get(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, created, got)
	e := itemstest.Next(t, chB)
	require.Equal(t, items.EventCreated, e.Type)
	require.Equal(t, &created, e.Item)

	var wg sync.WaitGroup
	for i := range 50 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			if _, err := st.Update(ctx, "x", func(it *items.Item) error { it.Attempts++; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err = a.Get(ctx, "x")
	require.NoError(t, err)
	require.Equal(t, 50, got.Attempts)
	for i := 1; i <= 50; i++ { // b hears every update, in order
		e := itemstest.Next(t, chB)
		require.Equal(t, items.EventUpdated, e.Type)
		require.Equal(t, i, e.Item.Attempts)
	}

	require.NoError(t, b.Delete(ctx, "x"))
	require.ErrorIs(t, a.Delete(ctx, "x"), items.ErrNotFound)
	la, err := a.LastUpdated(ctx)
	require.NoError(t, err)
	lb, err := b.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, la, lb)
	require.Equal(t, items.EventDeleted, itemstest.Next(t, chB).Type)

	_, err = a.Create(ctx, items.Item{ID: "y"})
	require.NoError(t, err)
	later := openRedis(t, srv, items.RedisOptions{Prefix: "shared:"})
	list, err := later.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "y", list[0].ID)

	list, err = other.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	last, err := other.LastUpdated(ctx)
	require.NoError(t, err)
	require.True(t, last.IsZero())
	select {
	case e := <-chOther:
		t.Fatalf("another prefix heard %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRedisOutage: calls fail with ErrUnavailable while the server is
// down; a subscription lives through it and is told to resync.
func TestRedisOutage(t *testing.T) {
	srv := redistest.StartPersistent(t)
	ctx := t.Context()
	r := openRedis(t, srv, items.RedisOptions{OpTimeout: 300 * time.Millisecond})
	_, err := r.Create(ctx, items.Item{ID: "x"})
	require.NoError(t, err)
	ch, err := r.Subscribe(ctx)
	require.NoError(t, err)

	srv.Kill()
	_, err = r.Get(ctx, "x")
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = r.Update(ctx, "x", func(it *items.Item) error { it.Name = "n"; return nil })
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = r.LastUpdated(ctx)
	require.ErrorIs(t, err, items.ErrUnavailable)

	srv.Restart()
	require.Equal(t, items.EventResync, itemstest.Next(t, ch).Type)
	got, err := r.Update(ctx, "x", func(it *items.Item) error { it.Name = "n"; return nil })
	require.NoError(t, err)
	e := itemstest.Next(t, ch)
	require.Equal(t, items.EventUpdated, e.Type)
	require.Equal(t, &got, e.Item)
}

func TestRedisBadURL(t *testing.T) {
	_, err := items.NewRedis(t.Context(), items.RedisOptions{URL: "redis://:s3cret@host:port:x/0"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

// TestRedisLayout: the keys the documentation names hold what it says,
// and a record that does not decode is left out of List, not the end of
// it.
func TestRedisLayout(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	r := openRedis(t, srv, items.RedisOptions{Prefix: "lay:"})
	it, err := r.Create(ctx, items.Item{ID: "x", Name: "m.stl"})
	require.NoError(t, err)
	c := srv.Client(t)
	h, err := c.HGetAll(ctx, "lay:item:x").Result()
	require.NoError(t, err)
	require.JSONEq(t, `{"storageID":"x","name":"m.stl","conversionState":"UPLOADING","generation":0,"attempts":0}`, h["data"])
	require.Equal(t, fmt.Sprint(it.Created.UnixMilli()), h["created"])
	require.Equal(t, fmt.Sprint(it.Updated.UnixMilli()), h["updated"])
	require.Len(t, h, 3, "data, created, updated")
	score, err := c.ZScore(ctx, "lay:index", "x").Result()
	require.NoError(t, err)
	require.Equal(t, float64(it.Created.UnixMilli()), score)
	last, err := c.Get(ctx, "lay:updated").Result()
	require.NoError(t, err)
	require.Equal(t, fmt.Sprint(it.Updated.UnixMilli()), last)

	require.NoError(t, c.HSet(ctx, "lay:item:bad", "data", "{", "created", "1", "updated", "1").Err())
	require.NoError(t, c.ZAdd(ctx, "lay:index", redis.Z{Score: 1, Member: "bad"}).Err())
	list, err := r.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	_, err = r.Get(ctx, "bad")
	require.Error(t, err)
	require.NotErrorIs(t, err, items.ErrNotFound)
}
