package placement

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// grant is what placement hands a holder: an idle instance already bound
// to it, or a slot reserved on a farm where one is started for it.
type grant struct {
	inst *Instance
	farm *farmEntry
	slot string // the reservation made on farm
	err  error
}

// waiter is a holder in the queue. It holds no goroutine while it waits:
// the acquisition it belongs to goes on in a new goroutine once it leaves
// the queue (a grant, its timeout, its context's end, a shutdown), and
// positions are told by a short-lived goroutine per change. So a queue of
// tens of thousands of sessions costs a few hundred bytes each.
type waiter struct {
	pool  *poolState
	h     *Holder
	since time.Time
	a     *acquisition
	// The fields below are guarded by the Placer's mu.
	last int // the latest position, told or to be told
	// quiet: the holder did not want to wait, and waits only for the slot
	// an idle instance stopped for it frees; it is told no positions.
	quiet bool
	// evicting is the instance whose stop the waiter counts on for a slot:
	// an idle one stopped to make room for it, or one already stopping.
	evicting *Instance
	// left is set once the waiter is out of the queue (granted, timed
	// out, given up, shut down); nothing is told to it after, and the
	// next tidy drops its entry.
	left bool
	// telling is closed when the goroutine telling positions ends; nil
	// when none runs. told is the last position it told.
	telling chan struct{}
	told    int
	timer   *time.Timer
	stopCtx func() bool
}

// farmFault marks a start that failed for its farm's sake (unreachable,
// fuller than the books said, draining, gone): not the instance's fault.
// The holder is placed elsewhere without counting it as an attempt.
type farmFault struct{ error }

func (f farmFault) Unwrap() error { return f.error }

const (
	// maxSpawnAttempts bounds the starts that fail for a holder.
	maxSpawnAttempts = 3
	// maxRounds bounds the placements tried for a holder, farm faults
	// included; each farm fault takes its farm out of the running, so the
	// bound is rarely reached.
	maxRounds = 32
)

// Acquire binds h to an instance of its pool: an idle one, else a fresh
// start, else (with wait) a place in the queue until one of those is
// possible; queued, when set, is told each new queue position. A start on
// a farm that cannot be reached, or that turns out to be full, is retried
// on another farm.
//
// Errors are ErrShutdown, ErrStoreUnavailable, a *PoolError (unknown pool,
// no farm serves it), ErrNoCapacity, ErrQueueTimeout, ErrSpawnFailed
// (wrapping the last cause) or ctx's error.
func (p *Placer) Acquire(ctx context.Context, h *Holder, wait bool, queued func(int)) (*Instance, error) {
	type result struct {
		inst *Instance
		err  error
	}
	ch := make(chan result, 1)
	p.AcquireFunc(ctx, h, wait, queued, func(inst *Instance, err error) { ch <- result{inst, err} })
	r := <-ch
	return r.inst, r.err
}

// AcquireFunc is Acquire that calls done with its outcome instead of
// returning it, exactly once. It places h in the caller's goroutine as far
// as it can without waiting in the queue; a holder that must wait leaves
// the caller free and holds no goroutine while it waits. done runs in the
// caller's goroutine or in one of placement's, and queued never runs after
// it or concurrently with it.
func (p *Placer) AcquireFunc(ctx context.Context, h *Holder, wait bool, queued func(int), done func(*Instance, error)) {
	ps, err := p.pool(h.Pool)
	if err != nil {
		done(nil, err)
		return
	}
	a := &acquisition{p: p, ctx: ctx, h: h, ps: ps, wait: wait, queued: queued, done: done}
	a.run()
}

// acquisition is one holder's placement, from round to round.
type acquisition struct {
	p      *Placer
	ctx    context.Context
	h      *Holder
	ps     *poolState
	wait   bool
	queued func(int)
	done   func(*Instance, error)

	rounds, failures, full int
	lastErr                error
}

// run tries rounds until the holder is placed, fails, or waits in the
// queue (then granted goes on).
func (a *acquisition) run() {
	for ; a.rounds < maxRounds; a.rounds++ {
		g, w := a.p.place(a)
		if w != nil {
			return // granted goes on
		}
		if !a.step(g) {
			return
		}
	}
	a.exhausted()
}

// granted goes on with the grant a waiter left the queue with, in a
// goroutine of its own, once any position being told has been.
func (a *acquisition) granted(w *waiter, g grant) {
	a.p.mu.Lock()
	telling := w.telling
	a.p.mu.Unlock()
	if telling != nil {
		<-telling
	}
	if err := a.ctx.Err(); err != nil && g.err == nil {
		// Left for the context's end, or granted as it ended: what was
		// granted goes back.
		a.p.undo(g, a.ps)
		g = grant{err: err}
	}
	if !a.step(g) {
		return
	}
	a.rounds++
	a.run()
}

// step acts on a round's grant: false means the acquisition has ended
// (done was called).
func (a *acquisition) step(g grant) bool {
	p, ps, h, ctx := a.p, a.ps, a.h, a.ctx
	if g.err != nil {
		a.done(nil, g.err)
		return false
	}
	if g.inst != nil {
		a.done(g.inst, nil)
		return false
	}
	inst, err := p.spawn(ctx, g, ps, h)
	if err == nil {
		a.done(inst, nil)
		return false
	}
	if ctx.Err() != nil {
		a.done(nil, ctx.Err())
		return false
	}
	a.lastErr = err
	if errors.As(err, new(farmFault)) {
		p.log.Info("placing elsewhere", "holder", h.ID, "pool", ps.cfg.Name, "farm", g.farm.id, "err", err)
		if errors.Is(err, farmapi.ErrNoSlot) {
			// The farms are fuller than the books: instances given up
			// are still exiting. The books may say so again at once
			// (a slot freed elsewhere on that farm clears its full
			// mark), so the next round waits a little for the farm
			// instead of spending every round in milliseconds.
			a.full++
			if !sleepCtx(ctx, fullBackoff(a.full)) {
				a.done(nil, ctx.Err())
				return false
			}
		}
		return true
	}
	a.failures++
	p.log.Warn("spawn failed", "holder", h.ID, "pool", ps.cfg.Name, "farm", g.farm.id, "attempt", a.failures, "err", err)
	if errors.Is(err, farmapi.ErrStartTimeout) || a.failures >= maxSpawnAttempts {
		// A start timeout came after the farm waited out the pool's
		// start timeout and the retries the pool allows (dial pools):
		// another round here would multiply them, and the wait with them.
		a.exhausted()
		return false
	}
	return true
}

// exhausted ends an acquisition whose rounds are spent.
func (a *acquisition) exhausted() {
	if errors.Is(a.lastErr, farmapi.ErrNoSlot) {
		// Every round found the farms full: no capacity, which a client
		// may try again later, not a failure of drover's.
		a.p.log.Warn("placement found the farms full", "holder", a.h.ID, "pool", a.ps.cfg.Name, "rounds", maxRounds, "err", a.lastErr)
		a.done(nil, fmt.Errorf("%w: %w", ErrNoCapacity, a.lastErr))
		return
	}
	a.p.log.Warn("placement failed", "holder", a.h.ID, "pool", a.ps.cfg.Name, "err", a.lastErr)
	a.done(nil, fmt.Errorf("%w: %w", ErrSpawnFailed, a.lastErr))
}

// fullBackoff is the wait before the next round of a placement after its
// n-th start that found a farm full: 10 ms, doubled each time, at most
// 250 ms (maxRounds of them: about 7 s).
func fullBackoff(n int) time.Duration {
	return min(10*time.Millisecond<<min(n-1, 5), 250*time.Millisecond)
}

// sleepCtx waits d; false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// place tries to serve a's holder at once; if a waits, it queues it
// otherwise. The waiter's queue timeout and a's context are watched by
// timers, not by a goroutine, and a goes on in granted once it leaves.
func (p *Placer) place(a *acquisition) (grant, *waiter) {
	h, ps, wait := a.h, a.ps, a.wait
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return grant{err: ErrShutdown}, nil
	}
	if err := p.StoreUsable(); err != nil {
		return grant{err: err}, nil
	}
	if !p.servedLocked(ps) {
		return grant{err: &PoolError{Pool: ps.cfg.Name, Err: ErrNoFarm}}, nil
	}
	// Earlier waiters of this pool come first. Behind them, a holder no
	// farm has a free slot for still makes room for itself: the slot the
	// stop frees goes to the first of them, the next one to the next, and
	// a burst of holders that need room have their stops run at once, not
	// one after the other. A holder a farm has a free slot for, behind
	// waiters who cannot use it (their labels match no farm with room),
	// is served in turn once queued.
	var evicted *Instance
	slotFree := false
	if !p.hasWaiterLocked(ps) {
		g, ok, err := p.serveLocked(h, ps)
		if err != nil {
			return grant{err: err}, nil
		}
		if ok {
			if g.inst != nil {
				p.refillLocked() // an idle instance was taken: warm another
			}
			return g, nil
		}
		evicted = p.evictLocked(h, ps)
	} else if slotFree = p.farmForLocked(ps, h.Labels) != nil; !slotFree {
		evicted = p.evictLocked(h, ps)
	}
	if !wait && evicted == nil {
		return grant{err: ErrNoCapacity}, nil
	}
	if err := a.ctx.Err(); err != nil {
		if evicted != nil {
			evicted.awaited = false
			p.kickLocked() // the slot it frees goes to whoever waits
		}
		return grant{err: err}, nil
	}
	w := &waiter{pool: ps, h: h, since: time.Now(), a: a, quiet: !wait, evicting: evicted}
	timeout := ps.cfg.QueueTimeout
	w.timer = time.AfterFunc(timeout, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.leaveLocked(w, grant{err: fmt.Errorf("%w: waited %s", ErrQueueTimeout, timeout)})
	})
	w.stopCtx = context.AfterFunc(a.ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.leaveLocked(w, grant{}) // granted reads the context's error
	})
	p.queue = append(p.queue, w)
	p.queued++
	ps.waiting++
	p.metrics.queueLength.Set(float64(p.queued))
	p.tidyLaterLocked()
	if slotFree {
		p.kickLocked()
	}
	return grant{}, w
}

// servedLocked reports whether some farm serves the pool, or no farm is
// registered yet (farms are expected: holders wait for them).
func (p *Placer) servedLocked(ps *poolState) bool {
	if len(p.farms) == 0 {
		return true
	}
	for _, fe := range p.farms {
		if fe.pools[ps.cfg.Name] {
			return true
		}
	}
	return false
}

func (p *Placer) hasWaiterLocked(ps *poolState) bool {
	return ps.waiting > 0
}

// fits reports whether an instance started with have serves a holder that
// wants want: a holder that asks for nothing takes any.
func fits(want, have farmapi.StartOptions) bool {
	return want == (farmapi.StartOptions{}) || want == have
}

// serveLocked hands out an idle instance or reserves a slot for a start.
// Both go through the store, which makes them atomic across managers; an
// error means the store cannot be reached.
func (p *Placer) serveLocked(h *Holder, ps *poolState) (grant, bool, error) {
	for i := 0; i < len(ps.idle); i++ {
		inst := ps.idle[i]
		fe := inst.farm
		if fe.draining || fe.suspect || !fe.matches(h.Labels) || !fits(h.Start, inst.opts) {
			continue
		}
		err := p.updateSlot(fe.id, store.Slot{ID: inst.slot, Pool: ps.cfg.Name,
			Instance: inst.info.ID, State: store.SlotBound, Session: h.ID}, store.SlotIdle)
		if errors.Is(err, store.ErrUnavailable) {
			return grant{}, false, err
		}
		ps.idle = slices.Delete(ps.idle, i, i+1)
		i--
		if err != nil {
			// The store lost the reservation (its farm left): nobody can
			// count on this instance any more.
			p.log.Warn("idle instance lost its reservation", "instance", inst.info.ID, "err", err)
			p.stopAsyncLocked(inst)
			continue
		}
		p.bindLocked(inst, h)
		ps.lastTake = time.Now()
		return grant{inst: inst}, true, nil
	}
	slot, fe, err := p.reserveLocked(ps, h.Labels, h.ID)
	if err != nil || fe == nil {
		return grant{}, false, err
	}
	ps.startingBound++
	return grant{farm: fe, slot: slot}, true, nil
}

// evictLocked makes room for a holder no slot is free for, when idle
// instances hold slots it could use: it stops the one idle longest, of any
// pool, on a farm that would take the holder. A holder never waits behind
// idle instances (a warm stream instance started without the model a
// viewer asks for, warm instances of another pool). A retired instance,
// which is stopped anyway, goes first; and a stop already under way that
// no other waiter counts on spares the idle instance, as the slot it frees
// comes a moment later. It returns the instance whose stop the holder
// counts on (marked awaited), nil when there is none.
func (p *Placer) evictLocked(h *Holder, ps *poolState) *Instance {
	fits := func(inst *Instance) bool {
		fe := inst.farm
		return !fe.draining && !fe.suspect && fe.pools[ps.cfg.Name] && fe.matches(h.Labels)
	}
	for _, q := range p.pools {
		for i, inst := range q.retired {
			if fits(inst) {
				q.retired = slices.Delete(q.retired, i, i+1)
				p.stopAsyncLocked(inst)
				inst.awaited = true
				return inst
			}
		}
	}
	var victim *Instance
	for _, q := range p.pools {
		for _, inst := range q.idle {
			if fits(inst) && (victim == nil || inst.idleSince.Before(victim.idleSince)) {
				victim = inst
			}
		}
	}
	if victim == nil {
		return nil
	}
	for _, inst := range p.stopping {
		if !inst.awaited && inst.state != instGone && fits(inst) {
			inst.awaited = true
			return inst
		}
	}
	victim.pool.idle = slices.DeleteFunc(victim.pool.idle, func(i *Instance) bool { return i == victim })
	p.log.Info("stopping an idle instance to make room", "instance", victim.info.ID, "pool", victim.pool.cfg.Name,
		"for_pool", ps.cfg.Name, "holder", h.ID)
	p.stopAsyncLocked(victim)
	victim.awaited = true
	return victim
}

// reserveLocked reserves a slot for an instance of ps in the store, on the
// best farm that has one; holder is the holder it starts for, if any. It
// returns a nil farm when no farm has a free slot.
func (p *Placer) reserveLocked(ps *poolState, labels map[string]string, holder string) (string, *farmEntry, error) {
	for {
		fe := p.farmForLocked(ps, labels)
		if fe == nil {
			return "", nil, nil
		}
		slot := store.Slot{ID: newID(), Pool: ps.cfg.Name, State: store.SlotStarting, Session: holder}
		err := p.reserve(fe.id, slot)
		switch {
		case err == nil:
			fe.used++
			p.pending[slot.ID] = struct{}{}
			return slot.ID, fe, nil
		case errors.Is(err, store.ErrUnavailable):
			return "", nil, err
		default:
			// Full, draining or gone as far as the store knows: other
			// managers took its slots. Skip it until the next look.
			fe.others = fe.slots - fe.used
		}
	}
}

// unreserveLocked gives back a reservation whose instance never came.
func (p *Placer) unreserveLocked(fe *farmEntry, slot string) {
	fe.used--
	delete(p.pending, slot)
	p.freeSlot(fe.id, slot)
}

// farmForLocked picks, among the farms that take placements, run ps and
// have the labels asked for, the one of highest priority with the most
// free slots.
func (p *Placer) farmForLocked(ps *poolState, labels map[string]string) *farmEntry {
	now := p.now()
	var best *farmEntry
	for _, fe := range p.farms {
		if !fe.takes(now) || !fe.pools[ps.cfg.Name] || fe.free() <= 0 || !fe.matches(labels) {
			continue
		}
		if best == nil || better(fe, best) {
			best = fe
		}
	}
	return best
}

func better(a, b *farmEntry) bool {
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	if a.free() != b.free() {
		return a.free() > b.free()
	}
	return a.id < b.id
}

func (p *Placer) bindLocked(inst *Instance, h *Holder) {
	inst.state = instBound
	inst.holder = h
}

// leaveLocked takes w out of the queue with g, unless it has left
// already, and lets its acquisition go on in a goroutine of its own. The
// queue keeps w's entry until the next tidy: removing entries one by one
// from a long queue, and telling everyone behind each its new place,
// would cost the square of the queue when many leave at once.
func (p *Placer) leaveLocked(w *waiter, g grant) {
	if w.left {
		return
	}
	w.left = true
	if w.evicting != nil {
		w.evicting.awaited = false // another waiter may count on its slot
	}
	w.timer.Stop()
	w.stopCtx()
	p.queued--
	w.pool.waiting--
	p.metrics.queueLength.Set(float64(p.queued))
	p.tidyLaterLocked()
	go w.a.granted(w, g)
}

// positionTick is how often, at most, queue positions are worked out and
// told while the queue changes.
const positionTick = 10 * time.Millisecond

// tidyLaterLocked asks for a tidy of the queue within positionTick.
func (p *Placer) tidyLaterLocked() {
	if p.tidyTimer != nil || p.closed {
		return
	}
	p.tidyTimer = time.AfterFunc(positionTick, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.tidyTimer = nil
		p.tidyLocked()
	})
}

// tidyLocked drops the waiters that left from the queue and tells the
// others their positions where they changed.
func (p *Placer) tidyLocked() {
	kept := p.queue[:0]
	for _, w := range p.queue {
		if !w.left {
			kept = append(kept, w)
		}
	}
	clear(p.queue[len(kept):])
	p.queue = kept
	p.positionsLocked()
}

// undo gives back a grant its waiter can no longer use.
func (p *Placer) undo(g grant, ps *poolState) {
	switch {
	case g.inst != nil:
		p.Release(g.inst, true)
	case g.farm != nil:
		p.mu.Lock()
		p.unreserveLocked(g.farm, g.slot)
		ps.startingBound--
		p.kickLocked()
		p.mu.Unlock()
	}
}

// kickLocked serves waiters in order, then refills the warm pools.
func (p *Placer) kickLocked() {
	if p.closed {
		return
	}
	if p.queued > 0 {
		storeDown := p.StoreUsable() != nil
		// full marks the pools for which a waiter without labels or start
		// options found nothing: the next such waiter would find nothing
		// either, and a long queue is not walked farm by farm for each.
		var full map[*poolState]bool
		for _, w := range p.queue {
			if w.left || storeDown {
				continue
			}
			plain := len(w.h.Labels) == 0 && w.h.Start == (farmapi.StartOptions{})
			if plain && full[w.pool] {
				continue
			}
			g, ok, err := p.serveLocked(w.h, w.pool)
			if ok {
				p.leaveLocked(w, g)
				continue
			}
			// Waiters keep their place while the store is away.
			storeDown = err != nil
			if !storeDown && (w.evicting == nil || w.evicting.state == instGone) {
				w.evicting = p.evictLocked(w.h, w.pool)
			}
			if plain && !storeDown && w.evicting == nil {
				if full == nil {
					full = map[*poolState]bool{}
				}
				full[w.pool] = true
			}
		}
	}
	p.refillLocked()
}

// positionsLocked tells each waiter its 1-based position when it changed.
// The telling runs in a goroutine per waiter that has something to tell,
// which ends when it has told the latest. The queue holds no waiter that
// left (tidyLocked).
func (p *Placer) positionsLocked() {
	for i, w := range p.queue {
		if w.last == i+1 || w.quiet {
			continue
		}
		w.last = i + 1
		if w.a.queued != nil && w.telling == nil {
			w.telling = make(chan struct{})
			go p.tell(w)
		}
	}
}

// tell tells w's positions until it has told the latest, or w has left.
func (p *Placer) tell(w *waiter) {
	for {
		p.mu.Lock()
		pos := w.last
		if w.left || pos == w.told {
			close(w.telling)
			w.telling = nil
			p.mu.Unlock()
			return
		}
		w.told = pos
		p.mu.Unlock()
		w.a.queued(pos)
	}
}

// refillLocked starts instances until every pool has its warm count of idle
// or starting instances, as far as free slots allow.
//
// While a pool hands out instances (the last one less than RefillQuiet
// ago), it only keeps more than a quarter of its warm count at hand, and
// starts the rest once the takes pause: a burst of sessions is served from
// the warm instances without start-ups competing for the CPU with the
// sessions just placed.
func (p *Placer) refillLocked() {
	if p.closed || p.StoreUsable() != nil {
		return
	}
	now := time.Now() // the clock of the timers
	for _, ps := range p.pools {
		have, want := len(ps.idle)+ps.startingWarm, ps.cfg.Warm
		if have >= want {
			continue
		}
		if now.Before(ps.retryAt) {
			p.retryLaterLocked(ps, ps.retryAt.Sub(now))
			continue
		}
		if wait := ps.lastTake.Add(p.cfg.RefillQuiet).Sub(now); wait > 0 {
			p.retryLaterLocked(ps, wait)
			want = min(want, want/4+1)
		}
		for ; have < want; have++ {
			slot, fe, err := p.reserveLocked(ps, nil, "")
			if err == nil && fe == nil {
				// No free slot: the retired instances give theirs back
				// (the refill goes on when their stops free them).
				p.stopAllRetiredLocked()
			}
			if err != nil || fe == nil {
				break
			}
			ps.startingWarm++
			p.goTracked(func() { p.spawnWarm(fe, ps, slot) })
		}
	}
}

func (p *Placer) retryLaterLocked(ps *poolState, d time.Duration) {
	if ps.retryTimer != nil {
		return
	}
	ps.retryTimer = time.AfterFunc(d, func() {
		p.mu.Lock()
		ps.retryTimer = nil
		p.refillLocked()
		p.mu.Unlock()
	})
}

func (p *Placer) spawnWarm(fe *farmEntry, ps *poolState, slot string) {
	// Bounded so that a farm that hangs cannot hold the slot for ever.
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
	defer cancel()
	inst, err := p.start(ctx, fe, ps, farmapi.StartOptions{Warm: true})
	if err == nil {
		inst.slot = slot
		err = p.updateSlot(fe.id, store.Slot{ID: slot, Pool: ps.cfg.Name, Instance: inst.info.ID,
			State: store.SlotIdle}, store.SlotStarting)
		if err != nil {
			p.stopInstance(fe, inst)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ps.startingWarm--
	if err != nil {
		p.unreserveLocked(fe, slot)
		ps.failures++
		backoff := min(time.Duration(ps.failures)*500*time.Millisecond, 30*time.Second)
		ps.retryAt = time.Now().Add(backoff)
		if !p.closed {
			p.log.Warn("warm spawn failed", "pool", ps.cfg.Name, "farm", fe.id, "retry_in", backoff, "err", err)
		}
		p.kickLocked()
		return
	}
	ps.failures = 0
	if inst.state == instGone {
		p.discardLocked(fe, inst, slot)
		return
	}
	p.bookLocked(inst)
	if p.closed || (inst.conn != nil && !inst.conn.Clean()) || p.farms[fe.id] != fe || fe.draining {
		p.stopAsyncLocked(inst)
		return
	}
	inst.state = instIdle
	inst.idleSince = time.Now()
	ps.idle = append(ps.idle, inst)
	p.kickLocked()
}

// spawn starts an instance on a slot reserved for h and binds it.
func (p *Placer) spawn(ctx context.Context, g grant, ps *poolState, h *Holder) (*Instance, error) {
	fe := g.farm
	inst, err := p.start(ctx, fe, ps, h.Start)
	if err == nil {
		inst.slot = g.slot
		err = p.updateSlot(fe.id, store.Slot{ID: g.slot, Pool: ps.cfg.Name, Instance: inst.info.ID,
			State: store.SlotBound, Session: h.ID}, store.SlotStarting)
		if err != nil {
			p.stopInstance(fe, inst)
			err = fmt.Errorf("record the instance: %w", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ps.startingBound--
	if err != nil {
		p.unreserveLocked(fe, g.slot)
		p.kickLocked()
		return nil, err
	}
	if inst.state == instGone {
		p.discardLocked(fe, inst, g.slot)
		return nil, fmt.Errorf("the connection to instance %s broke before it was used", inst.info.ID)
	}
	p.bookLocked(inst)
	if p.closed {
		p.stopAsyncLocked(inst)
		return nil, ErrShutdown
	}
	if p.farms[fe.id] != fe {
		p.stopAsyncLocked(inst)
		return nil, farmFault{fmt.Errorf("farm %s left while the instance started", fe.id)}
	}
	p.bindLocked(inst, h)
	return inst, nil
}

// bookLocked puts a started instance on the books.
func (p *Placer) bookLocked(inst *Instance) {
	delete(p.pending, inst.slot)
	p.instances[inst.info.ID] = inst
	inst.booked = p.now()
}

// discardLocked stops an instance that started but whose connection broke
// before it was on the books, and gives its reservation back once the farm
// confirmed the stop.
func (p *Placer) discardLocked(fe *farmEntry, inst *Instance, slot string) {
	p.goTracked(func() {
		p.stopInstance(fe, inst)
		p.mu.Lock()
		p.unreserveLocked(fe, slot)
		p.kickLocked()
		p.mu.Unlock()
	})
}

// start asks a farm for an instance and connects to it. The slot stays
// reserved by the caller. Stream instances get no connection: their
// clients' bytes are relayed to them.
func (p *Placer) start(ctx context.Context, fe *farmEntry, ps *poolState, opts farmapi.StartOptions) (*Instance, error) {
	begin := time.Now()
	// A start gives up when its farm leaves the books (declared dead).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	unhook := context.AfterFunc(fe.ctx, cancel)
	defer unhook()
	var info farmapi.Instance
	var err error
	if sw, ok := fe.f.(StarterWith); ok {
		info, err = sw.StartInstanceWith(sctx, ps.cfg.Name, opts)
	} else if opts != (farmapi.StartOptions{Warm: opts.Warm}) {
		err = errors.New("the farm cannot start instances with options")
	} else {
		info, err = fe.f.StartInstance(sctx, ps.cfg.Name)
	}
	if err != nil {
		p.metrics.spawns.WithLabelValues(ps.cfg.Name, "error").Inc()
		return nil, p.judgeStart(ctx, fe, fmt.Errorf("start on farm %s: %w", fe.id, err))
	}
	opts.Warm = false // a warm instance serves whoever asks for no options
	inst := &Instance{info: info, opts: opts, pool: ps, farm: fe}
	if info.Protocol != farmapi.ProtocolStream && p.cfg.Dial != nil {
		conn, err := p.connect(ctx, fe, inst)
		if err != nil {
			p.metrics.spawns.WithLabelValues(ps.cfg.Name, "error").Inc()
			p.stopInstance(fe, inst)
			return nil, fmt.Errorf("connect to instance %s: %w", info.ID, err)
		}
		inst.conn = conn
	}
	p.metrics.spawns.WithLabelValues(ps.cfg.Name, "ok").Inc()
	p.metrics.spawnSeconds.Observe(time.Since(begin).Seconds())
	return inst, nil
}

// connect opens inst's connection: through the farm when it is a
// Connector serving the instance in this process, else dialled at the
// instance's URL. A loss it reports later is inst's.
func (p *Placer) connect(ctx context.Context, fe *farmEntry, inst *Instance) (Conn, error) {
	lost := func(err error) { p.lost(inst, err, true) }
	if c, ok := fe.f.(Connector); ok && p.cfg.Attach != nil {
		nc, served, err := c.ConnectInstance(inst.info)
		if err != nil {
			return nil, err
		}
		if served {
			return p.cfg.Attach(nc, lost)
		}
	}
	return p.cfg.Dial(ctx, InstanceURL(inst.info), farmHeader(fe.f, inst.info), lost)
}

// judgeStart says what a failed start tells about its farm, and marks it
// so that the next placement goes elsewhere: a farm that did not answer is
// suspect, one that said it has no free slot (or drains, or closes) takes
// nothing until its next heartbeat. These come back as farm faults.
func (p *Placer) judgeStart(ctx context.Context, fe *farmEntry, err error) error {
	if ctx.Err() != nil {
		return err // the holder gave up
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case fe.ctx.Err() != nil:
		return farmFault{fmt.Errorf("the farm left during the start: %w", err)}
	case errors.Is(err, ErrUnreachable):
		p.suspectLocked(fe, err)
		return farmFault{err}
	case errors.Is(err, farmapi.ErrNoSlot), errors.Is(err, farmapi.ErrDraining), errors.Is(err, farmapi.ErrClosed):
		// The farm is fuller than the books: instances the managers gave
		// up still run there, or another manager's are not counted yet.
		fe.fullUntil = p.now().Add(p.cfg.HeartbeatInterval)
		p.log.Info("farm has no free slot although the books said so", "farm", fe.id, "err", err)
		return farmFault{err}
	}
	return err
}

// Release ends a binding: the instance goes back to the idle pool when its
// pool reuses instances and it is clean (after the pool's Reset, if any),
// otherwise it is stopped. reusable is the holder's word that it left the
// instance in a state fit for another.
func (p *Placer) Release(inst *Instance, reusable bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if inst.state != instBound {
		return
	}
	inst.holder = nil
	ps := inst.pool
	if reusable && ps.cfg.Reuse && !p.closed && !inst.farm.draining && !inst.farm.suspect &&
		inst.conn != nil && inst.conn.Clean() {
		if ps.cfg.Reset != nil {
			inst.state = instResetting
			p.goTracked(func() { p.reset(inst) })
			return
		}
		if p.idleLocked(inst, store.SlotBound) {
			return
		}
	}
	p.retireLocked(inst)
}

// maxRetire bounds how long a released instance waits for its stop
// (retireLocked) while its pool's takes go on without a pause.
const maxRetire = 500 * time.Millisecond

// retireLocked stops inst, released and not kept by its pool, once the
// pool's takes pause (no take for RefillQuiet), as the refill waits for
// them: while a burst of sessions is served from the warm instances, the
// stops of the sessions that end meanwhile would take the CPU the new ones
// need (a process's exit, and its reaping by the farm, cost about as much
// as a warm session's open). A retired instance serves nobody, keeps its
// slot and, until its stop, its connection.
//
// It is stopped at once when its pool is not in a burst, a holder waits
// in the queue, its farm drains or is suspect, or the placer is closed;
// later, as soon as a holder needs its slot (evictLocked) or a refill
// finds no free slot (refillLocked), and maxRetire after its release at
// the latest.
func (p *Placer) retireLocked(inst *Instance) {
	ps, fe := inst.pool, inst.farm
	now := time.Now()
	quiet := ps.lastTake.Add(p.cfg.RefillQuiet).Sub(now)
	if quiet <= 0 || p.queued > 0 || fe.draining || fe.suspect || p.closed {
		p.stopAsyncLocked(inst)
		return
	}
	inst.state = instStopping
	inst.holder = nil
	inst.retiredAt = now
	ps.retired = append(ps.retired, inst)
	p.retireLaterLocked(ps, min(quiet, maxRetire))
}

func (p *Placer) retireLaterLocked(ps *poolState, d time.Duration) {
	if ps.retireTimer != nil || p.closed {
		return
	}
	ps.retireTimer = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		ps.retireTimer = nil
		p.stopRetiredLocked(ps, false)
	})
}

// stopRetiredLocked stops the retired instances of ps: all of them when
// all is set or the pool's takes paused, otherwise those that waited
// maxRetire. It sets the timer for the rest.
func (p *Placer) stopRetiredLocked(ps *poolState, all bool) {
	if len(ps.retired) == 0 {
		return
	}
	now := time.Now()
	quiet := ps.lastTake.Add(p.cfg.RefillQuiet).Sub(now)
	all = all || quiet <= 0 || p.closed
	// A retired instance that exited or whose farm died meanwhile is still
	// on the books (lost leaves a stopping instance to its stop): its stop
	// takes it off them.
	kept := ps.retired[:0]
	for _, inst := range ps.retired {
		if all || now.Sub(inst.retiredAt) >= maxRetire || inst.farm.draining || inst.farm.suspect {
			p.stopAsyncLocked(inst)
		} else {
			kept = append(kept, inst)
		}
	}
	clear(ps.retired[len(kept):])
	ps.retired = kept
	if len(kept) > 0 {
		p.retireLaterLocked(ps, max(min(quiet, kept[0].retiredAt.Add(maxRetire).Sub(now)), time.Millisecond))
	}
}

// stopAllRetiredLocked stops every retired instance of every pool.
func (p *Placer) stopAllRetiredLocked() {
	for _, ps := range p.pools {
		p.stopRetiredLocked(ps, true)
	}
}

// idleLocked makes an instance idle, in the store first.
func (p *Placer) idleLocked(inst *Instance, from store.SlotState) bool {
	if p.updateSlot(inst.farm.id, store.Slot{ID: inst.slot, Pool: inst.pool.cfg.Name,
		Instance: inst.info.ID, State: store.SlotIdle}, from) != nil {
		return false
	}
	inst.state = instIdle
	inst.idleSince = time.Now()
	inst.pool.idle = append(inst.pool.idle, inst)
	p.kickLocked()
	return true
}

// reset runs the pool's Reset on a released instance: idle when it
// succeeds, stopped when it fails.
func (p *Placer) reset(inst *Instance) {
	ctx, cancel := context.WithTimeout(p.ctx, inst.pool.cfg.ResetTimeout)
	err := inst.pool.cfg.Reset(ctx, inst)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if inst.state != instResetting {
		return // lost meanwhile
	}
	if err != nil {
		p.log.Warn("instance reset failed: stopping it", "instance", inst.info.ID, "pool", inst.pool.cfg.Name, "err", err)
		p.stopAsyncLocked(inst)
		return
	}
	if p.closed || p.farms[inst.farm.id] != inst.farm || inst.farm.draining || !inst.conn.Clean() ||
		!p.idleLocked(inst, store.SlotBound) {
		p.stopAsyncLocked(inst)
	}
}

// stopAsyncLocked stops an instance in the background; its slot is freed
// when the farm confirms.
func (p *Placer) stopAsyncLocked(inst *Instance) {
	inst.state = instStopping
	inst.holder = nil
	p.stopping = append(p.stopping, inst)
	p.goTracked(func() {
		p.stopInstance(inst.farm, inst)
		p.mu.Lock()
		p.stopping = slices.DeleteFunc(p.stopping, func(i *Instance) bool { return i == inst })
		p.removeLocked(inst)
		p.kickLocked()
		p.mu.Unlock()
	})
}

// stopInstance closes the connection to an instance and asks its farm to
// stop it.
func (p *Placer) stopInstance(fe *farmEntry, inst *Instance) {
	if inst.conn != nil {
		inst.conn.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := fe.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farmapi.ErrNotFound) {
		p.log.Warn("stop instance", "instance", inst.info.ID, "err", err)
	}
}

// removeLocked forgets an instance and frees its slot, once. A farm found
// full has room again.
func (p *Placer) removeLocked(inst *Instance) {
	if p.dropLocked(inst) {
		inst.farm.fullUntil = time.Time{}
		p.freeSlot(inst.farm.id, inst.slot)
	}
}

// dropLocked takes an instance off this manager's books; false when it
// was not on them (any more).
func (p *Placer) dropLocked(inst *Instance) bool {
	if inst.state == instGone {
		return false
	}
	if inst.state == instIdle {
		inst.pool.idle = slices.DeleteFunc(inst.pool.idle, func(i *Instance) bool { return i == inst })
	}
	inst.state = instGone
	inst.holder = nil
	if p.instances[inst.info.ID] != inst {
		return false
	}
	delete(p.instances, inst.info.ID)
	inst.farm.used--
	return true
}

// lost handles an instance that died or whose connection broke: its holder
// (if any) is told, the slot is freed and the pool refilled. stop asks the
// farm to make sure the process is gone (not for a farm that is gone).
func (p *Placer) lost(inst *Instance, cause error, stop bool) {
	p.mu.Lock()
	switch inst.state {
	case instGone, instStopping:
		p.mu.Unlock()
		return
	case instStarting:
		// Not on the books yet: whoever starts it finds it gone.
		inst.state = instGone
		p.mu.Unlock()
		return
	}
	h := inst.holder
	p.removeLocked(inst)
	p.kickLocked()
	p.mu.Unlock()
	p.metrics.instancesLost.Inc()
	p.log.Warn("instance lost", "instance", inst.info.ID, "pool", inst.pool.cfg.Name, "err", cause)
	p.goTracked(func() {
		if !stop {
			if inst.conn != nil {
				inst.conn.Close()
			}
			return
		}
		// Make sure the process is gone too: the connection may have broken
		// while the process lives on.
		p.stopInstance(inst.farm, inst)
	})
	if h != nil && h.Lost != nil {
		p.goTracked(func() { h.Lost(cause) })
	}
}

// InstanceExited is a farm's report that an instance exited by itself.
func (p *Placer) InstanceExited(id string, err error) {
	p.mu.Lock()
	inst := p.instances[id]
	p.mu.Unlock()
	if inst != nil {
		p.lost(inst, fmt.Errorf("process exited: %w", err), true)
	}
}

// Forget drops an instance another manager took over with its holder, and
// closes this manager's connection to it; the instance keeps running.
func (p *Placer) Forget(inst *Instance) {
	p.mu.Lock()
	if p.dropLocked(inst) {
		inst.farm.others++
	}
	p.kickLocked()
	p.mu.Unlock()
	if inst.conn != nil {
		inst.conn.Close()
	}
}

// Adopt puts on the books, bound to h, an instance another manager placed
// (a session resumed here): its reservation was claimed with Claim. The
// farm is looked for in the store once more if it is not on the books.
func (p *Placer) Adopt(ctx context.Context, h *Holder, farmID, slot string, info farmapi.Instance) (*Instance, error) {
	ps, err := p.pool(h.Pool)
	if err != nil {
		return nil, err
	}
	fe := p.farmByID(farmID)
	if fe == nil {
		p.syncFarms()
		if fe = p.farmByID(farmID); fe == nil {
			return nil, fmt.Errorf("%w: %q", ErrFarmNotFound, farmID)
		}
	}
	inst := &Instance{info: info, pool: ps, farm: fe, slot: slot}
	if info.Protocol != farmapi.ProtocolStream && p.cfg.Dial != nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := p.connect(dctx, fe, inst)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("connect to instance %s: %w", info.ID, err)
		}
		inst.conn = conn
	}
	p.mu.Lock()
	var refused error
	switch {
	case p.closed:
		refused = ErrShutdown
	case p.farms[fe.id] != fe:
		refused = fmt.Errorf("%w: %q left", ErrFarmNotFound, fe.id)
	case inst.state == instGone:
		refused = fmt.Errorf("the connection to instance %s broke", info.ID)
	}
	if refused != nil {
		p.mu.Unlock()
		if inst.conn != nil {
			inst.conn.Close()
		}
		return nil, refused
	}
	fe.used++
	fe.others = max(0, fe.others-1)
	p.bookLocked(inst)
	p.bindLocked(inst, h)
	p.mu.Unlock()
	return inst, nil
}

func (p *Placer) farmByID(id string) *farmEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.farms[id]
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
