package store_test

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/store"
	"github.com/drover-dev/drover/store/storetest"
)

// openRedis opens a store on srv, by default under a prefix of its own.
func openRedis(t *testing.T, srv *redistest.Server, o store.RedisOptions) *store.Redis {
	t.Helper()
	o.URL = cmp.Or(o.URL, srv.URL())
	o.Prefix = cmp.Or(o.Prefix, redistest.Prefix())
	return redistest.Open(t, func(ctx context.Context) (*store.Redis, error) { return store.NewRedis(ctx, o) })
}

func TestRedis(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openRedis(t, srv, store.RedisOptions{}) })
}

// TestRedisShared: stores with the same prefix are one store; another
// prefix is another store.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	a := openRedis(t, srv, store.RedisOptions{Prefix: "shared:"})
	b := openRedis(t, srv, store.RedisOptions{Prefix: "shared:"})
	other := openRedis(t, srv, store.RedisOptions{Prefix: "other:"})
	chB, err := b.Subscribe(ctx)
	require.NoError(t, err)
	chOther, err := other.Subscribe(ctx)
	require.NoError(t, err)

	require.NoError(t, a.PutFarm(ctx, store.Farm{ID: "f", Slots: 1}))
	require.NoError(t, b.Reserve(ctx, "f", store.Slot{ID: "s", Owner: "mb", State: store.SlotStarting}))
	require.ErrorIs(t, a.Reserve(ctx, "f", store.Slot{ID: "t", Owner: "ma", State: store.SlotStarting}), store.ErrFull)
	farms, err := other.Farms(ctx)
	require.NoError(t, err)
	require.Empty(t, farms)

	ea := store.Event{Type: store.EventFarmAdded, Farm: "f", Manager: "ma"}
	require.NoError(t, a.Publish(ctx, ea))
	eo := store.Event{Type: store.EventFarmAdded, Farm: "g", Manager: "mo"}
	require.NoError(t, other.Publish(ctx, eo))
	for _, c := range []struct {
		ch   <-chan store.Event
		want store.Event
	}{{chB, ea}, {chOther, eo}} {
		select {
		case got := <-c.ch:
			require.Equal(t, c.want, got, "the first event on the channel is its prefix's")
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	addr, _ := testutil.RefusingAddr(t)
	return addr
}

// TestRedisURL: NewRedis's errors never carry the password.
func TestRedisURL(t *testing.T) {
	const password = "hunter2/Secret"
	for _, tt := range []struct {
		name, url   string
		unavailable bool
	}{
		{"bad escape", "redis://:hunter2%zzSecret@127.0.0.1:6379/0", false},
		{"unescaped slash", "redis://:" + password + "@127.0.0.1:6379/0", false},
		{"bad db", "redis://:hunter2Secret@127.0.0.1:6379/db", false},
		{"bad scheme", "http://:hunter2Secret@127.0.0.1:6379/0", false},
		{"refused", "redis://:hunter2Secret@" + closedAddr(t) + "/0", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := store.NewRedis(t.Context(), store.RedisOptions{URL: tt.url, OpTimeout: 500 * time.Millisecond})
			require.Error(t, err)
			require.Less(t, time.Since(start), time.Second)
			require.Equal(t, tt.unavailable, errors.Is(err, store.ErrUnavailable), "%v", err)
			for _, part := range []string{"hunter2", "Secret"} {
				require.NotContains(t, err.Error(), part)
			}
		})
	}
}

// TestRedisRestart: with the server down, calls fail with ErrUnavailable
// within OpTimeout; once it is back they work again, and a subscription
// made before the outage delivers again by itself.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	const opTimeout = 300 * time.Millisecond
	r := openRedis(t, srv, store.RedisOptions{OpTimeout: opTimeout})
	ctx := t.Context()
	ch, err := r.Subscribe(ctx)
	require.NoError(t, err)
	storetest.AwaitEvent(t, r, ch, store.Event{Type: store.EventFarmAdded, Farm: "before"})
	require.NoError(t, r.PutFarm(ctx, store.Farm{ID: "f", Slots: 1}))

	srv.Stop()
	calls := map[string]func() error{
		"Ping":    func() error { return r.Ping(ctx) },
		"PutFarm": func() error { return r.PutFarm(ctx, store.Farm{ID: "g", Slots: 1}) },
		"Reserve": func() error { return r.Reserve(ctx, "f", store.Slot{ID: "s", Owner: "m", State: store.SlotStarting}) },
		"Farms":   func() error { _, err := r.Farms(ctx); return err },
		"Publish": func() error { return r.Publish(ctx, store.Event{Type: store.EventSlotFreed}) },
		"Claim":   func() error { _, err := r.ClaimSession(ctx, "th", "m", time.Minute); return err },
		"Alive":   func() error { return r.Alive(ctx, "m", time.Minute) },
		"Subscribe": func() error {
			sub, err := r.Subscribe(ctx)
			require.Nil(t, sub)
			return err
		},
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		took := time.Since(start)
		require.ErrorIs(t, err, store.ErrUnavailable, name)
		var netErr net.Error
		require.True(t, errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded),
			"%s: the go-redis error is kept: %v", name, err)
		require.Less(t, took, opTimeout+200*time.Millisecond, "%s took %v", name, took)
	}

	srv.Restart()
	require.Eventually(t, func() bool { return r.Ping(ctx) == nil }, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, r.PutFarm(ctx, store.Farm{ID: "f", Slots: 1}), "the restarted server is empty")
	require.NoError(t, r.Reserve(ctx, "f", store.Slot{ID: "s", Owner: "m", State: store.SlotStarting}))
	storetest.AwaitEvent(t, r, ch, store.Event{Type: store.EventFarmAdded, Farm: "after"})
}
