package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/store"
)

// Farm is the manager's handle on a farm: the local one in the same process,
// or (later) a remote one reached over REST. *farm.Farm implements it.
type Farm interface {
	ID() string
	Slots() int
	Pools() []string
	// StartInstance starts an instance of pool and returns once it is ready.
	StartInstance(ctx context.Context, pool string) (farmapi.Instance, error)
	// StopInstance stops an instance; farmapi.ErrNotFound counts as stopped.
	StopInstance(ctx context.Context, id string) error
}

// placementInfo is an optional Farm capability: labels that clients can ask
// for with ?labels=k=v, and a priority (higher farms are filled first).
type placementInfo interface {
	Labels() map[string]string
	Priority() int
}

type instState uint8

const (
	instIdle instState = iota
	instBound
	instStopping
	instGone
)

func (s instState) String() string {
	return [...]string{"idle", "bound", "stopping", "gone"}[s]
}

// instance is the manager's view of one ready instance.
type instance struct {
	info      farmapi.Instance
	pool      *poolState
	farm      *farmEntry
	conn      *instConn
	state     instState
	sess      *Session
	idleSince time.Time
	// slot is the instance's reservation in the store.
	slot string
}

type farmEntry struct {
	f     Farm
	id    string
	slots int
	used  int // slots this manager reserved: instances alive or starting
	// others are the slots other managers hold, as the store last said;
	// a Reserve refused as full raises it until the next look.
	others   int
	owner    string // the store's Owner: set for a farm in a manager's process
	spec     []byte // the registration, as stored, for remote farms
	pools    map[string]bool
	labels   map[string]string
	priority int
	draining bool
	added    time.Time
	// remote farms send heartbeats; local ones are alive while added.
	remote   bool
	lastSeen time.Time
}

func (fe *farmEntry) free() int { return fe.slots - fe.used - fe.others }

// matches reports whether the farm has every label asked for.
func (fe *farmEntry) matches(want map[string]string) bool {
	for k, v := range want {
		if fe.labels[k] != v {
			return false
		}
	}
	return true
}

type poolState struct {
	cfg     Pool
	metrics poolMetrics
	// idle holds the idle instances, oldest first: the oldest is handed out
	// first so that every instance gets exercised.
	idle []*instance
	// startingWarm counts spawns that refill the warm pool; startingBound
	// counts spawns made for a session that waits for them (busy).
	startingWarm  int
	startingBound int
	failures      int
	retryAt       time.Time
	retryTimer    *time.Timer
}

// grant is what placement hands a session: an idle instance already bound
// to it, or a slot reserved on a farm where the session spawns one.
type grant struct {
	inst *instance
	farm *farmEntry
	slot string // the reservation made on farm
	err  error
}

type waiter struct {
	pool  *poolState
	sess  *Session
	since time.Time
	grant chan grant // buffered 1; receives exactly once
	pos   chan int   // buffered 1; the latest position
	last  int
}

// scheduler owns farms, instances, the wait queue and the warm pools. Its
// lock is taken when sessions are placed and released, never per task.
type scheduler struct {
	m         *Manager
	mu        sync.Mutex
	farms     map[string]*farmEntry
	instances map[string]*instance
	pools     map[string]*poolState
	queue     []*waiter
	closed    bool
	// pending are reservations whose instance is not on the books yet:
	// the store's view of them must not be reconciled away.
	pending map[string]struct{}
}

func newScheduler(m *Manager, pools []Pool) *scheduler {
	s := &scheduler{
		m:         m,
		farms:     map[string]*farmEntry{},
		instances: map[string]*instance{},
		pools:     map[string]*poolState{},
		pending:   map[string]struct{}{},
	}
	for _, p := range pools {
		s.pools[p.Name] = &poolState{cfg: p, metrics: m.metrics.forPool(p.Name)}
	}
	return s
}

func (s *scheduler) pool(name string) (*poolState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPool, name)
	}
	return p, nil
}

// addFarm makes a farm's slots available here; the caller has put it in
// the store. A farm already known by that id is replaced: it restarted, and
// whatever ran on it before is lost.
func (s *scheduler) addFarm(f Farm, remote bool, owner string, spec []byte) {
	now := time.Now()
	fe := &farmEntry{f: f, id: f.ID(), slots: f.Slots(), pools: map[string]bool{}, added: now,
		remote: remote, lastSeen: now, owner: owner, spec: spec}
	for _, p := range f.Pools() {
		fe.pools[p] = true
	}
	if pi, ok := f.(placementInfo); ok {
		fe.labels, fe.priority = pi.Labels(), pi.Priority()
	}
	s.mu.Lock()
	old := s.farms[fe.id]
	for _, p := range f.Pools() {
		if _, ok := s.pools[p]; !ok {
			// A farm may bring pools the manager was not told about: they
			// get the default policy.
			cfg := Pool{Name: p}
			cfg.defaults()
			s.pools[p] = &poolState{cfg: cfg, metrics: s.m.metrics.forPool(p)}
		}
	}
	s.mu.Unlock()
	if old != nil {
		s.removeFarm(fe.id, errors.New("the farm registered again"))
	}
	s.mu.Lock()
	s.farms[fe.id] = fe
	s.kickLocked()
	s.mu.Unlock()
}

// removeFarm forgets a farm that died or left. Its instances are lost: their
// sessions get instance_lost, and nothing is asked of the farm any more.
func (s *scheduler) removeFarm(id string, cause error) bool {
	s.mu.Lock()
	fe := s.farms[id]
	if fe == nil {
		s.mu.Unlock()
		return false
	}
	delete(s.farms, id)
	var gone []*instance
	for _, inst := range s.instances {
		if inst.farm == fe {
			gone = append(gone, inst)
		}
	}
	s.mu.Unlock()
	for _, inst := range gone {
		s.lost(inst, cause, false)
	}
	s.mu.Lock()
	s.kickLocked()
	s.mu.Unlock()
	return true
}

// heartbeat records a farm's report; it returns whether the farm is known
// and whether it should drain.
func (s *scheduler) heartbeat(id string, hb farmapi.Heartbeat) (known, drain bool, notify []*Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fe := s.farms[id]
	if fe == nil {
		return false, false, nil
	}
	fe.lastSeen = time.Now()
	if hb.Draining && !fe.draining {
		notify = s.drainLocked(fe)
	}
	return true, fe.draining, notify
}

// drain stops placing sessions on a farm; its sessions are returned so the
// caller can tell them.
func (s *scheduler) drain(id string) ([]*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fe := s.farms[id]
	if fe == nil {
		return nil, false
	}
	if fe.draining {
		return nil, true
	}
	return s.drainLocked(fe), true
}

func (s *scheduler) drainLocked(fe *farmEntry) []*Session {
	fe.draining = true
	var sessions []*Session
	for _, inst := range s.instances {
		if inst.farm != fe {
			continue
		}
		switch inst.state {
		case instIdle:
			inst.pool.idle = slices.DeleteFunc(inst.pool.idle, func(i *instance) bool { return i == inst })
			s.stopAsyncLocked(inst)
		case instBound:
			sessions = append(sessions, inst.sess)
		}
	}
	s.kickLocked()
	return sessions
}

// rejoin takes a registration of a known farm that still runs instances
// of this manager for a farm that did not restart: the entry and its
// instances stay. It reports whether it did.
func (s *scheduler) rejoin(req farmapi.RegisterRequest, spec []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fe := s.farms[req.ID]
	if fe == nil || !fe.remote {
		return false
	}
	running := make(map[string]bool, len(req.Instances))
	for _, inst := range req.Instances {
		running[inst.ID] = true
	}
	for _, inst := range s.instances {
		if inst.farm == fe && running[inst.info.ID] {
			fe.lastSeen = time.Now()
			fe.spec = spec
			return true
		}
	}
	return false
}

// acquire binds sess to an instance of its pool: an idle one, else a fresh
// spawn, else (when wait) a place in the queue until one of those is
// possible. queued is told each new queue position.
func (s *scheduler) acquire(ctx context.Context, sess *Session, p *poolState, wait bool, queued func(int)) (*instance, error) {
	const maxSpawnAttempts = 3
	var lastErr error
	for attempt := 0; attempt < maxSpawnAttempts; attempt++ {
		g, w := s.place(sess, p, wait)
		if w != nil {
			g = s.wait(ctx, w, queued)
		}
		if g.err != nil {
			return nil, g.err
		}
		if g.inst != nil {
			return g.inst, nil
		}
		inst, err := s.spawn(ctx, g, p, sess)
		if err == nil {
			return inst, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.m.log.Warn("spawn for session failed", "pool", p.cfg.Name, "farm", g.farm.id, "attempt", attempt+1, "err", err)
		if errors.Is(err, farmapi.ErrStartTimeout) {
			// The farm waited out the pool's start timeout, after the spawn
			// retries the pool allows (dial pools): another round here
			// would multiply them, and the client's wait with them.
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrSpawnFailed, lastErr)
}

// place tries to serve a session at once; with wait it queues it otherwise.
func (s *scheduler) place(sess *Session, p *poolState, wait bool) (grant, *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return grant{err: ErrShutdown}, nil
	}
	if err := s.m.shared.usable(); err != nil {
		return grant{err: err}, nil
	}
	// Earlier waiters of this pool come first.
	if !s.hasWaiterLocked(p) {
		g, ok, err := s.serveLocked(sess, p)
		if err != nil {
			return grant{err: err}, nil
		}
		if ok {
			if g.inst != nil {
				s.refillLocked() // an idle instance was taken: warm another
			}
			return g, nil
		}
	}
	if !wait {
		return grant{err: ErrNoCapacity}, nil
	}
	w := &waiter{pool: p, sess: sess, since: time.Now(), grant: make(chan grant, 1), pos: make(chan int, 1)}
	s.queue = append(s.queue, w)
	s.m.metrics.queueLength.Set(float64(len(s.queue)))
	s.positionsLocked()
	return grant{}, w
}

func (s *scheduler) hasWaiterLocked(p *poolState) bool {
	for _, w := range s.queue {
		if w.pool == p {
			return true
		}
	}
	return false
}

// serveLocked hands out an idle instance or reserves a slot for a spawn.
// Both go through the store, which makes them atomic across managers; an
// error means the store cannot be reached.
func (s *scheduler) serveLocked(sess *Session, p *poolState) (grant, bool, error) {
	for i := 0; i < len(p.idle); i++ {
		inst := p.idle[i]
		if sess.stream || inst.farm.draining || !inst.farm.matches(sess.labels) {
			continue
		}
		err := s.m.shared.updateSlot(inst.farm.id, store.Slot{ID: inst.slot, Pool: p.cfg.Name,
			Instance: inst.info.ID, State: store.SlotBound, Session: sess.info.ID}, store.SlotIdle)
		if errors.Is(err, store.ErrUnavailable) {
			return grant{}, false, err
		}
		p.idle = slices.Delete(p.idle, i, i+1)
		i--
		if err != nil {
			// The store lost the reservation (its farm left): nobody can
			// count on this instance any more.
			s.m.log.Warn("idle instance lost its reservation", "instance", inst.info.ID, "err", err)
			s.stopAsyncLocked(inst)
			continue
		}
		s.bindLocked(inst, sess)
		return grant{inst: inst}, true, nil
	}
	slot, fe, err := s.reserveLocked(p, sess.labels, sess.info.ID)
	if err != nil || fe == nil {
		return grant{}, false, err
	}
	p.startingBound++
	return grant{farm: fe, slot: slot}, true, nil
}

// reserveLocked reserves a slot for an instance of p in the store, on the
// best farm that has one; session is the session it starts for, if any. It
// returns a nil farm when no farm has a free slot.
func (s *scheduler) reserveLocked(p *poolState, labels map[string]string, session string) (string, *farmEntry, error) {
	for {
		fe := s.farmForLocked(p, labels)
		if fe == nil {
			return "", nil, nil
		}
		slot := store.Slot{ID: newID(), Pool: p.cfg.Name, State: store.SlotStarting, Session: session}
		err := s.m.shared.reserve(fe.id, slot)
		switch {
		case err == nil:
			fe.used++
			s.pending[slot.ID] = struct{}{}
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
func (s *scheduler) unreserveLocked(fe *farmEntry, slot string) {
	fe.used--
	delete(s.pending, slot)
	s.m.shared.freeSlot(fe.id, slot)
}

// farmForLocked picks, among the live farms that run p and have the labels
// asked for, the one of highest priority with the most free slots.
func (s *scheduler) farmForLocked(p *poolState, labels map[string]string) *farmEntry {
	var best *farmEntry
	for _, fe := range s.farms {
		if fe.draining || !fe.pools[p.cfg.Name] || fe.free() <= 0 || !fe.matches(labels) {
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

func (s *scheduler) bindLocked(inst *instance, sess *Session) {
	inst.state = instBound
	inst.sess = sess
}

func (s *scheduler) wait(ctx context.Context, w *waiter, queued func(int)) grant {
	timeout := w.pool.cfg.QueueTimeout
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case g := <-w.grant:
			return g
		case pos := <-w.pos:
			if queued != nil {
				queued(pos)
			}
		case <-t.C:
			if g, ok := s.dequeue(w); ok {
				return g
			}
			return grant{err: fmt.Errorf("%w: waited %s", ErrQueueTimeout, timeout)}
		case <-ctx.Done():
			if g, ok := s.dequeue(w); ok {
				s.undo(g, w.pool)
				return grant{err: ctx.Err()}
			}
			return grant{err: ctx.Err()}
		}
	}
}

// dequeue removes w from the queue. If a grant raced the removal, it is
// returned with ok so the caller can use or undo it.
func (s *scheduler) dequeue(w *waiter) (grant, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.queue, w); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		s.m.metrics.queueLength.Set(float64(len(s.queue)))
		s.positionsLocked()
		return grant{}, false
	}
	select {
	case g := <-w.grant:
		return g, true
	default:
		return grant{}, false
	}
}

// undo gives back a grant its waiter can no longer use.
func (s *scheduler) undo(g grant, p *poolState) {
	switch {
	case g.inst != nil:
		s.release(g.inst, true)
	case g.farm != nil:
		s.mu.Lock()
		s.unreserveLocked(g.farm, g.slot)
		p.startingBound--
		s.kickLocked()
		s.mu.Unlock()
	}
}

// kickLocked serves waiters in order, then refills the warm pools.
func (s *scheduler) kickLocked() {
	if s.closed {
		return
	}
	if len(s.queue) > 0 {
		kept := s.queue[:0]
		storeDown := s.m.shared.usable() != nil
		for _, w := range s.queue {
			if !storeDown {
				g, ok, err := s.serveLocked(w.sess, w.pool)
				if ok {
					w.grant <- g
					continue
				}
				// Waiters keep their place while the store is away.
				storeDown = err != nil
			}
			kept = append(kept, w)
		}
		clear(s.queue[len(kept):])
		s.queue = kept
		s.m.metrics.queueLength.Set(float64(len(s.queue)))
		s.positionsLocked()
	}
	s.refillLocked()
}

// positionsLocked tells each waiter its 1-based position when it changed.
func (s *scheduler) positionsLocked() {
	for i, w := range s.queue {
		if w.last == i+1 {
			continue
		}
		w.last = i + 1
		select {
		case <-w.pos:
		default:
		}
		w.pos <- i + 1
	}
}

// refillLocked starts instances until every pool has its warm count of idle
// or starting instances, as far as free slots allow.
func (s *scheduler) refillLocked() {
	if s.closed {
		return
	}
	if s.m.shared.usable() != nil {
		return
	}
	now := time.Now()
	for _, p := range s.pools {
		for len(p.idle)+p.startingWarm < p.cfg.Warm {
			if now.Before(p.retryAt) {
				s.retryLaterLocked(p, p.retryAt.Sub(now))
				break
			}
			slot, fe, err := s.reserveLocked(p, nil, "")
			if err != nil || fe == nil {
				break
			}
			p.startingWarm++
			s.m.goTracked(func() { s.spawnWarm(fe, p, slot) })
		}
	}
}

func (s *scheduler) retryLaterLocked(p *poolState, d time.Duration) {
	if p.retryTimer != nil {
		return
	}
	p.retryTimer = time.AfterFunc(d, func() {
		s.mu.Lock()
		p.retryTimer = nil
		s.refillLocked()
		s.mu.Unlock()
	})
}

func (s *scheduler) spawnWarm(fe *farmEntry, p *poolState, slot string) {
	// Bounded so that a farm that hangs cannot hold the slot for ever.
	ctx, cancel := context.WithTimeout(s.m.ctx, 2*time.Minute)
	defer cancel()
	inst, err := s.start(ctx, fe, p, farmapi.StartOptions{})
	if err == nil {
		inst.slot = slot
		err = s.m.shared.updateSlot(fe.id, store.Slot{ID: slot, Pool: p.cfg.Name, Instance: inst.info.ID,
			State: store.SlotIdle}, store.SlotStarting)
		if err != nil {
			s.stopStarted(fe, inst)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p.startingWarm--
	if err != nil {
		s.unreserveLocked(fe, slot)
		p.failures++
		backoff := min(time.Duration(p.failures)*500*time.Millisecond, 30*time.Second)
		p.retryAt = time.Now().Add(backoff)
		if !s.closed {
			s.m.log.Warn("warm spawn failed", "pool", p.cfg.Name, "farm", fe.id, "retry_in", backoff, "err", err)
		}
		s.kickLocked()
		return
	}
	p.failures = 0
	delete(s.pending, slot)
	if s.closed || (inst.conn != nil && inst.conn.isClosed()) || s.farms[fe.id] != fe || fe.draining {
		s.stopAsyncLocked(inst)
		return
	}
	inst.state = instIdle
	inst.idleSince = time.Now()
	s.instances[inst.info.ID] = inst
	p.idle = append(p.idle, inst)
	s.kickLocked()
}

// spawn starts an instance on a slot reserved for sess and binds it.
func (s *scheduler) spawn(ctx context.Context, g grant, p *poolState, sess *Session) (*instance, error) {
	fe := g.farm
	inst, err := s.start(ctx, fe, p, sess.startOpts)
	if err == nil {
		inst.slot = g.slot
		err = s.m.shared.updateSlot(fe.id, store.Slot{ID: g.slot, Pool: p.cfg.Name, Instance: inst.info.ID,
			State: store.SlotBound, Session: sess.info.ID}, store.SlotStarting)
		if err != nil {
			s.stopStarted(fe, inst)
			err = fmt.Errorf("record the instance: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p.startingBound--
	if err != nil {
		s.unreserveLocked(fe, g.slot)
		s.kickLocked()
		return nil, err
	}
	delete(s.pending, g.slot)
	s.instances[inst.info.ID] = inst
	if s.closed {
		s.stopAsyncLocked(inst)
		return nil, ErrShutdown
	}
	if s.farms[fe.id] != fe {
		s.stopAsyncLocked(inst)
		return nil, fmt.Errorf("farm %s left while the instance started", fe.id)
	}
	s.bindLocked(inst, sess)
	return inst, nil
}

// starterWith is an optional Farm capability: starting an instance with
// per-instance options (a model for stream sessions).
type starterWith interface {
	StartInstanceWith(ctx context.Context, pool string, opts farmapi.StartOptions) (farmapi.Instance, error)
}

// start asks a farm for an instance and connects to it. The slot stays
// reserved by the caller. Stream instances get no connection: their
// clients' bytes are relayed to them.
func (s *scheduler) start(ctx context.Context, fe *farmEntry, p *poolState, opts farmapi.StartOptions) (*instance, error) {
	begin := time.Now()
	var info farmapi.Instance
	var err error
	if sw, ok := fe.f.(starterWith); ok {
		info, err = sw.StartInstanceWith(ctx, p.cfg.Name, opts)
	} else if opts != (farmapi.StartOptions{}) {
		err = errors.New("the farm cannot start instances with options")
	} else {
		info, err = fe.f.StartInstance(ctx, p.cfg.Name)
	}
	if err != nil {
		s.m.metrics.spawns.WithLabelValues(p.cfg.Name, "error").Inc()
		return nil, fmt.Errorf("start on farm %s: %w", fe.id, err)
	}
	inst := &instance{info: info, pool: p, farm: fe}
	if info.Protocol == farmapi.ProtocolStream {
		s.m.metrics.spawns.WithLabelValues(p.cfg.Name, "ok").Inc()
		s.m.metrics.spawnSeconds.Observe(time.Since(begin).Seconds())
		return inst, nil
	}
	conn, err := dialInstance(ctx, instanceURL(info), farmHeader(fe.f, info), s.m.cfg.MaxInstanceMessage,
		func(err error) { s.lost(inst, err, true) })
	if err != nil {
		s.m.metrics.spawns.WithLabelValues(p.cfg.Name, "error").Inc()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if serr := fe.f.StopInstance(stopCtx, info.ID); serr != nil && !errors.Is(serr, farmapi.ErrNotFound) {
			s.m.log.Warn("stop after failed connect", "instance", info.ID, "err", serr)
		}
		return nil, fmt.Errorf("connect to instance %s: %w", info.ID, err)
	}
	inst.conn = conn
	s.m.metrics.spawns.WithLabelValues(p.cfg.Name, "ok").Inc()
	s.m.metrics.spawnSeconds.Observe(time.Since(begin).Seconds())
	return inst, nil
}

// release ends a binding: the instance goes back to the idle pool when its
// pool reuses instances and it is clean, otherwise it is stopped.
func (s *scheduler) release(inst *instance, reusable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst.state != instBound {
		return
	}
	inst.sess = nil
	if reusable && inst.pool.cfg.Release == ReleaseReuse && !s.closed && !inst.farm.draining &&
		inst.conn != nil && inst.conn.clean() &&
		s.m.shared.updateSlot(inst.farm.id, store.Slot{ID: inst.slot, Pool: inst.pool.cfg.Name,
			Instance: inst.info.ID, State: store.SlotIdle}, store.SlotBound) == nil {
		inst.state = instIdle
		inst.idleSince = time.Now()
		inst.pool.idle = append(inst.pool.idle, inst)
		s.kickLocked()
		return
	}
	s.stopAsyncLocked(inst)
}

// stopAsyncLocked stops an instance in the background; its slot is freed
// when the farm confirms.
func (s *scheduler) stopAsyncLocked(inst *instance) {
	inst.state = instStopping
	inst.sess = nil
	s.m.goTracked(func() {
		if inst.conn != nil {
			inst.conn.close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := inst.farm.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farmapi.ErrNotFound) {
			s.m.log.Warn("stop instance", "instance", inst.info.ID, "err", err)
		}
		s.mu.Lock()
		s.removeLocked(inst)
		s.kickLocked()
		s.mu.Unlock()
	})
}

// removeLocked forgets an instance and frees its slot, once.
func (s *scheduler) removeLocked(inst *instance) {
	if s.dropLocked(inst) {
		s.m.shared.freeSlot(inst.farm.id, inst.slot)
	}
}

// forgetLocked drops an instance from the books without stopping it or
// freeing its reservation: another manager took it over with its session.
func (s *scheduler) forgetLocked(inst *instance) {
	if s.dropLocked(inst) {
		inst.farm.others++
	}
}

// dropLocked takes an instance off this manager's books; false when it
// was off them already.
func (s *scheduler) dropLocked(inst *instance) bool {
	if inst.state == instGone {
		return false
	}
	if inst.state == instIdle {
		inst.pool.idle = slices.DeleteFunc(inst.pool.idle, func(i *instance) bool { return i == inst })
	}
	inst.state = instGone
	inst.sess = nil
	delete(s.instances, inst.info.ID)
	inst.farm.used--
	return true
}

// stopStarted stops an instance that started but cannot be used.
func (s *scheduler) stopStarted(fe *farmEntry, inst *instance) {
	if inst.conn != nil {
		inst.conn.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := fe.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farmapi.ErrNotFound) {
		s.m.log.Warn("stop instance", "instance", inst.info.ID, "err", err)
	}
}

// lost handles an instance that died or whose connection broke: its session
// (if any) is told, the slot is freed and the pool refilled. stop asks the
// farm to make sure the process is gone (not for a farm that is gone).
func (s *scheduler) lost(inst *instance, cause error, stop bool) {
	s.mu.Lock()
	if inst.state == instGone || inst.state == instStopping {
		s.mu.Unlock()
		return
	}
	sess := inst.sess
	s.removeLocked(inst)
	s.kickLocked()
	s.mu.Unlock()
	s.m.metrics.instancesLost.Inc()
	s.m.log.Warn("instance lost", "instance", inst.info.ID, "pool", inst.pool.cfg.Name, "err", cause)
	s.m.goTracked(func() {
		if inst.conn != nil {
			inst.conn.close()
		}
		if !stop {
			return
		}
		// Make sure the process is gone too: the connection may have broken
		// while the process lives on.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := inst.farm.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farmapi.ErrNotFound) {
			s.m.log.Warn("stop lost instance", "instance", inst.info.ID, "err", err)
		}
	})
	if sess != nil {
		s.m.goTracked(func() { sess.instanceLost() })
	}
}

// instanceExited is the farm's report that an instance exited by itself.
func (s *scheduler) instanceExited(id string, err error) {
	s.mu.Lock()
	inst := s.instances[id]
	s.mu.Unlock()
	if inst != nil {
		s.lost(inst, fmt.Errorf("process exited: %w", err), true)
	}
}

// close refuses new placements, fails every waiter and stops idle instances.
func (s *scheduler) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, w := range s.queue {
		w.grant <- grant{err: ErrShutdown}
	}
	s.queue = nil
	for _, p := range s.pools {
		if p.retryTimer != nil {
			p.retryTimer.Stop()
		}
		for _, inst := range p.idle {
			s.stopAsyncLocked(inst)
		}
		p.idle = nil
	}
}

// Capacity is the input of the health rule.
type Capacity struct {
	Slots    int // slots of live farms that take sessions
	Busy     int // bound instances and spawns a session waits for
	Idle     int // ready instances nobody uses
	Starting int // all spawns under way
	Queued   int // sessions waiting
	// StoreDown: the shared state cannot be reached. Slots and Busy are
	// then this manager's own view, and no session can be placed.
	StoreDown bool
}

// Ratio is Busy/Slots, or 1 when there are no slots.
func (c Capacity) Ratio() float64 {
	if c.Slots <= 0 {
		return 1
	}
	return float64(c.Busy) / float64(c.Slots)
}

// capacity is the shared view of slots and busy ones (every manager's
// sessions), with this manager's idle, starting and queued counts.
func (s *scheduler) capacity() Capacity {
	s.mu.Lock()
	c := s.capacityLocked()
	s.mu.Unlock()
	if s.m.shared.usable() != nil {
		c.StoreDown = true
		return c
	}
	ctx, cancel := opCtx()
	defer cancel()
	sc, err := s.m.shared.st.Capacity(ctx)
	if s.m.shared.note(err) != nil {
		c.StoreDown = true
		return c
	}
	c.Slots, c.Busy = sc.Slots, sc.Busy
	return c
}

func (s *scheduler) capacityLocked() Capacity {
	var c Capacity
	for _, fe := range s.farms {
		if !fe.draining {
			c.Slots += fe.slots
		}
	}
	for _, p := range s.pools {
		c.Busy += p.startingBound
		c.Starting += p.startingBound + p.startingWarm
		c.Idle += len(p.idle)
	}
	for _, inst := range s.instances {
		if inst.state == instBound && !inst.farm.draining {
			c.Busy++
		}
	}
	c.Queued = len(s.queue)
	return c
}

// errorCode maps placement errors to protocol codes.
func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrNoCapacity), errors.Is(err, ErrQueueTimeout):
		return session.CodeNoCapacity
	case errors.Is(err, ErrUnknownPool), errors.Is(err, ErrSessionNotFound):
		return session.CodeNotFound
	case errors.Is(err, ErrShutdown):
		return session.CodeShutdown
	case errors.Is(err, ErrStoreUnavailable):
		return session.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return session.CodeTimeout
	}
	var se *session.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return session.CodeInternal
}

// forget drops an instance another manager took over, and closes this
// manager's connection to it; the instance keeps running.
func (s *scheduler) forget(inst *instance) {
	s.mu.Lock()
	s.forgetLocked(inst)
	s.kickLocked()
	s.mu.Unlock()
	if inst.conn != nil {
		inst.conn.close()
	}
}

// adopt puts an instance of a session resumed from another manager on the
// books, bound to sess.
func (s *scheduler) adopt(inst *instance, sess *Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.farms[inst.farm.id] != inst.farm {
		return false
	}
	inst.farm.used++
	inst.farm.others = max(0, inst.farm.others-1)
	s.instances[inst.info.ID] = inst
	s.bindLocked(inst, sess)
	return true
}
