package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/placement"
	"github.com/drover-dev/drover/store"
)

const (
	// storeOpTimeout bounds one store call made for a session.
	storeOpTimeout = 2 * time.Second
	// reconcileEvery is how often the manager compares its sessions with
	// the store's records and mends the difference.
	reconcileEvery = 2 * time.Second
	// handoffWait bounds the wait for a live manager to let go of a session
	// another manager resumes.
	handoffWait = 3 * time.Second
)

// shared is the manager's sessions' side of the store: resumable
// sessions, the events every manager and dashboard hears, and claims of
// sessions from other managers. The farms, reservations and instances in
// the store are placement's; so is the judgement of whether the store
// answers, which this side reports to and reads from.
//
// While the store is away, deletes are kept and made once it is back,
// and every resumable session is put again.
type shared struct {
	st    store.Store
	id    string
	place *placement.Placer // set once, before the manager runs
	log   *slog.Logger
	ctx   context.Context
	// resumeGrace is how long a dropped session stays resumable.
	resumeGrace time.Duration
	dropped     prometheus.Counter
	// resumable lists the sessions recorded in the store; movedAway lets
	// go of a session another manager resumed.
	resumable func() []*Session
	movedAway func(session, to string)

	events chan store.Event // to the publisher

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

// sharedDeps are what shared uses of the manager.
type sharedDeps struct {
	st          store.Store
	id          string
	log         *slog.Logger
	ctx         context.Context
	resumeGrace time.Duration
	dropped     prometheus.Counter
	resumable   func() []*Session
	movedAway   func(session, to string)
}

func newShared(d sharedDeps) *shared {
	return &shared{st: d.st, id: d.id, log: d.log, ctx: d.ctx, resumeGrace: d.resumeGrace, dropped: d.dropped,
		resumable: d.resumable, movedAway: d.movedAway,
		events: make(chan store.Event, 1024), released: map[string]chan struct{}{}, resync: make(chan struct{}, 1),
		watchers: map[chan store.Event]struct{}{}, quiet: make(chan struct{})}
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeOpTimeout)
}

// note reports what err says about the store's reachability to
// placement, which judges it for the manager, and returns it.
func (sh *shared) note(err error) error { return sh.place.StoreErr(err) }

func (sh *shared) down() bool { return sh.place.StoreUsable() != nil }

// resyncSessions is placement's word that the store answers again after
// an outage, or lost records: every resumable session is put again.
func (sh *shared) resyncSessions() {
	sh.mu.Lock()
	sh.lostAll = true
	sh.mu.Unlock()
	sh.poke()
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
		sh.dropped.Inc()
	}
}

// publisher sends queued events, so that nobody waits for the store on
// their account.
func (sh *shared) publisher() {
	for {
		select {
		case <-sh.ctx.Done():
			return
		case e := <-sh.events:
			ctx, cancel := opCtx()
			if err := sh.note(sh.st.Publish(ctx, e)); err != nil {
				sh.log.Debug("publish event", "type", e.Type, "err", err)
			}
			cancel()
		}
	}
}

// putSession makes a WebSocket session resumable through any manager.
func (sh *shared) putSession(s *Session) {
	if s.tokenHash == "" || s.inst == nil || sh.down() {
		return
	}
	rec, err := sh.sessionRecord(s)
	if err != nil {
		sh.log.Error("session record", "session", s.info.ID, "err", err)
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if err := sh.note(sh.st.PutSession(ctx, rec, sh.sessionTTL())); err != nil {
		sh.log.Warn("session not resumable elsewhere for now", "session", s.info.ID, "err", err)
	}
}

func (sh *shared) sessionRecord(s *Session) (store.Session, error) {
	inst, err := json.Marshal(s.inst.Info())
	if err != nil {
		return store.Session{}, err
	}
	return store.Session{ID: s.info.ID, TokenHash: s.tokenHash, Owner: sh.id, Pool: s.pool.cfg.Name,
		Farm: s.inst.Farm(), Slot: s.inst.Slot(), Instance: inst, Created: s.info.Created}, nil
}

// deleteSession forgets a session that ended here (not one another manager
// claimed: the store checks the owner).
func (sh *shared) deleteSession(hash string) {
	if hash == "" {
		return
	}
	if !sh.down() {
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
	return sh.resumeGrace + sh.touchEvery()
}

func (sh *shared) touchEvery() time.Duration {
	return max(sh.resumeGrace/3, 100*time.Millisecond)
}

// reconciler mends the store's records of this manager's sessions:
// deletes it could not make, sessions the store lost, and their ttls.
func (sh *shared) reconciler() {
	t := time.NewTicker(min(reconcileEvery, sh.touchEvery()))
	defer t.Stop()
	var lastTouch time.Time
	for {
		select {
		case <-sh.ctx.Done():
			return
		case <-sh.resync:
		case <-t.C:
		}
		if sh.down() {
			continue
		}
		sh.mu.Lock()
		lostAll := sh.lostAll
		sh.lostAll = false
		deletes := sh.deletes
		sh.deletes = nil
		sh.mu.Unlock()
		for _, h := range deletes {
			sh.deleteSession(h)
		}
		sessions := sh.resumable()
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

// listen acts on other managers' events for as long as the manager runs,
// subscribing again after the store comes back.
func (sh *shared) listen() {
	for sh.ctx.Err() == nil {
		ch, err := sh.st.Subscribe(sh.ctx)
		if sh.note(err) != nil {
			select {
			case <-sh.ctx.Done():
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
	switch e.Type {
	case store.EventFarmAdded, store.EventFarmRemoved, store.EventFarmDraining, store.EventSlotFreed:
		sh.place.HandleEvent(e)
	case store.EventSessionMoved:
		if e.From == sh.id && e.Manager != sh.id {
			sh.movedAway(e.Session, e.Manager)
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
// manager that died, or from one that lives and lets go of it first. The
// session's slot is kept from placement's reconciler until the caller
// adopts its instance or unpends it.
func (sh *shared) claim(ctx context.Context, tok string) (store.Session, error) {
	if err := sh.place.StoreUsable(); err != nil {
		return store.Session{}, err
	}
	hash := tokenHash(tok)
	released := make(chan struct{})
	cctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
	defer cancel()
	var rec store.Session
	err := sh.place.Claim(func() (string, error) {
		var err error
		rec, err = sh.st.ClaimSession(cctx, hash, sh.id, sh.sessionTTL())
		return rec.Slot, err
	})
	if err != nil {
		return store.Session{}, sh.note(err)
	}
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
			sh.log.Warn("previous manager did not let go of the session in time", "session", rec.ID, "manager", rec.Owner)
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
