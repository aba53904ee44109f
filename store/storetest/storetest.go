// Package storetest is the conformance suite of store.Store: every
// implementation runs Run, so that the in-process store and Redis behave
// alike, down to their errors.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/store"
)

const (
	// clockSlack bounds the gap between the test's clock and the store's
	// (the same machine's, for Redis the server's).
	clockSlack = 2 * time.Second
	// shortTTL is the ttl of records a test waits to see expire.
	shortTTL = 300 * time.Millisecond
	// within bounds every wait for something the store does by itself.
	within = 5 * time.Second
)

// Run runs the suite. Each subtest calls open for an empty store of its
// own and closes it when it ends, so Close must be idempotent. Subtests
// run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st store.Store)
	}{
		{"PutFarm", testPutFarm},
		{"PutFarmReplaceDropsSlots", testPutFarmReplace},
		{"FarmsOrdered", testFarmsOrdered},
		{"TouchFarm", testTouchFarm},
		{"DrainFarm", testDrainFarm},
		{"RemoveFarm", testRemoveFarm},
		{"RemoveFarmConcurrent", testRemoveFarmConcurrent},
		{"Reserve", testReserve},
		{"ReserveSameID", testReserveSameID},
		{"ReserveConcurrent", testReserveConcurrent},
		{"UpdateSlot", testUpdateSlot},
		{"UpdateSlotConcurrent", testUpdateSlotConcurrent},
		{"FreeSlot", testFreeSlot},
		{"Slots", testSlots},
		{"Capacity", testCapacity},
		{"ClaimSession", testClaimSession},
		{"DeleteSession", testDeleteSession},
		{"TouchSessions", testTouchSessions},
		{"SessionExpiry", testSessionExpiry},
		{"Alive", testAlive},
		{"NonPositiveTTL", testNonPositiveTTL},
		{"PublishSubscribe", testPublishSubscribe},
		{"SlowSubscriber", testSlowSubscriber},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			t.Cleanup(func() { _ = st.Close() })
			tt.fn(t, st)
		})
	}
}

// AwaitEvent publishes e on st every 100 ms until it arrives on ch: for a
// subscription that must come back by itself (after an outage, after it
// overflowed), where any single event may be lost.
func AwaitEvent(t testing.TB, st store.Store, ch <-chan store.Event, e store.Event) {
	t.Helper()
	deadline := time.After(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		// A failed Publish is one more lost event: the store may still be
		// coming back.
		_ = st.Publish(t.Context(), e)
		for wait := true; wait; {
			select {
			case got, ok := <-ch:
				require.True(t, ok, "subscription closed while awaiting %+v", e)
				if got == e {
					return
				}
			case <-tick.C:
				wait = false
			case <-deadline:
				t.Fatalf("event %+v not delivered within %v", e, within)
			}
		}
	}
}

func putFarm(t *testing.T, st store.Store, id string, slots int) {
	t.Helper()
	require.NoError(t, st.PutFarm(t.Context(), store.Farm{ID: id, Slots: slots}))
}

func reserve(t *testing.T, st store.Store, farm string, s store.Slot) {
	t.Helper()
	require.NoError(t, st.Reserve(t.Context(), farm, s))
}

func farmByID(t *testing.T, st store.Store, id string) store.Farm {
	t.Helper()
	farms, err := st.Farms(t.Context())
	require.NoError(t, err)
	for _, f := range farms {
		if f.ID == id {
			return f
		}
	}
	t.Fatalf("farm %q not in Farms", id)
	return store.Farm{}
}

func slotByID(t *testing.T, st store.Store, farm, id string) store.Slot {
	t.Helper()
	slots, err := st.Slots(t.Context(), farm)
	require.NoError(t, err)
	for _, s := range slots {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("slot %q not in Slots(%q)", id, farm)
	return store.Slot{}
}

func capacity(t *testing.T, st store.Store) store.Capacity {
	t.Helper()
	c, err := st.Capacity(t.Context())
	require.NoError(t, err)
	return c
}

// parallel runs fn(0..n-1) on n goroutines released together and returns
// their errors by index.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// waitExpired writes a manager record with ttl and polls until it expired.
// A store expires everything by one clock, so records written before it
// with the same ttl have expired too; polling them instead would extend
// them (ClaimSession is the only read of a session).
func waitExpired(t *testing.T, st store.Store, ttl time.Duration) {
	t.Helper()
	id := fmt.Sprintf("clock-%d", time.Now().UnixNano())
	require.NoError(t, st.Alive(t.Context(), id, ttl))
	require.Eventually(t, func() bool {
		alive, err := st.ManagerAlive(t.Context(), id)
		return err == nil && !alive
	}, within, 10*time.Millisecond)
}

func recv(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		require.True(t, ok, "subscription closed")
		return e
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return store.Event{}
	}
}

// waitClosed drains ch until it is closed.
func waitClosed(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("subscription not closed within %v", within)
		}
	}
}

func testPutFarm(t *testing.T, st store.Store) {
	ctx := t.Context()
	before := time.Now()
	require.NoError(t, st.PutFarm(ctx, store.Farm{ID: "f1", Spec: []byte(`{"addr":"10.0.0.1:7000"}`),
		Owner: "m1", Slots: 3, Used: 9, Busy: 9, Seen: time.Unix(1, 0)}))
	require.NoError(t, st.PutFarm(ctx, store.Farm{ID: "f2", Slots: 1, Draining: true}))

	f := farmByID(t, st, "f1")
	require.JSONEq(t, `{"addr":"10.0.0.1:7000"}`, string(f.Spec))
	require.Equal(t, "m1", f.Owner)
	require.Equal(t, 3, f.Slots)
	require.False(t, f.Draining)
	require.Zero(t, f.Used, "Used is the store's count, not the caller's")
	require.Zero(t, f.Busy)
	require.WithinDuration(t, before, f.Seen, clockSlack, "Seen is now")

	f = farmByID(t, st, "f2")
	require.Empty(t, f.Spec)
	require.Empty(t, f.Owner)
	require.True(t, f.Draining)
}

func testPutFarmReplace(t *testing.T, st store.Store) {
	ctx := t.Context()
	putFarm(t, st, "f", 2)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotBound, Session: "s1"})
	reserve(t, st, "f", store.Slot{ID: "b", Owner: "m1", State: store.SlotStarting})
	require.Equal(t, store.Capacity{Slots: 2, Used: 2, Busy: 1}, capacity(t, st))

	require.NoError(t, st.PutFarm(ctx, store.Farm{ID: "f", Slots: 3, Owner: "m2"}))
	slots, err := st.Slots(ctx, "f")
	require.NoError(t, err)
	require.Empty(t, slots, "a farm that registers again has restarted")
	f := farmByID(t, st, "f")
	require.Equal(t, 3, f.Slots)
	require.Equal(t, "m2", f.Owner)
	require.Zero(t, f.Used)
	require.Zero(t, f.Busy)
	require.Equal(t, store.Capacity{Slots: 3}, capacity(t, st))
	for _, id := range []string{"a", "b", "c"} {
		reserve(t, st, "f", store.Slot{ID: id, Owner: "m1", State: store.SlotStarting})
	}
}

func testFarmsOrdered(t *testing.T, st store.Store) {
	farms, err := st.Farms(t.Context())
	require.NoError(t, err)
	require.Empty(t, farms)
	for _, id := range []string{"c", "a", "d", "b"} {
		putFarm(t, st, id, 1)
	}
	farms, err = st.Farms(t.Context())
	require.NoError(t, err)
	var ids []string
	for _, f := range farms {
		ids = append(ids, f.ID)
	}
	require.Equal(t, []string{"a", "b", "c", "d"}, ids)
}

func testTouchFarm(t *testing.T, st store.Store) {
	ctx := t.Context()
	_, err := st.TouchFarm(ctx, "nope", false)
	require.ErrorIs(t, err, store.ErrNotFound)

	putFarm(t, st, "f", 2)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotBound, Session: "s1"})
	seen := farmByID(t, st, "f").Seen
	require.Eventually(t, func() bool {
		f, err := st.TouchFarm(ctx, "f", false)
		return err == nil && f.Seen.After(seen)
	}, within, time.Millisecond, "TouchFarm moves Seen to now")

	f, err := st.TouchFarm(ctx, "f", false)
	require.NoError(t, err)
	require.Equal(t, "f", f.ID)
	require.Equal(t, 2, f.Slots)
	require.Equal(t, 1, f.Used)
	require.Equal(t, 1, f.Busy)
	require.False(t, f.Draining)
	require.Equal(t, f.Seen, farmByID(t, st, "f").Seen, "TouchFarm returns the record as stored")

	f, err = st.TouchFarm(ctx, "f", true)
	require.NoError(t, err)
	require.True(t, f.Draining)
	f, err = st.TouchFarm(ctx, "f", false)
	require.NoError(t, err)
	require.True(t, f.Draining, "TouchFarm never clears draining")
	require.True(t, farmByID(t, st, "f").Draining)
}

func testDrainFarm(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.ErrorIs(t, st.DrainFarm(ctx, "nope"), store.ErrNotFound)

	putFarm(t, st, "f", 3)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotStarting})
	require.NoError(t, st.DrainFarm(ctx, "f"))
	require.NoError(t, st.DrainFarm(ctx, "f"))
	require.True(t, farmByID(t, st, "f").Draining)
	require.ErrorIs(t, st.Reserve(ctx, "f", store.Slot{ID: "b", Owner: "m1", State: store.SlotStarting}), store.ErrDraining)
	// Draining takes no new slots; those it has go on.
	require.NoError(t, st.UpdateSlot(ctx, "f", store.Slot{ID: "a", Owner: "m1", Instance: "i", State: store.SlotIdle}, store.SlotStarting))
	require.Len(t, mustSlots(t, st, "f"), 1)
}

func mustSlots(t *testing.T, st store.Store, farm string) []store.Slot {
	t.Helper()
	slots, err := st.Slots(t.Context(), farm)
	require.NoError(t, err)
	return slots
}

func testRemoveFarm(t *testing.T, st store.Store) {
	ctx := t.Context()
	ok, err := st.RemoveFarm(ctx, "nope")
	require.NoError(t, err)
	require.False(t, ok)

	putFarm(t, st, "f", 2)
	putFarm(t, st, "g", 1)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotBound, Session: "s"})
	ok, err = st.RemoveFarm(ctx, "f")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = st.RemoveFarm(ctx, "f")
	require.NoError(t, err)
	require.False(t, ok)

	farms, err := st.Farms(ctx)
	require.NoError(t, err)
	require.Len(t, farms, 1)
	require.Equal(t, "g", farms[0].ID)
	require.Equal(t, store.Capacity{Slots: 1}, capacity(t, st))
	_, err = st.Slots(ctx, "f")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, st.Reserve(ctx, "f", store.Slot{ID: "b", Owner: "m1"}), store.ErrNotFound)
	require.ErrorIs(t, st.UpdateSlot(ctx, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotIdle}, store.SlotBound), store.ErrNotFound)
	require.NoError(t, st.FreeSlot(ctx, "f", "a"))

	putFarm(t, st, "f", 2)
	require.Empty(t, mustSlots(t, st, "f"), "slots do not come back with the farm")
}

func testRemoveFarmConcurrent(t *testing.T, st store.Store) {
	putFarm(t, st, "f", 1)
	var removed atomic.Int32
	errs := parallel(20, func(int) error {
		ok, err := st.RemoveFarm(t.Context(), "f")
		if ok {
			removed.Add(1)
		}
		return err
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, removed.Load(), "exactly one remover learns it removed the farm")
}

func testReserve(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.ErrorIs(t, st.Reserve(ctx, "nope", store.Slot{ID: "a", Owner: "m1"}), store.ErrNotFound)

	putFarm(t, st, "f", 2)
	before := time.Now()
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", Pool: "p", State: store.SlotStarting,
		Session: "s1", Since: time.Unix(1, 0)})
	reserve(t, st, "f", store.Slot{ID: "b", Owner: "m2", Pool: "p", State: store.SlotStarting})
	require.ErrorIs(t, st.Reserve(ctx, "f", store.Slot{ID: "c", Owner: "m1", State: store.SlotStarting}), store.ErrFull)

	a := slotByID(t, st, "f", "a")
	require.WithinDuration(t, before, a.Since, clockSlack, "Reserve sets Since to now")
	a.Since = time.Time{}
	require.Equal(t, store.Slot{ID: "a", Owner: "m1", Pool: "p", State: store.SlotStarting, Session: "s1"}, a)

	require.NoError(t, st.FreeSlot(ctx, "f", "a"))
	reserve(t, st, "f", store.Slot{ID: "c", Owner: "m1", State: store.SlotStarting})
	require.ErrorIs(t, st.Reserve(ctx, "f", store.Slot{ID: "d", Owner: "m1", State: store.SlotStarting}), store.ErrFull)
}

// testReserveSameID: reserving a slot id again is a retry when the owner
// is the same (it succeeds and changes nothing), a conflict otherwise.
func testReserveSameID(t *testing.T, st store.Store) {
	ctx := t.Context()
	putFarm(t, st, "f", 1)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotStarting, Instance: "i1"})
	first := slotByID(t, st, "f", "a")

	require.NoError(t, st.Reserve(ctx, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotBound, Session: "s"}),
		"a full farm still accepts the owner's retry")
	require.Equal(t, first, slotByID(t, st, "f", "a"), "the retry changes nothing")
	require.ErrorIs(t, st.Reserve(ctx, "f", store.Slot{ID: "a", Owner: "m2", State: store.SlotStarting}), store.ErrConflict)
	require.Equal(t, store.Capacity{Slots: 1, Used: 1}, capacity(t, st))
}

func testReserveConcurrent(t *testing.T, st store.Store) {
	putFarm(t, st, "f", 7)
	errs := parallel(50, func(i int) error {
		return st.Reserve(t.Context(), "f", store.Slot{ID: "s" + strconv.Itoa(i), Owner: "m", State: store.SlotStarting})
	})
	var ok, full int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrFull):
			full++
		default:
			t.Fatalf("Reserve: %v", err)
		}
	}
	require.Equal(t, 7, ok)
	require.Equal(t, 43, full)
	require.Len(t, mustSlots(t, st, "f"), 7)
	require.Equal(t, 7, farmByID(t, st, "f").Used)
}

func testUpdateSlot(t *testing.T, st store.Store) {
	ctx := t.Context()
	idle := store.Slot{ID: "a", Owner: "m1", Instance: "i1", State: store.SlotIdle}
	require.ErrorIs(t, st.UpdateSlot(ctx, "nope", idle, store.SlotStarting), store.ErrNotFound)
	putFarm(t, st, "f", 2)
	require.ErrorIs(t, st.UpdateSlot(ctx, "f", idle, store.SlotStarting), store.ErrNotFound)

	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", Pool: "p", State: store.SlotStarting, Session: "s1"})
	since := slotByID(t, st, "f", "a").Since

	other := idle
	other.Owner = "m2"
	require.ErrorIs(t, st.UpdateSlot(ctx, "f", other, store.SlotStarting), store.ErrConflict, "another owner")
	require.ErrorIs(t, st.UpdateSlot(ctx, "f", idle, store.SlotIdle), store.ErrConflict, "another state")
	require.Equal(t, store.SlotStarting, slotByID(t, st, "f", "a").State, "a lost compare-and-set changes nothing")

	// Instance, State and Session are replaced (Session cleared); Pool and
	// Since stay.
	withPool := idle
	withPool.Pool = "other"
	require.NoError(t, st.UpdateSlot(ctx, "f", withPool, store.SlotStarting))
	require.Equal(t, store.Slot{ID: "a", Owner: "m1", Pool: "p", Instance: "i1", State: store.SlotIdle, Since: since},
		slotByID(t, st, "f", "a"))

	bound := store.Slot{ID: "a", Owner: "m1", Instance: "i1", State: store.SlotBound, Session: "s2"}
	require.NoError(t, st.UpdateSlot(ctx, "f", bound, store.SlotIdle))
	got := slotByID(t, st, "f", "a")
	require.Equal(t, store.SlotBound, got.State)
	require.Equal(t, "s2", got.Session)
	require.Equal(t, 1, farmByID(t, st, "f").Busy)
}

func testUpdateSlotConcurrent(t *testing.T, st store.Store) {
	ctx := t.Context()
	putFarm(t, st, "f", 1)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m", State: store.SlotStarting})
	require.NoError(t, st.UpdateSlot(ctx, "f", store.Slot{ID: "a", Owner: "m", Instance: "i", State: store.SlotIdle}, store.SlotStarting))

	errs := parallel(20, func(i int) error {
		return st.UpdateSlot(ctx, "f", store.Slot{ID: "a", Owner: "m", Instance: "i", State: store.SlotBound,
			Session: "s" + strconv.Itoa(i)}, store.SlotIdle)
	})
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "binders %d and %d both won", winner, i)
			winner = i
			continue
		}
		require.ErrorIs(t, err, store.ErrConflict)
	}
	require.NotEqual(t, -1, winner, "no binder won")
	got := slotByID(t, st, "f", "a")
	require.Equal(t, store.SlotBound, got.State)
	require.Equal(t, "s"+strconv.Itoa(winner), got.Session)
}

func testFreeSlot(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.NoError(t, st.FreeSlot(ctx, "nope", "a"))
	putFarm(t, st, "f", 2)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotBound, Session: "s"})
	reserve(t, st, "f", store.Slot{ID: "b", Owner: "m1", State: store.SlotStarting})
	require.NoError(t, st.FreeSlot(ctx, "f", "a"))
	require.NoError(t, st.FreeSlot(ctx, "f", "a"), "freeing a freed slot is no error")
	require.NoError(t, st.FreeSlot(ctx, "f", "zzz"))
	slots := mustSlots(t, st, "f")
	require.Len(t, slots, 1)
	require.Equal(t, "b", slots[0].ID)
	require.Equal(t, store.Capacity{Slots: 2, Used: 1}, capacity(t, st))
}

func testSlots(t *testing.T, st store.Store) {
	_, err := st.Slots(t.Context(), "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
	putFarm(t, st, "f", 5)
	require.Empty(t, mustSlots(t, st, "f"))
	for _, id := range []string{"c", "a", "e", "b"} {
		reserve(t, st, "f", store.Slot{ID: id, Owner: "m1", State: store.SlotStarting})
	}
	var ids []string
	for _, s := range mustSlots(t, st, "f") {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{"a", "b", "c", "e"}, ids)
}

// testCapacity covers the sums and Busy: bound, or starting with a
// session; neither idle nor starting to refill the pool.
func testCapacity(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.Equal(t, store.Capacity{}, capacity(t, st))

	putFarm(t, st, "f1", 3)
	putFarm(t, st, "f2", 5)
	putFarm(t, st, "f3", 4)
	reserve(t, st, "f1", store.Slot{ID: "warm", Owner: "m1", State: store.SlotStarting})
	reserve(t, st, "f1", store.Slot{ID: "wait", Owner: "m1", State: store.SlotStarting, Session: "s1"})
	reserve(t, st, "f2", store.Slot{ID: "bound", Owner: "m1", Instance: "i1", State: store.SlotBound, Session: "s2"})
	reserve(t, st, "f2", store.Slot{ID: "idle", Owner: "m1", Instance: "i2", State: store.SlotIdle})
	reserve(t, st, "f3", store.Slot{ID: "x", Owner: "m1", State: store.SlotBound, Session: "s3"})
	require.Equal(t, store.Capacity{Slots: 12, Used: 5, Busy: 3}, capacity(t, st))

	require.NoError(t, st.DrainFarm(ctx, "f3"))
	require.Equal(t, store.Capacity{Slots: 8, Used: 4, Busy: 2}, capacity(t, st), "draining farms are left out")
	for _, want := range []struct {
		id         string
		used, busy int
	}{{"f1", 2, 1}, {"f2", 2, 1}, {"f3", 1, 1}} {
		f := farmByID(t, st, want.id)
		require.Equal(t, want.used, f.Used, want.id)
		require.Equal(t, want.busy, f.Busy, want.id)
	}

	update := func(farm string, s store.Slot, from store.SlotState) {
		t.Helper()
		s.Owner = "m1"
		require.NoError(t, st.UpdateSlot(ctx, farm, s, from))
	}
	update("f1", store.Slot{ID: "wait", Instance: "i3", State: store.SlotBound, Session: "s1"}, store.SlotStarting)
	update("f1", store.Slot{ID: "warm", Instance: "i4", State: store.SlotIdle}, store.SlotStarting)
	require.Equal(t, store.Capacity{Slots: 8, Used: 4, Busy: 2}, capacity(t, st), "starting for a session → bound; warm → idle")
	update("f2", store.Slot{ID: "bound", Instance: "i1", State: store.SlotIdle}, store.SlotBound)
	require.Equal(t, store.Capacity{Slots: 8, Used: 4, Busy: 1}, capacity(t, st), "released")
	update("f2", store.Slot{ID: "idle", Instance: "i2", State: store.SlotBound, Session: "s4"}, store.SlotIdle)
	update("f1", store.Slot{ID: "warm", Instance: "i4", State: store.SlotStarting, Session: "s5"}, store.SlotIdle)
	require.Equal(t, store.Capacity{Slots: 8, Used: 4, Busy: 3}, capacity(t, st), "bound; restarting for a session")
	require.NoError(t, st.FreeSlot(ctx, "f1", "wait"))
	require.NoError(t, st.FreeSlot(ctx, "f2", "bound"))
	require.Equal(t, store.Capacity{Slots: 8, Used: 2, Busy: 2}, capacity(t, st), "freed busy and idle")
}

func testSession() store.Session {
	return store.Session{ID: "sess1", TokenHash: "th1", Owner: "m1", Pool: "p", Farm: "f", Slot: "a",
		Instance: []byte(`{"id":"i1","addr":"10.0.0.1:7001"}`), Created: time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)}
}

// claim claims tokenHash for owner and compares the previous record with
// want, Created by instant.
func claim(t *testing.T, st store.Store, tokenHash, owner string, want store.Session) {
	t.Helper()
	got, err := st.ClaimSession(t.Context(), tokenHash, owner, time.Minute)
	require.NoError(t, err)
	require.True(t, want.Created.Equal(got.Created), "Created %v, want %v", got.Created, want.Created)
	got.Created = want.Created
	if len(want.Instance) > 0 {
		require.JSONEq(t, string(want.Instance), string(got.Instance))
		got.Instance = want.Instance
	}
	require.Equal(t, want, got)
}

func testClaimSession(t *testing.T, st store.Store) {
	ctx := t.Context()
	_, err := st.ClaimSession(ctx, "nope", "m2", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)

	putFarm(t, st, "f", 3)
	reserve(t, st, "f", store.Slot{ID: "a", Owner: "m1", Instance: "i1", State: store.SlotBound, Session: "sess1"})
	s := testSession()
	require.NoError(t, st.PutSession(ctx, s, time.Minute))

	claim(t, st, "th1", "m2", s) // returns the session as it was: Owner m1
	require.Equal(t, "m2", slotByID(t, st, "f", "a").Owner, "the slot moves with the session")
	bound := store.Slot{ID: "a", Owner: "m1", Instance: "i1", State: store.SlotIdle}
	require.ErrorIs(t, st.UpdateSlot(ctx, "f", bound, store.SlotBound), store.ErrConflict, "the old owner lost the slot")

	moved := s
	moved.Owner = "m2"
	claim(t, st, "th1", "m3", moved)
	require.Equal(t, "m3", slotByID(t, st, "f", "a").Owner)
	bound.Owner = "m3"
	require.NoError(t, st.UpdateSlot(ctx, "f", bound, store.SlotBound))

	// A slot that serves another session by now stays with its owner; a
	// session whose farm is gone is still claimed.
	reserve(t, st, "f", store.Slot{ID: "b", Owner: "m1", State: store.SlotBound, Session: "other"})
	s2 := store.Session{ID: "sess2", TokenHash: "th2", Owner: "m1", Farm: "f", Slot: "b"}
	s3 := store.Session{ID: "sess3", TokenHash: "th3", Owner: "m1", Farm: "gone", Slot: "a"}
	require.NoError(t, st.PutSession(ctx, s2, time.Minute))
	require.NoError(t, st.PutSession(ctx, s3, time.Minute))
	claim(t, st, "th2", "m2", s2)
	require.Equal(t, "m1", slotByID(t, st, "f", "b").Owner)
	claim(t, st, "th3", "m2", s3)

	// PutSession replaces a session with the same token hash.
	replaced := s
	replaced.Owner, replaced.Pool = "m9", "q"
	require.NoError(t, st.PutSession(ctx, replaced, time.Minute))
	claim(t, st, "th1", "m1", replaced)
}

func testDeleteSession(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.NoError(t, st.DeleteSession(ctx, "nope", "m1"))
	s := testSession()
	require.NoError(t, st.PutSession(ctx, s, time.Minute))

	require.NoError(t, st.DeleteSession(ctx, "th1", "m2"), "not the owner: no error, no delete")
	claim(t, st, "th1", "m2", s)
	moved := s
	moved.Owner = "m2"
	require.NoError(t, st.DeleteSession(ctx, "th1", "m1"), "the session was claimed from m1")
	claim(t, st, "th1", "m2", moved)

	require.NoError(t, st.DeleteSession(ctx, "th1", "m2"))
	_, err := st.ClaimSession(ctx, "th1", "m2", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testTouchSessions(t *testing.T, st store.Store) {
	ctx := t.Context()
	put := func(th, owner string) {
		require.NoError(t, st.PutSession(ctx, store.Session{ID: "id-" + th, TokenHash: th, Owner: owner}, shortTTL))
	}
	put("mine", "m1")
	put("theirs", "m2")
	put("untouched", "m1")
	require.NoError(t, st.TouchSessions(ctx, "m1", nil, time.Minute))
	require.NoError(t, st.TouchSessions(ctx, "m1", []string{"mine", "theirs", "missing"}, time.Minute))
	waitExpired(t, st, shortTTL)

	_, err := st.ClaimSession(ctx, "mine", "m1", time.Minute)
	require.NoError(t, err, "the owner's session was extended")
	_, err = st.ClaimSession(ctx, "theirs", "m1", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound, "another owner's session was left alone")
	_, err = st.ClaimSession(ctx, "untouched", "m1", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testSessionExpiry(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.NoError(t, st.PutSession(ctx, store.Session{ID: "a", TokenHash: "a", Owner: "m1"}, shortTTL))
	require.NoError(t, st.PutSession(ctx, store.Session{ID: "b", TokenHash: "b", Owner: "m1"}, shortTTL))
	_, err := st.ClaimSession(ctx, "b", "m2", time.Minute) // extends b
	require.NoError(t, err)
	waitExpired(t, st, shortTTL)

	_, err = st.ClaimSession(ctx, "a", "m2", time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, st.DeleteSession(ctx, "a", "m1"))
	_, err = st.ClaimSession(ctx, "b", "m3", time.Minute)
	require.NoError(t, err, "ClaimSession extended the ttl")
}

func testAlive(t *testing.T, st store.Store) {
	ctx := t.Context()
	alive := func(id string) bool {
		t.Helper()
		ok, err := st.ManagerAlive(ctx, id)
		require.NoError(t, err)
		return ok
	}
	require.False(t, alive("nope"))
	require.NoError(t, st.Alive(ctx, "long", time.Minute))
	start := time.Now()
	require.NoError(t, st.Alive(ctx, "short", shortTTL))
	require.True(t, alive("short"))
	require.Eventually(t, func() bool { return !alive("short") }, within, 10*time.Millisecond)
	// The store's clock may round to milliseconds.
	require.GreaterOrEqual(t, time.Since(start), shortTTL-20*time.Millisecond, "expired before its ttl")
	require.True(t, alive("long"))
	require.NoError(t, st.Alive(ctx, "short", time.Minute))
	require.True(t, alive("short"), "Alive again after expiry")
	require.NoError(t, st.Gone(ctx, "short"))
	require.False(t, alive("short"), "gone at once")
	require.True(t, alive("long"), "Gone forgets only its manager")
	require.NoError(t, st.Gone(ctx, "nope"), "forgetting an unknown manager is no error")
}

// testNonPositiveTTL: a ttl must be positive; zero would mean "expired"
// to one store and "forever" to another.
func testNonPositiveTTL(t *testing.T, st store.Store) {
	ctx := t.Context()
	require.Error(t, st.PutSession(ctx, testSession(), 0))
	require.Error(t, st.Alive(ctx, "m", -time.Second))
	require.NoError(t, st.PutSession(ctx, testSession(), time.Minute))
	require.Error(t, st.TouchSessions(ctx, "m1", []string{"th1"}, 0))
	_, err := st.ClaimSession(ctx, "th1", "m2", 0)
	require.Error(t, err)
	claim(t, st, "th1", "m2", testSession()) // unchanged by the failed calls
}

func testPublishSubscribe(t *testing.T, st store.Store) {
	ctx := t.Context()
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	ch1, err := st.Subscribe(ctx1)
	require.NoError(t, err)
	ch2, err := st.Subscribe(ctx)
	require.NoError(t, err)

	events := []store.Event{
		{Type: store.EventFarmAdded, Farm: "f", Manager: "m1"},
		{Type: store.EventSessionMoved, Session: "s", Manager: "m2", From: "m1"},
		{Type: store.EventSlotFreed, Farm: "f", Manager: "m1"},
	}
	for _, e := range events {
		require.NoError(t, st.Publish(ctx, e))
	}
	for _, e := range events {
		require.Equal(t, e, recv(t, ch1))
		require.Equal(t, e, recv(t, ch2))
	}

	cancel1()
	waitClosed(t, ch1)
	e := store.Event{Type: store.EventFarmRemoved, Farm: "f", Manager: "m2"}
	require.NoError(t, st.Publish(ctx, e))
	require.Equal(t, e, recv(t, ch2), "the other subscription goes on")
}

// testSlowSubscriber: publishing never waits for a subscriber that does not
// read; that subscriber loses events but keeps its subscription.
func testSlowSubscriber(t *testing.T, st store.Store) {
	ctx := t.Context()
	slow, err := st.Subscribe(ctx)
	require.NoError(t, err)
	for i := range 2000 {
		require.NoError(t, st.Publish(ctx, store.Event{Type: store.EventSlotFreed, Farm: strconv.Itoa(i)}))
	}
	AwaitEvent(t, st, slow, store.Event{Type: store.EventFarmAdded, Farm: "after"})
}

func testCanceledContext(t *testing.T, st store.Store) {
	putFarm(t, st, "f", 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(err error) {
		t.Helper()
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, store.ErrUnavailable, "the caller gave up; the store is fine")
	}
	check(st.Reserve(ctx, "f", store.Slot{ID: "a", Owner: "m1", State: store.SlotStarting}))
	check(st.PutFarm(ctx, store.Farm{ID: "g", Slots: 1}))
	check(st.Ping(ctx))
	_, err := st.Subscribe(ctx)
	check(err)
	require.Equal(t, store.Capacity{Slots: 1}, capacity(t, st), "nothing was written")
}

func testClose(t *testing.T, st store.Store) {
	ctx := t.Context()
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	waitClosed(t, ch)
	require.NoError(t, st.Close(), "Close again")
	require.ErrorIs(t, st.Ping(ctx), store.ErrUnavailable)
	require.ErrorIs(t, st.PutFarm(ctx, store.Farm{ID: "f", Slots: 1}), store.ErrUnavailable)
	_, err = st.Subscribe(ctx)
	require.ErrorIs(t, err, store.ErrUnavailable)
}
