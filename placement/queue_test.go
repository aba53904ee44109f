package placement

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLongQueueHoldsNoGoroutines queues thousands of holders behind the
// only slot: they hold no goroutine while they wait, each learns its
// position, each moves up when the head is served, and when they all give
// up at once each hears its end exactly once and the queue empties.
func TestLongQueueHoldsNoGoroutines(t *testing.T) {
	const n = 3000
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p", QueueTimeout: time.Hour}}})
	a := newHTTPFarm(t, "a", 1, "p")
	a.register(t, tp.Placer)
	first := tp.acquire(t, newHolder("h0", "p"), false)

	base := runtime.NumGoroutine()
	type queued struct {
		pos    atomic.Int64
		ends   atomic.Int32
		inst   *Instance
		err    error
		cancel context.CancelFunc
	}
	ws := make([]*queued, n)
	var ended sync.WaitGroup
	for i := range ws {
		w := &queued{}
		ws[i] = w
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		ended.Add(1)
		tp.AcquireFunc(ctx, &newHolder(fmt.Sprintf("w%d", i), "p").Holder, true,
			func(pos int) { w.pos.Store(int64(pos)) },
			func(inst *Instance, err error) {
				w.inst, w.err = inst, err
				if w.ends.Add(1) == 1 {
					ended.Done()
				}
			})
	}
	told := func(want func(i int) int64) func() bool {
		return func() bool {
			for i, w := range ws {
				if w.pos.Load() != want(i) {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, told(func(i int) int64 { return int64(i + 1) }), 10*time.Second, 10*time.Millisecond,
		"every holder told its position")
	require.Len(t, tp.Snapshot().Queue, n)
	require.Less(t, runtime.NumGoroutine()-base, 50, "goroutines held by %d queued holders", n)

	// The head gets the slot the first holder frees; the rest move up.
	tp.Release(first, true)
	require.Eventually(t, func() bool { return ws[0].ends.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, ws[0].err)
	require.NotNil(t, ws[0].inst)
	require.Eventually(t, told(func(i int) int64 { return int64(max(i, 1)) }), 10*time.Second, 10*time.Millisecond,
		"every holder told its new position")

	// Everyone else gives up at once.
	for _, w := range ws[1:] {
		w.cancel()
	}
	done := make(chan struct{})
	go func() { ended.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("holders that gave up were not all told their end")
	}
	for i, w := range ws[1:] {
		require.ErrorIs(t, w.err, context.Canceled, "holder %d", i+1)
		require.Nil(t, w.inst)
	}
	require.Eventually(t, func() bool { return len(tp.Snapshot().Queue) == 0 && tp.Capacity().Queued == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return runtime.NumGoroutine()-base < 10 }, 10*time.Second, 10*time.Millisecond)
	for i, w := range ws {
		require.EqualValues(t, 1, w.ends.Load(), "holder %d ended once", i)
	}
	tp.Release(ws[0].inst, true)
}

// TestInstancesTheFarmNoLongerRunsAreLost: an instance a farm's heartbeat
// stops listing died unseen (a stream instance has no connection of the
// manager's to break). Once it has been on the books long enough to be in
// a heartbeat, an idle one is taken off them and replaced, and a bound
// one's holder is told; one just booked is left alone.
func TestInstancesTheFarmNoLongerRunsAreLost(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "s", Warm: 1}}, HeartbeatInterval: time.Hour})
	a := newHTTPFarm(t, "a", 3, "s")
	a.register(t, tp.Placer)
	eventually(t, "a warm instance", func() bool { return tp.Snapshot().Pools[0].Idle == 1 })
	h := newHolder("h", "s")
	bound := tp.acquire(t, h, false)
	eventually(t, "a warm instance again", func() bool { return tp.Snapshot().Pools[0].Idle == 1 })
	var idle string
	for _, in := range tp.Snapshot().Instances {
		if in.ID != bound.ID() {
			idle = in.ID
		}
	}
	require.NotEmpty(t, idle)

	// The farm stops both behind the manager's back.
	a.set(func(f *httpFarm) {
		delete(f.running, idle)
		delete(f.running, bound.ID())
	})
	a.heartbeat(t, tp.Placer)
	require.Len(t, tp.Snapshot().Instances, 2, "just booked: maybe not in the heartbeat yet")

	tp.clock.advance(slotSettle)
	a.heartbeat(t, tp.Placer)
	select {
	case err := <-h.lost:
		require.ErrorContains(t, err, "farm a no longer runs it")
	case <-time.After(10 * time.Second):
		t.Fatal("the holder of an instance the farm no longer runs was not told")
	}
	eventually(t, "a new warm instance in place of the one the farm stopped", func() bool {
		s := tp.Snapshot()
		if len(s.Instances) != 1 || s.Pools[0].Idle != 1 {
			return false
		}
		return s.Instances[0].ID != idle && s.Instances[0].ID != bound.ID()
	})
}
