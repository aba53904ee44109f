package placement

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// TestHoldersFarmsQueueAndLostFarm drives placement without a manager:
// farms register over the farm API, holders take their slots, a holder
// waits in the queue for a slot another releases, a pool nobody serves
// fails fast, and a farm that goes silent is declared dead and its
// holder told.
func TestHoldersFarmsQueueAndLostFarm(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}, {Name: "orphan"}}})
	a := newHTTPFarm(t, "a", 1, "p")
	b := newHTTPFarm(t, "b", 1, "p")
	a.register(t, tp.Placer)
	b.register(t, tp.Placer)

	// The registry on its own: which farms are live, with what free.
	farms := tp.Farms()
	require.Len(t, farms, 2)
	for _, f := range farms {
		require.True(t, f.Live && f.Remote, "%+v", f)
		require.Equal(t, 1, f.Free)
		require.Equal(t, 2, f.JobSlots)
		require.Equal(t, []string{"p"}, f.Pools)
	}

	// Equal farms: the lower id first.
	h1 := newHolder("h1", "p")
	i1 := tp.acquire(t, h1, false)
	require.Equal(t, "a", i1.Farm())
	h2 := newHolder("h2", "p")
	i2 := tp.acquire(t, h2, false)
	require.Equal(t, "b", i2.Farm())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tp.Acquire(ctx, &newHolder("h3", "p").Holder, false, nil)
	require.ErrorIs(t, err, ErrNoCapacity)

	// A holder that waits is queued, and gets the slot the first one frees.
	h4 := newHolder("h4", "p")
	positions := make(chan int, 4)
	got := make(chan *Instance, 1)
	go func() {
		inst, err := tp.Acquire(ctx, &h4.Holder, true, func(pos int) { positions <- pos })
		if err != nil {
			t.Errorf("queued holder: %v", err)
		}
		got <- inst
	}()
	require.Equal(t, 1, <-positions)
	snap := tp.Snapshot()
	require.Equal(t, []WaiterInfo{{Holder: "h4", Pool: "p", Position: 1, Since: snap.Queue[0].Since}}, snap.Queue)
	tp.Release(i1, true) // a kill pool: stopped, and its slot freed
	i4 := <-got
	require.NotNil(t, i4)
	require.Equal(t, "a", i4.Farm())
	require.NotEqual(t, i1.ID(), i4.ID())

	// Pools: unknown, and known but served by no farm.
	_, err = tp.Acquire(ctx, &newHolder("h5", "nope").Holder, true, nil)
	require.ErrorIs(t, err, ErrUnknownPool)
	_, err = tp.Acquire(ctx, &newHolder("h6", "orphan").Holder, true, nil)
	require.ErrorIs(t, err, ErrNoFarm)
	require.EqualError(t, err, `no farm serves pool "orphan"`)

	// b goes silent; a keeps sending heartbeats. b is dead after three
	// missed intervals, not before, and its holder is told.
	deadSteps := 0
	for i := 1; ; i++ {
		if i%10 == 0 {
			a.heartbeat(t, tp.Placer)
		}
		tp.step()
		if _, ok := tp.farm("b"); !ok {
			deadSteps = i
			break
		}
		require.Less(t, i, 100, "b never declared dead")
	}
	require.GreaterOrEqual(t, deadSteps, 31, "3 intervals and a tenth")
	require.ErrorContains(t, <-h2.lost, "missed 3 heartbeats")
	_, ok := tp.farm("a")
	require.True(t, ok)
	select {
	case err := <-h4.lost:
		t.Fatalf("the holder on the live farm was told %v", err)
	default:
	}
	for _, in := range tp.Snapshot().Instances {
		require.Equal(t, "a", in.Farm)
	}
}

// TestUnreachableFarmIsSuspect: a farm whose start gets no answer is
// suspect at once: the holder is placed on another farm, and no holder is
// sent to it until it answers again.
func TestUnreachableFarmIsSuspect(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}, HeartbeatInterval: time.Hour})
	a := newHTTPFarm(t, "a", 2, "p")
	a.priority = 1 // filled first
	b := newHTTPFarm(t, "b", 1, "p")
	a.register(t, tp.Placer)
	b.register(t, tp.Placer)

	a.set(func(f *httpFarm) { f.hangup = true }) // killed: connections break
	i1 := tp.acquire(t, newHolder("h1", "p"), false)
	require.Equal(t, "b", i1.Farm(), "retried on the other farm")
	require.Equal(t, 1, a.startCount())
	fa, _ := tp.farm("a")
	require.True(t, fa.Suspect)
	require.False(t, fa.Live)

	// No placement on a suspect farm: b is full, and the holder is told so
	// without a start on a.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tp.Acquire(ctx, &newHolder("h2", "p").Holder, false, nil)
	require.ErrorIs(t, err, ErrNoCapacity)
	require.Equal(t, 1, a.startCount())

	// Its heartbeat clears it.
	a.set(func(f *httpFarm) { f.hangup = false })
	a.heartbeat(t, tp.Placer)
	fa, _ = tp.farm("a")
	require.False(t, fa.Suspect)
	require.Equal(t, "a", tp.acquire(t, newHolder("h3", "p"), false).Farm())
}

// TestSuspectFarmIsProbed: a suspect farm that answers a probe takes
// placements again without waiting for its heartbeat.
func TestSuspectFarmIsProbed(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}, HeartbeatInterval: 20 * time.Millisecond})
	a := newHTTPFarm(t, "a", 1, "p")
	a.register(t, tp.Placer)
	a.set(func(f *httpFarm) { f.hangup = true })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tp.Acquire(ctx, &newHolder("h1", "p").Holder, false, nil)
	require.ErrorIs(t, err, ErrNoCapacity, "the only farm is suspect: nothing free, no error of the farm's")
	fa, _ := tp.farm("a")
	require.True(t, fa.Suspect)
	a.set(func(f *httpFarm) { f.hangup = false })
	eventually(t, "the probe to clear the farm", func() bool {
		fa, _ := tp.farm("a")
		return !fa.Suspect
	})
	require.Equal(t, "a", tp.acquire(t, newHolder("h2", "p"), false).Farm())
}

// TestNoSlotIsANormalOutcome: a farm that answers a start with "no free
// slot" (it still runs instances the books do not count) is a farm to
// skip, not an error: the holder goes elsewhere, or is told there is no
// capacity, and the farm gets no start until its heartbeat says it has a
// free slot.
func TestNoSlotIsANormalOutcome(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}})
	a := newHTTPFarm(t, "a", 2, "p")
	a.priority = 1
	b := newHTTPFarm(t, "b", 1, "p")
	a.register(t, tp.Placer)
	b.register(t, tp.Placer)
	a.set(func(f *httpFarm) { f.full = true })

	require.Equal(t, "b", tp.acquire(t, newHolder("h1", "p"), false).Farm())
	require.Equal(t, 1, a.startCount())
	fa, _ := tp.farm("a")
	require.False(t, fa.Live, "found full")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tp.Acquire(ctx, &newHolder("h2", "p").Holder, false, nil)
	require.ErrorIs(t, err, ErrNoCapacity)
	require.NotErrorIs(t, err, ErrSpawnFailed)
	require.Equal(t, 1, a.startCount())

	a.set(func(f *httpFarm) { f.full = false })
	a.heartbeat(t, tp.Placer)
	require.Equal(t, "a", tp.acquire(t, newHolder("h3", "p"), false).Farm())
}

// TestFullFarmWhileSlotsFree: a farm answers "no free slot" while other
// managers keep freeing slots on it in the books (as when a farm dies and
// its clients open new sessions on the others while instances exit
// everywhere). Each freed slot clears the farm's full mark, so every round
// of the placement picks it again: the holder waits between those rounds
// (seconds in all, in which the farm's instances exit), and when the farm
// stays full it is told there is no capacity, not that drover failed
// (found by the chaos run: sessions closed with 1011 internal error, every
// round spent within 150 ms, after a farm was killed).
func TestFullFarmWhileSlotsFree(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}})
	a := newHTTPFarm(t, "a", 4, "p")
	a.register(t, tp.Placer)
	a.set(func(f *httpFarm) { f.full = true })
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				tp.HandleEvent(store.Event{Type: store.EventSlotFreed, Farm: "a", Manager: "m2"})
			}
		}
	}()
	defer func() { close(stop); <-stopped }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	_, err := tp.Acquire(ctx, &newHolder("h1", "p").Holder, true, nil)
	took := time.Since(began)
	require.ErrorIs(t, err, ErrNoCapacity)
	require.NotErrorIs(t, err, ErrSpawnFailed)
	require.Greater(t, took, 2*time.Second, "the rounds on the full farm were not spread out")

	a.set(func(f *httpFarm) { f.full = false }) // its instances exited
	require.Equal(t, "a", tp.acquire(t, newHolder("h2", "p"), true).Farm())
}

// TestRegisterAgainStopsGivenUpInstances: a farm declared dead that
// registers again is told which of the instances it still runs nobody
// holds, so that it stops them at once. A farm this manager did not see
// die is told nothing, unless the manager is its only one and its store is
// private: then the manager restarted, and what the store has no record
// of was its own.
func TestRegisterAgainStopsGivenUpInstances(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}})
	a := newHTTPFarm(t, "a", 2, "p")
	require.Empty(t, a.register(t, tp.Placer).Stop)
	h := newHolder("h", "p")
	inst := tp.acquire(t, h, false)

	for i := 0; ; i++ {
		tp.step()
		if _, ok := tp.farm("a"); !ok {
			break
		}
		require.Less(t, i, 100, "a never declared dead")
	}
	require.Error(t, <-h.lost)

	// It was frozen, not gone: it comes back with the instance still running.
	resp := a.register(t, tp.Placer)
	require.Equal(t, []string{inst.ID()}, resp.Stop)
	require.EqualValues(t, 1000, resp.HeartbeatIntervalMS)

	// Registering again while on the books: nothing to stop.
	require.Empty(t, a.register(t, tp.Placer).Stop)
	// A farm never seen before lists what it runs: this manager cannot tell
	// whose they are, and leaves them to the farm's orphan sweep.
	b := newHTTPFarm(t, "b", 2, "p")
	b.set(func(f *httpFarm) { f.running["b-old"] = farmapi.Instance{ID: "b-old", Pool: "p"} })
	require.Empty(t, b.register(t, tp.Placer).Stop)
	b.managers = 2
	require.Empty(t, b.register(t, tp.Placer).Stop, "another manager may hold it")

	// Its only manager, with a private store (the test store is a Memory):
	// what the store has no record of was placed before a restart. A slot
	// another manager sharing the store reserved is held.
	c := newHTTPFarm(t, "c", 3, "p")
	c.managers = 1
	c.set(func(f *httpFarm) {
		f.running["c-old"] = farmapi.Instance{ID: "c-old", Pool: "p"}
		f.running["c-live"] = farmapi.Instance{ID: "c-live", Pool: "p"}
	})
	ctx := context.Background()
	require.NoError(t, tp.cfg.Store.PutFarm(ctx, store.Farm{ID: "c", Slots: 3}))
	require.NoError(t, tp.cfg.Store.Reserve(ctx, "c", store.Slot{ID: "s1", Owner: "m2", Pool: "p",
		Instance: "c-live", State: store.SlotBound, Session: "s"}))
	require.Equal(t, []string{"c-old"}, c.register(t, tp.Placer).Stop)
	// Registering again while on the books: its instances are this
	// manager's to judge as they come and go, not at registration.
	require.Empty(t, c.register(t, tp.Placer).Stop)
}

// TestStallGivesFarmsAFreshDeadline: a manager that did not run for a
// while (SIGSTOP, a paused VM) does not count its own stall against the
// farms: on waking, every farm gets a fresh deadline. A heartbeat that
// reached another manager counts here too.
func TestStallGivesFarmsAFreshDeadline(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}})
	a := newHTTPFarm(t, "a", 1, "p")
	b := newHTTPFarm(t, "b", 1, "p")
	a.register(t, tp.Placer)
	b.register(t, tp.Placer)
	hb := newHolder("on-b", "p")
	tp.acquire(t, newHolder("on-a", "p"), false)
	require.Equal(t, "b", tp.acquire(t, hb, false).Farm())
	for i := range 40 {
		if i%10 == 0 {
			a.heartbeat(t, tp.Placer)
			b.heartbeat(t, tp.Placer)
		}
		tp.step()
	}
	// The manager stalls for 5 s: when it wakes it has heard from no farm
	// for longer than three intervals.
	tp.clock.advance(5 * time.Second)
	tp.syncFarms()
	require.Len(t, tp.Farms(), 2, "no farm is dead for the manager's own silence")

	// a keeps sending heartbeats, to another manager: only the store hears
	// them. b stays silent, and is dead three intervals after the wake-up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; ; i++ {
		if i%10 == 0 {
			_, err := tp.store.TouchFarm(ctx, "a", false)
			require.NoError(t, err)
		}
		tp.step()
		if _, ok := tp.farm("b"); !ok {
			require.GreaterOrEqual(t, i, 31, "not before 3.1 s after the wake-up")
			break
		}
		require.Less(t, i, 40, "b never declared dead")
	}
	require.Error(t, <-hb.lost)
	_, ok := tp.farm("a")
	require.True(t, ok, "a heartbeat through another manager counts here")
}

// TestWarmInstancesServeAndMakeRoom: a warm instance is handed to the next
// holder that asks for no start options (a viewer without a model), and a
// holder that can use none of the idle instances holding every slot does
// not wait behind them: one is stopped to make room, even for a holder
// that would not wait.
func TestWarmInstancesServeAndMakeRoom(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "s", Warm: 2}}})
	f := newLocalFarm("f", 2, "s")
	tp.AddFarm(f)
	eventually(t, "two warm instances", func() bool { return tp.Snapshot().Pools[0].Idle == 2 })

	noQueue := func(pos int) { t.Errorf("told queue position %d", pos) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v1 := newHolder("v1", "s")
	i1, err := tp.Acquire(ctx, &v1.Holder, false, noQueue)
	require.NoError(t, err)
	require.Len(t, f.startedWith(), 2, "a warm instance, no start")
	require.Equal(t, []farmapi.StartOptions{{Warm: true}, {Warm: true}}, f.startedWith(), "the farm is told the starts are warm")

	v2 := newHolder("v2", "s")
	v2.Start = farmapi.StartOptions{Model: "gear"}
	i2, err := tp.Acquire(ctx, &v2.Holder, false, noQueue)
	require.NoError(t, err)
	require.NotEqual(t, i1.ID(), i2.ID())
	starts := f.startedWith()
	require.Len(t, starts, 3)
	require.Equal(t, farmapi.StartOptions{Model: "gear"}, starts[2])
	require.Len(t, f.stops(), 1, "the other warm instance made room")
	require.NotEqual(t, i1.ID(), f.stops()[0])
}

// TestWaitersCountOnStopsUnderWay: a holder no slot is free for, while an
// instance's stop is under way, waits for the slot that stop frees instead
// of stopping a warm instance of another pool.
func TestWaitersCountOnStopsUnderWay(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "w", Warm: 1}, {Name: "k"}}})
	f := newLocalFarm("f", 2, "w", "k")
	tp.AddFarm(f)
	idle := func() int { return tp.pool("w").Idle }
	eventually(t, "a warm instance", func() bool { return idle() == 1 })
	i0 := tp.acquire(t, newHolder("h0", "k"), false)

	release := f.holdStops()
	defer release()
	tp.Release(i0, false)
	eventually(t, "the stop asked for", func() bool { return slices.Contains(f.stopsAsked(), i0.ID()) })

	got := tp.acquireLater(t, newHolder("h1", "k"))
	eventually(t, "h1 queued", func() bool { return len(tp.Snapshot().Queue) == 1 })
	require.Equal(t, []string{i0.ID()}, f.stopsAsked(), "the warm instance is not stopped for h1")

	release()
	placed(t, got, "k")
	require.Equal(t, []string{i0.ID()}, f.stops())
	require.Equal(t, 1, idle(), "the warm instance is still there")
}

// TestBurstMakesRoomAtOnce: holders that arrive together on a farm whose
// slots idle instances of another pool hold have one stopped each at once,
// the later ones too while the first waits: their stops run side by side.
func TestBurstMakesRoomAtOnce(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "w", Warm: 3}, {Name: "k"}}})
	f := newLocalFarm("f", 3, "w", "k")
	tp.AddFarm(f)
	eventually(t, "three warm instances", func() bool { return tp.pool("w").Idle == 3 })
	release := f.holdStops()
	defer release()

	var got []<-chan *Instance
	for i := range 3 {
		got = append(got, tp.acquireLater(t, newHolder("h"+strconv.Itoa(i), "k")))
	}
	eventually(t, "a stop asked for each holder", func() bool { return len(f.stopsAsked()) == 3 })
	release()
	for _, g := range got {
		placed(t, g, "k")
	}
}

// TestHolderBehindAWaiterNoFarmTakes: a holder that a farm has a free slot
// for is placed at once, though an earlier holder of its pool waits for a
// farm with labels none has.
func TestHolderBehindAWaiterNoFarmTakes(t *testing.T) {
	tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "p"}}})
	tp.AddFarm(newLocalFarm("f", 2, "p"))
	waiting := make(chan error, 1)
	ctxA, cancelA := context.WithCancel(context.Background())
	go func() {
		a := newHolder("a", "p")
		a.Labels = map[string]string{"gpu": "yes"}
		_, err := tp.Acquire(ctxA, &a.Holder, true, nil)
		waiting <- err
	}()
	eventually(t, "a queued", func() bool { return len(tp.Snapshot().Queue) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	inst, err := tp.Acquire(ctx, &newHolder("b", "p").Holder, true, nil)
	require.NoError(t, err, "b waited behind a though a slot was free")
	require.Equal(t, "p", inst.Pool())

	cancelA()
	require.ErrorIs(t, <-waiting, context.Canceled)
}

// TestRefillWaitsForTheBurstToPass: while a warm pool hands out instances
// it keeps only a quarter of its warm count (plus one) at hand, and refills
// the rest once no instance was taken for RefillQuiet.
func TestRefillWaitsForTheBurstToPass(t *testing.T) {
	pool := func(tp *testPlacer) PoolInfo { return tp.Snapshot().Pools[0] }
	t.Run("burst", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "w", Warm: 8}}, RefillQuiet: time.Hour})
		f := newLocalFarm("f", 16, "w")
		tp.AddFarm(f)
		eventually(t, "eight warm instances", func() bool { return pool(tp).Idle == 8 })
		for i := range 5 {
			tp.acquire(t, newHolder("h"+strconv.Itoa(i), "w"), false)
			require.Zero(t, pool(tp).Starting, "take %d of a burst started a refill above a quarter", i+1)
		}
		require.Equal(t, 3, pool(tp).Idle)
		tp.acquire(t, newHolder("h5", "w"), false)
		eventually(t, "one refill back to a quarter plus one", func() bool { p := pool(tp); return p.Idle == 3 && p.Starting == 0 })
		require.Len(t, f.startedWith(), 9)
	})
	t.Run("quiet", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "w", Warm: 8}}, RefillQuiet: 20 * time.Millisecond})
		f := newLocalFarm("f", 16, "w")
		tp.AddFarm(f)
		eventually(t, "eight warm instances", func() bool { return pool(tp).Idle == 8 })
		for i := range 5 {
			tp.acquire(t, newHolder("h"+strconv.Itoa(i), "w"), false)
		}
		eventually(t, "the pool full again once quiet", func() bool { p := pool(tp); return p.Idle == 8 && p.Starting == 0 })
		require.Len(t, f.startedWith(), 13)
	})
}

// TestStopsWaitForTheBurstToPass: an instance released during a burst of
// takes from a kill pool waits for its stop until the takes pause, or
// maxRetire; a holder that needs its slot has it stopped at once, before
// an idle instance is.
func TestStopsWaitForTheBurstToPass(t *testing.T) {
	retired := func(tp *testPlacer, pool string) int {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return len(tp.pools[pool].retired)
	}
	pool := func(tp *testPlacer) PoolInfo {
		for _, p := range tp.Snapshot().Pools {
			if p.Name == "k" {
				return p
			}
		}
		return PoolInfo{}
	}
	t.Run("until maxRetire", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "k", Warm: 4}}, RefillQuiet: time.Hour})
		f := newLocalFarm("f", 8, "k")
		tp.AddFarm(f)
		eventually(t, "four warm instances", func() bool { return pool(tp).Idle == 4 })
		i0 := tp.acquire(t, newHolder("h0", "k"), false)
		released := time.Now()
		tp.Release(i0, true)
		require.Equal(t, 1, retired(tp, "k"), "released in a burst: the stop waits")
		eventually(t, "the stop at maxRetire", func() bool { return slices.Contains(f.stops(), i0.ID()) })
		require.GreaterOrEqual(t, time.Since(released), maxRetire)
		require.Zero(t, retired(tp, "k"))
	})
	t.Run("once quiet", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "k", Warm: 4}}, RefillQuiet: 20 * time.Millisecond})
		f := newLocalFarm("f", 8, "k")
		tp.AddFarm(f)
		eventually(t, "four warm instances", func() bool { return pool(tp).Idle == 4 })
		i0 := tp.acquire(t, newHolder("h0", "k"), false)
		i1 := tp.acquire(t, newHolder("h1", "k"), false)
		tp.Release(i0, true)
		tp.Release(i1, true)
		eventually(t, "both stopped once the takes paused", func() bool { return len(f.stops()) == 2 })
		require.ElementsMatch(t, []string{i0.ID(), i1.ID()}, f.stops())
		eventually(t, "the pool full again", func() bool { p := pool(tp); return p.Idle == 4 && p.Starting == 0 })
	})
	t.Run("no burst", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "k", Warm: 1}}, RefillQuiet: time.Nanosecond})
		f := newLocalFarm("f", 2, "k")
		tp.AddFarm(f)
		eventually(t, "a warm instance", func() bool { return pool(tp).Idle == 1 })
		i0 := tp.acquire(t, newHolder("h0", "k"), false)
		tp.Release(i0, true)
		require.Zero(t, retired(tp, "k"), "no take for RefillQuiet: stopped at once")
		eventually(t, "the stop", func() bool { return slices.Contains(f.stops(), i0.ID()) })
	})
	// retireOne fills a pool of two warm instances on a farm of slots and
	// releases one of them in a burst that does not pause.
	retireOne := func(t *testing.T, slots int) (*testPlacer, *localFarm, *Instance) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "k", Warm: 2}}, RefillQuiet: time.Hour})
		f := newLocalFarm("f", slots, "k")
		tp.AddFarm(f)
		eventually(t, "two warm instances", func() bool { return pool(tp).Idle == 2 })
		i0 := tp.acquire(t, newHolder("h0", "k"), false)
		tp.Release(i0, true)
		require.Equal(t, 1, retired(tp, "k"))
		return tp, f, i0
	}
	t.Run("closed", func(t *testing.T) {
		tp, f, i0 := retireOne(t, 4)
		tp.Close()
		require.Zero(t, retired(tp, "k"), "a closed placer keeps no stop waiting")
		eventually(t, "the stop", func() bool { return slices.Contains(f.stops(), i0.ID()) })
	})
	t.Run("a refill needs the slot", func(t *testing.T) {
		tp, f, i0 := retireOne(t, 2)
		// The last idle instance taken: the burst's refill (a quarter of
		// two, plus one) finds both slots held, one by the retired
		// instance, which is stopped at once to make room.
		tp.acquire(t, newHolder("h1", "k"), false)
		require.Zero(t, retired(tp, "k"))
		eventually(t, "the refill in the freed slot", func() bool { p := pool(tp); return p.Idle == 1 && p.Starting == 0 })
		require.Equal(t, []string{i0.ID()}, f.stops())
	})
	t.Run("a holder needs the slot", func(t *testing.T) {
		tp := newTestPlacer(t, Config{Pools: []Pool{{Name: "k", Warm: 1}, {Name: "c"}}, RefillQuiet: time.Hour})
		f := newLocalFarm("f", 2, "k", "c")
		tp.AddFarm(f)
		eventually(t, "a warm instance", func() bool { return pool(tp).Idle == 1 })
		i0 := tp.acquire(t, newHolder("h0", "k"), false)
		eventually(t, "the refill", func() bool { p := pool(tp); return p.Idle == 1 && p.Starting == 0 })
		tp.Release(i0, true)
		require.Equal(t, 1, retired(tp, "k"))
		// Both slots are taken, by the idle instance and the retired one:
		// a holder of the other pool that does not wait gets the retired
		// one's slot, and the idle instance stays.
		i1 := tp.acquire(t, newHolder("h1", "c"), false)
		require.Equal(t, "c", i1.Pool())
		require.Equal(t, []string{i0.ID()}, f.stops())
		require.Zero(t, retired(tp, "k"))
		require.Equal(t, 1, pool(tp).Idle)
	})
}

// TestReuseReset: a reuse pool's Reset runs before a released instance is
// idle again; until it returns nobody gets the instance, and a failed
// reset stops it.
func TestReuseReset(t *testing.T) {
	resets := make(chan *Instance, 1)
	answer := make(chan error)
	d := &dialer{}
	tp := newTestPlacer(t, Config{Dial: d.dial, Pools: []Pool{{Name: "r", Reuse: true,
		Reset: func(ctx context.Context, inst *Instance) error {
			resets <- inst
			select {
			case err := <-answer:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}}}})
	f := newLocalFarm("f", 1, "r")
	tp.AddFarm(f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	i1 := tp.acquire(t, newHolder("h1", "r"), false)
	tp.Release(i1, true)
	require.Same(t, i1, <-resets)
	snap := tp.Snapshot()
	require.Len(t, snap.Instances, 1)
	require.Equal(t, "resetting", snap.Instances[0].State)
	_, err := tp.Acquire(ctx, &newHolder("h2", "r").Holder, false, nil)
	require.ErrorIs(t, err, ErrNoCapacity, "not idle until the reset is answered")

	answer <- nil
	eventually(t, "the instance to be idle", func() bool { return tp.Snapshot().Pools[0].Idle == 1 })
	i3 := tp.acquire(t, newHolder("h3", "r"), false)
	require.Same(t, i1, i3, "reused")

	tp.Release(i3, true)
	<-resets
	answer <- errors.New("state left behind")
	eventually(t, "the instance to be stopped", func() bool { return len(f.stops()) == 1 })
	require.Equal(t, i1.ID(), f.stops()[0])
	h4 := newHolder("h4", "r")
	i4 := tp.acquire(t, h4, false)
	require.NotEqual(t, i1.ID(), i4.ID())

	// A connection that breaks loses the instance; its holder is told.
	d.conn(i4).lost(errors.New("connection to the instance broke"))
	require.ErrorContains(t, <-h4.lost, "broke")
	eventually(t, "the instance to be off the books", func() bool { return len(tp.Snapshot().Instances) == 0 })
}
