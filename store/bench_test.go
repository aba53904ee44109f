package store_test

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/store"
)

// BenchmarkPlacement measures one placement cycle as a manager runs it:
// Reserve, the instance is ready (starting → idle), a session binds it
// (idle → bound), release (FreeSlot). Goroutines place on one farm.
func BenchmarkPlacement(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		st := store.NewMemory()
		b.Cleanup(func() { _ = st.Close() })
		benchPlacement(b, st)
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		st, err := store.NewRedis(b.Context(), store.RedisOptions{URL: srv.URL()})
		require.NoError(b, err)
		b.Cleanup(func() { _ = st.Close() })
		benchPlacement(b, st)
	})
}

func benchPlacement(b *testing.B, st store.Store) {
	ctx := b.Context()
	require.NoError(b, st.PutFarm(ctx, store.Farm{ID: "f", Slots: 1 << 20}))
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := "s" + strconv.FormatInt(n.Add(1), 10)
			s := store.Slot{ID: id, Owner: "m", Pool: "p", State: store.SlotStarting}
			if err := st.Reserve(ctx, "f", s); err != nil {
				b.Error(err)
				return
			}
			s.Instance, s.State = "i"+id, store.SlotIdle
			if err := st.UpdateSlot(ctx, "f", s, store.SlotStarting); err != nil {
				b.Error(err)
				return
			}
			s.State, s.Session = store.SlotBound, "session"+id
			if err := st.UpdateSlot(ctx, "f", s, store.SlotIdle); err != nil {
				b.Error(err)
				return
			}
			if err := st.FreeSlot(ctx, "f", id); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}
