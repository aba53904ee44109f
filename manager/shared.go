package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// ErrStoreUnavailable means the shared state cannot be reached: no session
// can be placed until it is back. Sessions already placed keep working.
var ErrStoreUnavailable = errors.New("the shared state store is unreachable; new sessions fail until it is back")

const (
	// storeOpTimeout bounds one store call made on the placement path.
	storeOpTimeout = 2 * time.Second
	// reconcileEvery is how often the manager compares its instances and
	// sessions with the store's records and mends the difference.
	reconcileEvery = 2 * time.Second
	// handoffWait bounds the wait for a live manager to let go of a session
	// another manager resumes.
	handoffWait = 3 * time.Second
	// slotSettle: a reservation younger than this is never taken for a
	// leftover, whatever a farm's heartbeat says.
	slotSettle = 3 * time.Second
	// startStale: a reservation still starting this long after its owner
	// died is freed.
	startStale = 30 * time.Second
)

// shared is the manager's side of the store: what other managers must see
// (farms, reservations, resumable sessions, events) and what it learns from
// them. With the memory store there are no others, and the same code keeps
// one manager's books.
//
// A store that cannot be reached is noted at once (down) and probed by the
// farm monitor; while it is away new placements fail with
// ErrStoreUnavailable, /health answers 503, and frees and deletes are left
// to the reconciler, which mends the store's records once it is back.
type shared struct {
	m  *Manager
	st store.Store
	id string

	down atomic.Bool
	upAt atomic.Int64 // unix nanos: when the store was last seen coming back

	events chan store.Event // to the publisher
	syncMu sync.Mutex       // one syncFarms at a time
	// claimMu: a claim holds it (read) until its slot is pending in the
	// scheduler; reconcileSlots holds it while it reads the store and the
	// books, so it never takes a slot just claimed for a leftover.
	claimMu sync.RWMutex

	mu       sync.Mutex
	deletes  []string                 // session token hashes to delete once the store is back
	released map[string]chan struct{} // session id → closed when its old owner let go
	resync   chan struct{}            // buffered 1: ask for a reconcile pass now
	lostAll  bool                     // the store lost records: put sessions again
	watchers map[chan store.Event]struct{}
	// quiet is closed when the HTTP server shuts down: event streams end.
	quiet     chan struct{}
	quietOnce sync.Once
}

func newShared(m *Manager, st store.Store, id string) *shared {
	sh := &shared{m: m, st: st, id: id, events: make(chan store.Event, 1024),
		released: map[string]chan struct{}{}, resync: make(chan struct{}, 1),
		watchers: map[chan store.Event]struct{}{}, quiet: make(chan struct{})}
	sh.upAt.Store(time.Now().UnixNano())
	return sh
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeOpTimeout)
}

// note records what an error says about the store's reachability and
// returns it, as ErrStoreUnavailable when the store is away.
func (sh *shared) note(err error) error {
	if err == nil || !errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if !sh.down.Swap(true) {
		sh.m.log.Error("shared state store unreachable: new sessions fail until it is back", "err", err)
		sh.m.metrics.storeUp.Set(0)
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}

// markUp notes that the store answered; after an outage it asks for a full
// reconcile, since the store may have lost or missed records meanwhile.
func (sh *shared) markUp() {
	if sh.down.Swap(false) {
		sh.upAt.Store(time.Now().UnixNano())
		sh.m.log.Info("shared state store reachable again")
		sh.m.metrics.storeUp.Set(1)
		sh.mu.Lock()
		sh.lostAll = true
		sh.mu.Unlock()
		sh.poke()
	}
}

// usable is nil when new placements may go ahead.
func (sh *shared) usable() error {
	if sh.down.Load() {
		return ErrStoreUnavailable
	}
	return nil
}

// healthyFor is how long the store has been reachable without a break.
func (sh *shared) healthyFor() time.Duration {
	if sh.down.Load() {
		return 0
	}
	return time.Since(time.Unix(0, sh.upAt.Load()))
}

func (sh *shared) poke() {
	select {
	case sh.resync <- struct{}{}:
	default:
	}
}

func (sh *shared) publish(e store.Event) {
	e.Manager = sh.id
	select {
	case sh.events <- e:
	default:
		// Counted, not logged: a burst would log by the thousand. Farms
		// and slots are resynchronised from the store anyway.
		sh.m.metrics.eventsDropped.Inc()
	}
}

// publisher sends queued events, so that nobody waits for the store on
// their account.
func (sh *shared) publisher() {
	for {
		select {
		case <-sh.m.ctx.Done():
			return
		case e := <-sh.events:
			ctx, cancel := opCtx()
			if err := sh.note(sh.st.Publish(ctx, e)); err != nil {
				sh.m.log.Debug("publish event", "type", e.Type, "err", err)
			}
			cancel()
		}
	}
}

func (sh *shared) reserve(farmID string, slot store.Slot) error {
	slot.Owner = sh.id
	ctx, cancel := opCtx()
	defer cancel()
	return sh.note(sh.st.Reserve(ctx, farmID, slot))
}

func (sh *shared) updateSlot(farmID string, slot store.Slot, from store.SlotState) error {
	if slot.ID == "" {
		return nil
	}
	slot.Owner = sh.id
	ctx, cancel := opCtx()
	defer cancel()
	return sh.note(sh.st.UpdateSlot(ctx, farmID, slot, from))
}

// freeSlot gives a reservation back and tells the other managers. While
// the store is away the reconciler frees it later.
func (sh *shared) freeSlot(farmID, slot string) {
	if slot == "" || sh.down.Load() {
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if err := sh.note(sh.st.FreeSlot(ctx, farmID, slot)); err != nil {
		return
	}
	sh.publish(store.Event{Type: store.EventSlotFreed, Farm: farmID})
}

// putFarm records a farm; errors are the caller's to act on.
func (sh *shared) putFarm(fe *farmEntry) error {
	ctx, cancel := opCtx()
	defer cancel()
	return sh.note(sh.st.PutFarm(ctx, store.Farm{ID: fe.id, Spec: fe.spec, Owner: fe.owner, Slots: fe.slots,
		Draining: fe.draining}))
}

// putSession makes a WebSocket session resumable through any manager.
func (sh *shared) putSession(s *Session) {
	if s.tokenHash == "" || s.inst == nil || sh.down.Load() {
		return
	}
	rec, err := sessionRecord(s)
	if err != nil {
		sh.m.log.Error("session record", "session", s.info.ID, "err", err)
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if err := sh.note(sh.st.PutSession(ctx, rec, sh.sessionTTL())); err != nil {
		sh.m.log.Warn("session not resumable elsewhere for now", "session", s.info.ID, "err", err)
	}
}

func sessionRecord(s *Session) (store.Session, error) {
	inst, err := json.Marshal(s.inst.info)
	if err != nil {
		return store.Session{}, err
	}
	return store.Session{ID: s.info.ID, TokenHash: s.tokenHash, Owner: s.m.shared.id, Pool: s.pool.cfg.Name,
		Farm: s.inst.farm.id, Slot: s.inst.slot, Instance: inst, Created: s.info.Created}, nil
}

// deleteSession forgets a session that ended here (not one another manager
// claimed: the store checks the owner).
func (sh *shared) deleteSession(hash string) {
	if hash == "" {
		return
	}
	if !sh.down.Load() {
		ctx, cancel := opCtx()
		err := sh.note(sh.st.DeleteSession(ctx, hash, sh.id))
		cancel()
		if err == nil {
			return
		}
	}
	sh.mu.Lock()
	sh.deletes = append(sh.deletes, hash)
	sh.mu.Unlock()
}

// sessionTTL outlives the resume grace by one refresh period, so that a
// session whose manager died stays resumable for the whole grace.
func (sh *shared) sessionTTL() time.Duration {
	return sh.m.cfg.ResumeGrace + sh.touchEvery()
}

func (sh *shared) touchEvery() time.Duration {
	return max(sh.m.cfg.ResumeGrace/3, 100*time.Millisecond)
}

// deadAfter is the silence after which a farm is dead.
func (sh *shared) deadAfter() time.Duration {
	return time.Duration(sh.m.cfg.MissedHeartbeats)*sh.m.cfg.HeartbeatInterval + sh.m.cfg.HeartbeatInterval/10
}

// monitor runs every tenth of a heartbeat interval: it probes the store,
// adopts the farms other managers registered, declares dead the farms no
// manager has heard from, and keeps this manager's own records alive.
func (sh *shared) monitor() {
	every := sh.m.cfg.HeartbeatInterval / 10
	t := time.NewTicker(every)
	defer t.Stop()
	var lastAlive time.Time
	for {
		select {
		case <-sh.m.ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(lastAlive) >= sh.m.cfg.HeartbeatInterval {
				ctx, cancel := opCtx()
				err := sh.note(sh.st.Alive(ctx, sh.id, time.Duration(sh.m.cfg.MissedHeartbeats)*sh.m.cfg.HeartbeatInterval))
				cancel()
				if err == nil {
					lastAlive = now
				}
			}
			sh.syncFarms(now)
		}
	}
}

// syncFarms merges the store's farms into this manager's.
func (sh *shared) syncFarms(now time.Time) {
	sh.syncMu.Lock()
	defer sh.syncMu.Unlock()
	ctx, cancel := opCtx()
	farms, err := sh.st.Farms(ctx)
	cancel()
	if sh.note(err) != nil {
		return
	}
	sh.markUp()
	deadAfter := sh.deadAfter()
	settled := sh.healthyFor() > deadAfter
	s := sh.m.sched
	stored := make(map[string]store.Farm, len(farms))
	var dead, adopt []store.Farm
	var drained []string
	var touch, reput []*farmEntry
	var gone []string

	s.mu.Lock()
	for _, f := range farms {
		stored[f.ID] = f
		fe := s.farms[f.ID]
		if fe == nil {
			if f.Owner == "" && now.Sub(f.Seen) <= deadAfter && len(f.Spec) > 0 {
				adopt = append(adopt, f)
			} else if settled && now.Sub(f.Seen) > deadAfter {
				dead = append(dead, f)
			}
			continue
		}
		if fe.owner == sh.id {
			touch = append(touch, fe)
			fe.lastSeen = now
		} else if f.Seen.After(fe.lastSeen) {
			fe.lastSeen = f.Seen
		}
		fe.others = max(0, f.Used-fe.used)
		if f.Draining && !fe.draining {
			drained = append(drained, f.ID)
		}
		if fe.owner != sh.id && settled && now.Sub(fe.lastSeen) > deadAfter {
			dead = append(dead, f)
		}
	}
	for id, fe := range s.farms {
		if _, ok := stored[id]; ok {
			continue
		}
		switch {
		case fe.owner == sh.id:
			// The store lost it (a restarted Redis): put it back. A remote
			// farm is put back by its next heartbeat, if it still sends
			// them; one that left is not.
			reput = append(reput, fe)
		case settled && now.Sub(fe.lastSeen) > deadAfter:
			gone = append(gone, id)
		}
	}
	s.kickLocked() // others' counts may have dropped
	s.mu.Unlock()

	for _, fe := range touch {
		if now.Sub(fe.added) >= sh.m.cfg.HeartbeatInterval/2 {
			ctx, cancel := opCtx()
			_, err := sh.st.TouchFarm(ctx, fe.id, false)
			cancel()
			_ = sh.note(err)
		}
	}
	for _, fe := range reput {
		if sh.putFarm(fe) == nil {
			sh.m.log.Info("farm put back into the shared state", "farm", fe.id)
			sh.mu.Lock()
			sh.lostAll = true
			sh.mu.Unlock()
			sh.poke()
		}
	}
	for _, f := range dead {
		ctx, cancel := opCtx()
		removed, err := sh.st.RemoveFarm(ctx, f.ID)
		cancel()
		if sh.note(err) != nil {
			continue
		}
		cause := fmt.Errorf("farm %s missed %d heartbeats", f.ID, sh.m.cfg.MissedHeartbeats)
		if removed {
			sh.m.log.Warn("farm dead", "farm", f.ID, "silent_for", now.Sub(f.Seen).Round(time.Millisecond))
			sh.m.metrics.farmEvents.WithLabelValues("dead").Inc()
			sh.publish(store.Event{Type: store.EventFarmRemoved, Farm: f.ID})
		}
		s.removeFarm(f.ID, cause)
	}
	for _, id := range gone {
		s.removeFarm(id, fmt.Errorf("farm %s left the shared state", id))
	}
	for _, f := range adopt {
		sh.adopt(f)
	}
	for _, id := range drained {
		sessions, _ := s.drain(id)
		sh.m.notifyDraining(id, sessions)
	}
}

// adopt makes a farm another manager registered usable here.
func (sh *shared) adopt(f store.Farm) {
	var req farmapi.RegisterRequest
	if err := json.Unmarshal(f.Spec, &req); err != nil {
		sh.m.log.Error("stored farm registration unreadable", "farm", f.ID, "err", err)
		return
	}
	rf, err := newRemoteFarm(req, sh.m.cfg.FarmToken)
	if err != nil {
		sh.m.log.Error("stored farm registration unusable", "farm", f.ID, "err", err)
		return
	}
	s := sh.m.sched
	s.mu.Lock()
	known := s.farms[f.ID] != nil
	s.mu.Unlock()
	if known {
		return
	}
	s.addFarm(rf, true, "", f.Spec)
	s.mu.Lock()
	if fe := s.farms[f.ID]; fe != nil {
		fe.lastSeen = f.Seen
		fe.others = f.Used
		if f.Draining {
			s.drainLocked(fe)
		}
	}
	s.mu.Unlock()
	sh.m.log.Info("farm adopted from the shared state", "farm", f.ID, "url", req.URL, "slots", req.Slots)
}

// heartbeat records a farm's heartbeat in the store. It returns whether
// the farm is known (locally or in the store) and whether it should drain.
func (sh *shared) heartbeat(id string, hb farmapi.Heartbeat) (known, drain bool, err error) {
	s := sh.m.sched
	knownHere, drainHere, notify := s.heartbeat(id, hb)
	sh.m.notifyDraining(id, notify)
	if sh.down.Load() {
		if !knownHere {
			return false, false, ErrStoreUnavailable
		}
		return true, drainHere, nil
	}
	ctx, cancel := opCtx()
	f, err := sh.st.TouchFarm(ctx, id, hb.Draining)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		if !knownHere {
			return false, false, nil
		}
		s.mu.Lock()
		fe := s.farms[id]
		s.mu.Unlock()
		if fe != nil && sh.putFarm(fe) == nil {
			sh.mu.Lock()
			sh.lostAll = true
			sh.mu.Unlock()
			sh.poke()
		}
		return true, drainHere, nil
	case sh.note(err) != nil:
		if !knownHere {
			return false, false, ErrStoreUnavailable
		}
		return true, drainHere, nil
	}
	if !knownHere {
		sh.adopt(f)
	}
	sh.freeLeftovers(id, hb.Instances)
	return true, drainHere || f.Draining, nil
}

// freeLeftovers frees the reservations of a farm whose instances the farm
// no longer runs (their manager died, or stopped them while the store was
// away), and those a dead manager left starting.
func (sh *shared) freeLeftovers(farmID string, running []farmapi.Instance) {
	ctx, cancel := opCtx()
	defer cancel()
	slots, err := sh.st.Slots(ctx, farmID)
	if sh.note(err) != nil {
		return
	}
	live := make(map[string]bool, len(running))
	for _, inst := range running {
		live[inst.ID] = true
	}
	now := time.Now()
	for _, sl := range slots {
		if now.Sub(sl.Since) < slotSettle {
			continue
		}
		stale := sl.Instance != "" && !live[sl.Instance]
		if !stale && sl.Instance == "" && sl.Owner != sh.id && now.Sub(sl.Since) > startStale {
			alive, err := sh.st.ManagerAlive(ctx, sl.Owner)
			stale = err == nil && !alive
		}
		if stale {
			sh.m.log.Info("freeing a leftover reservation", "farm", farmID, "instance", sl.Instance, "owner", sl.Owner)
			sh.freeSlot(farmID, sl.ID)
		}
	}
}

// reconciler mends the store's records of this manager: reservations it
// holds but the store lost, reservations the store holds that it gave up
// while the store was away, session ttls, and deletes it could not make.
func (sh *shared) reconciler() {
	t := time.NewTicker(min(reconcileEvery, sh.touchEvery()))
	defer t.Stop()
	var lastTouch time.Time
	for {
		select {
		case <-sh.m.ctx.Done():
			return
		case <-sh.resync:
		case <-t.C:
		}
		if sh.down.Load() {
			continue
		}
		sh.reconcileSlots()
		sh.mu.Lock()
		lostAll := sh.lostAll
		sh.lostAll = false
		deletes := sh.deletes
		sh.deletes = nil
		sh.mu.Unlock()
		for _, h := range deletes {
			sh.deleteSession(h)
		}
		sessions := sh.m.resumableSessions()
		if lostAll {
			for _, s := range sessions {
				sh.putSession(s)
			}
		}
		if time.Since(lastTouch) >= sh.touchEvery() && len(sessions) > 0 {
			hashes := make([]string, len(sessions))
			for i, s := range sessions {
				hashes[i] = s.tokenHash
			}
			ctx, cancel := opCtx()
			if sh.note(sh.st.TouchSessions(ctx, sh.id, hashes, sh.sessionTTL())) == nil {
				lastTouch = time.Now()
			}
			cancel()
		}
	}
}

func (sh *shared) reconcileSlots() {
	s := sh.m.sched
	s.mu.Lock()
	ids := make([]string, 0, len(s.farms))
	for id := range s.farms {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sh.claimMu.Lock()
	defer sh.claimMu.Unlock()
	for _, id := range ids {
		ctx, cancel := opCtx()
		slots, err := sh.st.Slots(ctx, id)
		cancel()
		if sh.note(err) != nil {
			return
		}
		// The books are read after the store: a reservation made in between
		// is pending here, one dropped in between is freed twice.
		stored := make(map[string]bool, len(slots))
		var stale []string
		var missing []store.Slot
		s.mu.Lock()
		held := map[string]bool{}
		for _, inst := range s.instances {
			if inst.farm.id == id && inst.slot != "" {
				held[inst.slot] = true
			}
		}
		for _, sl := range slots {
			stored[sl.ID] = true
			_, pending := s.pending[sl.ID]
			if sl.Owner == sh.id && !held[sl.ID] && !pending {
				stale = append(stale, sl.ID)
			}
		}
		for _, inst := range s.instances {
			if inst.farm.id != id || inst.slot == "" || stored[inst.slot] {
				continue
			}
			sl := store.Slot{ID: inst.slot, Owner: sh.id, Pool: inst.pool.cfg.Name, Instance: inst.info.ID,
				State: store.SlotIdle}
			if inst.state == instBound && inst.sess != nil {
				sl.State, sl.Session = store.SlotBound, inst.sess.info.ID
			}
			missing = append(missing, sl)
		}
		s.mu.Unlock()
		for _, slot := range stale {
			sh.freeSlot(id, slot)
		}
		for _, sl := range missing {
			if err := sh.reserve(id, sl); err != nil {
				sh.m.log.Warn("could not record an instance in the shared state", "instance", sl.Instance, "err", err)
			}
		}
	}
}

// listen acts on other managers' events for as long as the manager runs,
// subscribing again after the store comes back.
func (sh *shared) listen() {
	for sh.m.ctx.Err() == nil {
		ch, err := sh.st.Subscribe(sh.m.ctx)
		if sh.note(err) != nil {
			select {
			case <-sh.m.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for e := range ch {
			sh.handle(e)
		}
	}
}

// watch returns a channel of every event the manager hears, for an event
// stream; a watcher that falls behind loses events. stop ends the watch.
func (sh *shared) watch() (<-chan store.Event, func()) {
	ch := make(chan store.Event, 64)
	sh.mu.Lock()
	sh.watchers[ch] = struct{}{}
	sh.mu.Unlock()
	return ch, func() {
		sh.mu.Lock()
		delete(sh.watchers, ch)
		sh.mu.Unlock()
	}
}

func (sh *shared) hush() { sh.quietOnce.Do(func() { close(sh.quiet) }) }

func (sh *shared) handle(e store.Event) {
	sh.mu.Lock()
	for ch := range sh.watchers {
		select {
		case ch <- e:
		default:
		}
	}
	sh.mu.Unlock()
	s := sh.m.sched
	switch e.Type {
	case store.EventFarmAdded:
		if e.Manager != sh.id {
			sh.syncFarms(time.Now())
		}
	case store.EventFarmRemoved:
		if e.Manager != sh.id {
			s.removeFarm(e.Farm, fmt.Errorf("farm %s left", e.Farm))
		}
	case store.EventFarmDraining:
		if e.Manager != sh.id {
			sessions, _ := s.drain(e.Farm)
			sh.m.notifyDraining(e.Farm, sessions)
		}
	case store.EventSlotFreed:
		if e.Manager != sh.id {
			s.mu.Lock()
			if fe := s.farms[e.Farm]; fe != nil && fe.others > 0 {
				fe.others--
			}
			s.kickLocked()
			s.mu.Unlock()
		}
	case store.EventSessionMoved:
		if e.From == sh.id && e.Manager != sh.id {
			if sess := sh.m.sessionByID(e.Session); sess != nil {
				sess.handOff(e.Manager)
			}
			sh.publish(store.Event{Type: store.EventSessionReleased, Session: e.Session})
		}
	case store.EventSessionReleased:
		sh.mu.Lock()
		if ch := sh.released[e.Session]; ch != nil {
			close(ch)
			delete(sh.released, e.Session)
		}
		sh.mu.Unlock()
	}
}

// claim takes over the session of a resume token from the store: from a
// manager that died, or from one that lives and lets go of it first.
func (sh *shared) claim(ctx context.Context, tok string) (store.Session, error) {
	if err := sh.usable(); err != nil {
		return store.Session{}, err
	}
	hash := tokenHash(tok)
	released := make(chan struct{})
	sh.claimMu.RLock()
	defer sh.claimMu.RUnlock()
	cctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
	defer cancel()
	rec, err := sh.st.ClaimSession(cctx, hash, sh.id, sh.sessionTTL())
	if err != nil {
		return store.Session{}, sh.note(err)
	}
	// The caller adopts the slot or lets it go (unpend).
	sh.m.sched.mu.Lock()
	sh.m.sched.pending[rec.Slot] = struct{}{}
	sh.m.sched.mu.Unlock()
	if rec.Owner == sh.id {
		return rec, nil
	}
	alive, err := sh.st.ManagerAlive(cctx, rec.Owner)
	if err != nil || !alive {
		return rec, sh.note(err)
	}
	sh.mu.Lock()
	sh.released[rec.ID] = released
	sh.mu.Unlock()
	sh.publish(store.Event{Type: store.EventSessionMoved, Session: rec.ID, From: rec.Owner})
	// The old owner answers at once if it lives; if it just died, its
	// liveness record says so within a few heartbeat intervals.
	deadline := time.NewTimer(handoffWait)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case <-released:
			break wait
		case <-poll.C:
			pctx, cancel := opCtx()
			alive, err := sh.st.ManagerAlive(pctx, rec.Owner)
			cancel()
			if err == nil && !alive {
				break wait
			}
		case <-deadline.C:
			sh.m.log.Warn("previous manager did not let go of the session in time", "session", rec.ID, "manager", rec.Owner)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	sh.mu.Lock()
	delete(sh.released, rec.ID)
	sh.mu.Unlock()
	return rec, ctx.Err()
}

// leave tells the store this manager is gone, so that a resume does not
// wait for it to let go of its sessions.
func (sh *shared) leave() {
	ctx, cancel := opCtx()
	defer cancel()
	_ = sh.st.Gone(ctx, sh.id)
}
