package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/session"
)

// Farm is the manager's handle on a farm: the local one in the same process,
// or (later) a remote one reached over REST. *farm.Farm implements it.
type Farm interface {
	ID() string
	Slots() int
	Pools() []string
	// StartInstance starts an instance of pool and returns once it is ready.
	StartInstance(ctx context.Context, pool string) (farm.Instance, error)
	// StopInstance stops an instance; farm.ErrNotFound counts as stopped.
	StopInstance(ctx context.Context, id string) error
}

var _ Farm = (*farm.Farm)(nil)

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
	info      farm.Instance
	pool      *poolState
	farm      *farmEntry
	conn      *instConn
	state     instState
	sess      *Session
	idleSince time.Time
}

type farmEntry struct {
	f        Farm
	id       string
	slots    int
	used     int // slots reserved: instances alive or starting
	pools    map[string]bool
	labels   map[string]string
	priority int
	draining bool
	added    time.Time
	// remote farms send heartbeats; local ones are alive while added.
	remote   bool
	lastSeen time.Time
}

func (fe *farmEntry) free() int { return fe.slots - fe.used }

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
}

func newScheduler(m *Manager, pools []Pool) *scheduler {
	s := &scheduler{
		m:         m,
		farms:     map[string]*farmEntry{},
		instances: map[string]*instance{},
		pools:     map[string]*poolState{},
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

// addFarm makes a farm's slots available. A farm already known by that id
// is replaced: it restarted, and whatever ran on it before is lost.
func (s *scheduler) addFarm(f Farm, remote bool) {
	now := time.Now()
	fe := &farmEntry{f: f, id: f.ID(), slots: f.Slots(), pools: map[string]bool{}, added: now,
		remote: remote, lastSeen: now}
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
func (s *scheduler) heartbeat(id string, hb farm.Heartbeat) (known, drain bool, notify []*Session) {
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

// silentFarms returns the remote farms not heard from within d.
func (s *scheduler) silentFarms(now time.Time, d time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, fe := range s.farms {
		if fe.remote && now.Sub(fe.lastSeen) > d {
			ids = append(ids, id)
		}
	}
	return ids
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
		inst, err := s.spawn(ctx, g.farm, p, sess)
		if err == nil {
			return inst, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.m.log.Warn("spawn for session failed", "pool", p.cfg.Name, "farm", g.farm.id, "attempt", attempt+1, "err", err)
		if errors.Is(err, farm.ErrStartTimeout) {
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
	// Earlier waiters of this pool come first.
	if !s.hasWaiterLocked(p) {
		if g, ok := s.serveLocked(sess, p); ok {
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
func (s *scheduler) serveLocked(sess *Session, p *poolState) (grant, bool) {
	for i, inst := range p.idle {
		if sess.stream || inst.farm.draining || !inst.farm.matches(sess.labels) {
			continue
		}
		p.idle = slices.Delete(p.idle, i, i+1)
		s.bindLocked(inst, sess)
		return grant{inst: inst}, true
	}
	if fe := s.farmForLocked(p, sess.labels); fe != nil {
		fe.used++
		p.startingBound++
		return grant{farm: fe}, true
	}
	return grant{}, false
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
		g.farm.used--
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
		for _, w := range s.queue {
			if g, ok := s.serveLocked(w.sess, w.pool); ok {
				w.grant <- g
				continue
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
	now := time.Now()
	for _, p := range s.pools {
		for len(p.idle)+p.startingWarm < p.cfg.Warm {
			if now.Before(p.retryAt) {
				s.retryLaterLocked(p, p.retryAt.Sub(now))
				break
			}
			fe := s.farmForLocked(p, nil)
			if fe == nil {
				break
			}
			fe.used++
			p.startingWarm++
			s.m.goTracked(func() { s.spawnWarm(fe, p) })
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

func (s *scheduler) spawnWarm(fe *farmEntry, p *poolState) {
	// Bounded so that a farm that hangs cannot hold the slot for ever.
	ctx, cancel := context.WithTimeout(s.m.ctx, 2*time.Minute)
	defer cancel()
	inst, err := s.start(ctx, fe, p, farm.StartOptions{})
	s.mu.Lock()
	defer s.mu.Unlock()
	p.startingWarm--
	if err != nil {
		fe.used--
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
func (s *scheduler) spawn(ctx context.Context, fe *farmEntry, p *poolState, sess *Session) (*instance, error) {
	inst, err := s.start(ctx, fe, p, sess.startOpts)
	s.mu.Lock()
	defer s.mu.Unlock()
	p.startingBound--
	if err != nil {
		fe.used--
		s.kickLocked()
		return nil, err
	}
	if s.closed {
		s.stopAsyncLocked(inst)
		return nil, ErrShutdown
	}
	if s.farms[fe.id] != fe {
		s.stopAsyncLocked(inst)
		return nil, fmt.Errorf("farm %s left while the instance started", fe.id)
	}
	s.instances[inst.info.ID] = inst
	s.bindLocked(inst, sess)
	return inst, nil
}

// starterWith is an optional Farm capability: starting an instance with
// per-instance options (a model for stream sessions).
type starterWith interface {
	StartInstanceWith(ctx context.Context, pool string, opts farm.StartOptions) (farm.Instance, error)
}

// start asks a farm for an instance and connects to it. The slot stays
// reserved by the caller. Stream instances get no connection: their
// clients' bytes are relayed to them.
func (s *scheduler) start(ctx context.Context, fe *farmEntry, p *poolState, opts farm.StartOptions) (*instance, error) {
	begin := time.Now()
	var info farm.Instance
	var err error
	if sw, ok := fe.f.(starterWith); ok {
		info, err = sw.StartInstanceWith(ctx, p.cfg.Name, opts)
	} else if opts != (farm.StartOptions{}) {
		err = errors.New("the farm cannot start instances with options")
	} else {
		info, err = fe.f.StartInstance(ctx, p.cfg.Name)
	}
	if err != nil {
		s.m.metrics.spawns.WithLabelValues(p.cfg.Name, "error").Inc()
		return nil, fmt.Errorf("start on farm %s: %w", fe.id, err)
	}
	inst := &instance{info: info, pool: p, farm: fe}
	if info.Protocol == farm.ProtocolStream {
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
		if serr := fe.f.StopInstance(stopCtx, info.ID); serr != nil && !errors.Is(serr, farm.ErrNotFound) {
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
		inst.conn != nil && inst.conn.clean() {
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
		if err := inst.farm.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farm.ErrNotFound) {
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
	if inst.state == instGone {
		return
	}
	if inst.state == instIdle {
		inst.pool.idle = slices.DeleteFunc(inst.pool.idle, func(i *instance) bool { return i == inst })
	}
	inst.state = instGone
	inst.sess = nil
	delete(s.instances, inst.info.ID)
	inst.farm.used--
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
		if err := inst.farm.f.StopInstance(ctx, inst.info.ID); err != nil && !errors.Is(err, farm.ErrNotFound) {
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
}

// Ratio is Busy/Slots, or 1 when there are no slots.
func (c Capacity) Ratio() float64 {
	if c.Slots <= 0 {
		return 1
	}
	return float64(c.Busy) / float64(c.Slots)
}

func (s *scheduler) capacity() Capacity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacityLocked()
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
	case errors.Is(err, context.DeadlineExceeded):
		return session.CodeTimeout
	}
	var se *session.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return session.CodeInternal
}
