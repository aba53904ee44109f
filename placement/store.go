package placement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drover-dev/drover/store"
)

const (
	// storeOpTimeout bounds one store call made on the placement path.
	storeOpTimeout = 2 * time.Second
	// reconcileEvery is how often the books are compared with the store's
	// reservations and the difference mended.
	reconcileEvery = 2 * time.Second
	// slotSettle: a reservation younger than this is never taken for a
	// leftover, whatever a farm's heartbeat says.
	slotSettle = 3 * time.Second
	// startStale: a reservation still starting this long after its owner
	// died is freed.
	startStale = 30 * time.Second
)

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeOpTimeout)
}

// A store that cannot be reached is noted at once (down) and probed by
// the farm monitor; while it is away new placements fail with
// ErrStoreUnavailable, and frees are left to the reconciler, which mends
// the store's records once it is back.

// StoreErr notes what err, from a call to the store, says about the
// store's reachability, and returns it: as ErrStoreUnavailable when the
// store is away. Callers that use the same store for other records report
// through it, so that one judgement of the store holds for the manager.
func (p *Placer) StoreErr(err error) error {
	if err == nil || !errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if !p.down.Swap(true) {
		p.log.Error("shared state store unreachable: new sessions fail until it is back", "err", err)
		p.metrics.storeUp.Set(0)
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// StoreUsable is nil when the store answers, ErrStoreUnavailable otherwise.
func (p *Placer) StoreUsable() error {
	if p.down.Load() {
		return ErrStoreUnavailable
	}
	return nil
}

// markUp notes that the store answered; after an outage it asks for a full
// reconcile, since the store may have lost or missed records meanwhile.
func (p *Placer) markUp() {
	if p.down.Swap(false) {
		p.upAt.Store(p.now().UnixNano())
		p.log.Info("shared state store reachable again")
		p.metrics.storeUp.Set(1)
		p.lostRecords()
	}
}

// lostRecords asks this reconciler, and the caller's, to put records back.
func (p *Placer) lostRecords() {
	p.poke()
	if p.cfg.Resync != nil {
		p.cfg.Resync()
	}
}

// healthyFor is how long the store has been reachable without a break.
func (p *Placer) healthyFor(now time.Time) time.Duration {
	if p.down.Load() {
		return 0
	}
	return now.Sub(time.Unix(0, p.upAt.Load()))
}

func (p *Placer) poke() {
	select {
	case p.resync <- struct{}{}:
	default:
	}
}

func (p *Placer) publish(e store.Event) {
	e.Manager = p.id
	p.cfg.Publish(e)
}

// publishDirect publishes without a queue of the caller's: in the
// background, so that nobody under the lock waits for the store.
func (p *Placer) publishDirect(e store.Event) {
	p.goTracked(func() {
		ctx, cancel := opCtx()
		defer cancel()
		_ = p.StoreErr(p.st.Publish(ctx, e))
	})
}

func (p *Placer) reserve(farmID string, slot store.Slot) error {
	slot.Owner = p.id
	ctx, cancel := opCtx()
	defer cancel()
	return p.StoreErr(p.st.Reserve(ctx, farmID, slot))
}

func (p *Placer) updateSlot(farmID string, slot store.Slot, from store.SlotState) error {
	if slot.ID == "" {
		return nil
	}
	slot.Owner = p.id
	ctx, cancel := opCtx()
	defer cancel()
	return p.StoreErr(p.st.UpdateSlot(ctx, farmID, slot, from))
}

// freeSlot gives a reservation back and tells the other managers. While
// the store is away the reconciler frees it later.
func (p *Placer) freeSlot(farmID, slot string) {
	if slot == "" || p.down.Load() {
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if err := p.StoreErr(p.st.FreeSlot(ctx, farmID, slot)); err != nil {
		return
	}
	p.publish(store.Event{Type: store.EventSlotFreed, Farm: farmID})
}

// putFarm records a farm; errors are the caller's to act on.
func (p *Placer) putFarm(fe *farmEntry) error {
	ctx, cancel := opCtx()
	defer cancel()
	return p.StoreErr(p.st.PutFarm(ctx, store.Farm{ID: fe.id, Spec: fe.spec, Owner: fe.owner, Slots: fe.slots,
		Draining: fe.draining}))
}

// reconciler mends the store's reservations of this manager: those it
// holds but the store lost, and those the store holds that it gave up
// while the store was away.
func (p *Placer) reconciler() {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.resync:
		case <-t.C:
		}
		if !p.down.Load() {
			p.reconcileSlots()
		}
	}
}

func (p *Placer) reconcileSlots() {
	p.mu.Lock()
	ids := make([]string, 0, len(p.farms))
	for id := range p.farms {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	p.claimMu.Lock()
	defer p.claimMu.Unlock()
	for _, id := range ids {
		ctx, cancel := opCtx()
		slots, err := p.st.Slots(ctx, id)
		cancel()
		if p.StoreErr(err) != nil {
			return
		}
		// The books are read after the store: a reservation made in between
		// is pending here, one dropped in between is freed twice.
		stored := make(map[string]bool, len(slots))
		var stale []string
		var missing []store.Slot
		p.mu.Lock()
		held := map[string]bool{}
		for _, inst := range p.instances {
			if inst.farm.id == id && inst.slot != "" {
				held[inst.slot] = true
			}
		}
		for _, sl := range slots {
			stored[sl.ID] = true
			_, pending := p.pending[sl.ID]
			if sl.Owner == p.id && !held[sl.ID] && !pending {
				stale = append(stale, sl.ID)
			}
		}
		for _, inst := range p.instances {
			if inst.farm.id != id || inst.slot == "" || stored[inst.slot] {
				continue
			}
			sl := store.Slot{ID: inst.slot, Owner: p.id, Pool: inst.pool.cfg.Name, Instance: inst.info.ID,
				State: store.SlotIdle}
			if inst.state == instBound && inst.holder != nil {
				sl.State, sl.Session = store.SlotBound, inst.holder.ID
			}
			missing = append(missing, sl)
		}
		p.mu.Unlock()
		for _, slot := range stale {
			p.freeSlot(id, slot)
		}
		for _, sl := range missing {
			if err := p.reserve(id, sl); err != nil {
				p.log.Warn("could not record an instance in the shared state", "instance", sl.Instance, "err", err)
			}
		}
	}
}

// Claim runs claim, which takes over a reservation in the store (a
// session resumed from another manager takes its instance's slot), and
// keeps the reconciler from freeing that slot until Adopt puts its
// instance on the books or Unpend lets it go.
func (p *Placer) Claim(claim func() (slot string, err error)) error {
	p.claimMu.RLock()
	defer p.claimMu.RUnlock()
	slot, err := claim()
	if slot != "" {
		p.mu.Lock()
		p.pending[slot] = struct{}{}
		p.mu.Unlock()
	}
	return err
}

// Unpend ends the protection Claim gave a slot.
func (p *Placer) Unpend(slot string) {
	p.mu.Lock()
	delete(p.pending, slot)
	p.mu.Unlock()
}
