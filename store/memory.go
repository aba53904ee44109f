package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// subscriberBuffer is how many events a subscriber may fall behind before
// it loses events. Publishing never waits for a subscriber: a manager that
// misses events resynchronises from Farms and Slots.
const subscriberBuffer = 256

// Memory is a Store in the process: one manager (`drover up`), or tests.
//
// Sessions and manager records expire at their deadline, checked whenever
// they are read; PutSession and Alive also look at two other entries and
// drop them if expired, which in a steady state keeps the maps within
// about twice their live entries, without a timer. Events go to every
// subscriber through a buffered channel: a subscriber more than
// subscriberBuffer events behind loses the newer ones, as it would across
// a Redis outage.
type Memory struct {
	mu       sync.Mutex
	closed   bool
	farms    map[string]*memFarm
	sessions map[string]memSession // by token hash
	managers map[string]time.Time  // id → deadline

	subMu sync.Mutex
	subs  map[chan Event]struct{}
	done  chan struct{} // closed by Close: subscriptions end
	wg    sync.WaitGroup
}

var _ Store = (*Memory)(nil)

// Private reports true: the records live in this process alone.
func (*Memory) Private() bool { return true }

type memFarm struct {
	f     Farm
	slots map[string]Slot
}

type memSession struct {
	s        Session
	deadline time.Time
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory {
	return &Memory{
		farms:    map[string]*memFarm{},
		sessions: map[string]memSession{},
		managers: map[string]time.Time{},
		subs:     map[chan Event]struct{}{},
		done:     make(chan struct{}),
	}
}

var errClosed = fmt.Errorf("%w: store closed", ErrUnavailable)

// wallNow is now without the monotonic reading, for the times the store
// hands out: they compare and print like the ones Redis returns.
// Deadlines keep the reading.
func wallNow() time.Time { return time.Now().Round(0) }

// lock takes m.mu unless ctx is done or the store closed.
func (m *Memory) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errClosed
	}
	return nil
}

// lockFarm takes m.mu like lock and looks farm up: ErrNotFound (with m.mu
// released) when it is not registered.
func (m *Memory) lockFarm(ctx context.Context, farm string) (*memFarm, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	mf, ok := m.farms[farm]
	if !ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: farm %q", ErrNotFound, farm)
	}
	return mf, nil
}

// expired reports whether deadline has passed. One rule for reads and
// cleanup: an entry is gone from its deadline on.
func expired(deadline, now time.Time) bool { return !now.Before(deadline) }

// sweep drops up to two expired sessions and manager records; map
// iteration starts at a random entry.
func (m *Memory) sweep(now time.Time) {
	n := 0
	for k, s := range m.sessions {
		if n++; n > 2 {
			break
		}
		if expired(s.deadline, now) {
			delete(m.sessions, k)
		}
	}
	n = 0
	for k, d := range m.managers {
		if n++; n > 2 {
			break
		}
		if expired(d, now) {
			delete(m.managers, k)
		}
	}
}

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("store: ttl %v is not positive", ttl)
	}
	return nil
}

func (mf *memFarm) farm() Farm {
	f := mf.f
	f.Spec = slices.Clone(f.Spec)
	f.Used, f.Busy = len(mf.slots), 0
	for _, s := range mf.slots {
		if s.Busy() {
			f.Busy++
		}
	}
	return f
}

// PutFarm implements Store.
func (m *Memory) PutFarm(ctx context.Context, f Farm) error {
	if f.ID == "" {
		return errors.New("store: farm without id")
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	f.Spec = slices.Clone(f.Spec)
	f.Seen, f.Used, f.Busy = wallNow(), 0, 0
	m.farms[f.ID] = &memFarm{f: f, slots: map[string]Slot{}}
	return nil
}

// TouchFarm implements Store.
func (m *Memory) TouchFarm(ctx context.Context, id string, draining bool) (Farm, error) {
	mf, err := m.lockFarm(ctx, id)
	if err != nil {
		return Farm{}, err
	}
	defer m.mu.Unlock()
	mf.f.Seen = wallNow()
	mf.f.Draining = mf.f.Draining || draining
	return mf.farm(), nil
}

// DrainFarm implements Store.
func (m *Memory) DrainFarm(ctx context.Context, id string) error {
	mf, err := m.lockFarm(ctx, id)
	if err != nil {
		return err
	}
	defer m.mu.Unlock()
	mf.f.Draining = true
	return nil
}

// RemoveFarm implements Store.
func (m *Memory) RemoveFarm(ctx context.Context, id string) (bool, error) {
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	_, ok := m.farms[id]
	delete(m.farms, id)
	return ok, nil
}

// Farms implements Store.
func (m *Memory) Farms(ctx context.Context) ([]Farm, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	farms := make([]Farm, 0, len(m.farms))
	for _, mf := range m.farms {
		farms = append(farms, mf.farm())
	}
	slices.SortFunc(farms, func(a, b Farm) int { return cmp.Compare(a.ID, b.ID) })
	return farms, nil
}

// Reserve implements Store. Reserving a slot id the owner already holds on
// the farm succeeds and changes nothing (a retried call); one another owner
// holds is ErrConflict.
func (m *Memory) Reserve(ctx context.Context, farm string, s Slot) error {
	if s.ID == "" {
		return errors.New("store: slot without id")
	}
	mf, err := m.lockFarm(ctx, farm)
	if err != nil {
		return err
	}
	defer m.mu.Unlock()
	if old, ok := mf.slots[s.ID]; ok {
		if old.Owner == s.Owner {
			return nil
		}
		return fmt.Errorf("%w: slot %q of farm %q is another owner's", ErrConflict, s.ID, farm)
	}
	switch {
	case mf.f.Draining:
		return fmt.Errorf("%w: %q", ErrDraining, farm)
	case len(mf.slots) >= mf.f.Slots:
		return fmt.Errorf("%w: %q", ErrFull, farm)
	}
	s.Since = wallNow()
	mf.slots[s.ID] = s
	return nil
}

// UpdateSlot implements Store.
func (m *Memory) UpdateSlot(ctx context.Context, farm string, s Slot, from SlotState) error {
	mf, err := m.lockFarm(ctx, farm)
	if err != nil {
		return err
	}
	defer m.mu.Unlock()
	cur, ok := mf.slots[s.ID]
	switch {
	case !ok:
		return fmt.Errorf("%w: slot %q of farm %q", ErrNotFound, s.ID, farm)
	case cur.Owner != s.Owner || cur.State != from:
		return fmt.Errorf("%w: slot %q of farm %q is %s of %q", ErrConflict, s.ID, farm, cur.State, cur.Owner)
	}
	cur.Instance, cur.State, cur.Session = s.Instance, s.State, s.Session
	mf.slots[s.ID] = cur
	return nil
}

// FreeSlot implements Store.
func (m *Memory) FreeSlot(ctx context.Context, farm, slot string) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if mf, ok := m.farms[farm]; ok {
		delete(mf.slots, slot)
	}
	return nil
}

// Slots implements Store. ErrNotFound for an unknown farm.
func (m *Memory) Slots(ctx context.Context, farm string) ([]Slot, error) {
	mf, err := m.lockFarm(ctx, farm)
	if err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	slots := make([]Slot, 0, len(mf.slots))
	for _, s := range mf.slots {
		slots = append(slots, s)
	}
	slices.SortFunc(slots, func(a, b Slot) int { return cmp.Compare(a.ID, b.ID) })
	return slots, nil
}

// Capacity implements Store.
func (m *Memory) Capacity(ctx context.Context) (Capacity, error) {
	if err := m.lock(ctx); err != nil {
		return Capacity{}, err
	}
	defer m.mu.Unlock()
	var c Capacity
	for _, mf := range m.farms {
		if mf.f.Draining {
			continue
		}
		f := mf.farm()
		c.Slots += f.Slots
		c.Used += f.Used
		c.Busy += f.Busy
	}
	return c, nil
}

// session returns the live session with tokenHash, dropping it if expired.
func (m *Memory) session(tokenHash string, now time.Time) (memSession, bool) {
	ms, ok := m.sessions[tokenHash]
	if ok && expired(ms.deadline, now) {
		delete(m.sessions, tokenHash)
		return memSession{}, false
	}
	return ms, ok
}

// PutSession implements Store.
func (m *Memory) PutSession(ctx context.Context, s Session, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	now := time.Now()
	m.sweep(now)
	s.Instance = slices.Clone(s.Instance)
	m.sessions[s.TokenHash] = memSession{s: s, deadline: now.Add(ttl)}
	return nil
}

// TouchSessions implements Store.
func (m *Memory) TouchSessions(ctx context.Context, owner string, tokenHashes []string, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	now := time.Now()
	for _, th := range tokenHashes {
		if ms, ok := m.session(th, now); ok && ms.s.Owner == owner {
			ms.deadline = now.Add(ttl)
			m.sessions[th] = ms
		}
	}
	return nil
}

// ClaimSession implements Store. The session's slot changes owner only if
// it still serves the session; a slot that is gone or serves another
// session is left alone.
func (m *Memory) ClaimSession(ctx context.Context, tokenHash, owner string, ttl time.Duration) (Session, error) {
	if err := checkTTL(ttl); err != nil {
		return Session{}, err
	}
	if err := m.lock(ctx); err != nil {
		return Session{}, err
	}
	defer m.mu.Unlock()
	now := time.Now()
	ms, ok := m.session(tokenHash, now)
	if !ok {
		return Session{}, fmt.Errorf("%w: session", ErrNotFound)
	}
	prev := ms.s
	prev.Instance = slices.Clone(prev.Instance)
	ms.s.Owner, ms.deadline = owner, now.Add(ttl)
	m.sessions[tokenHash] = ms
	if mf, ok := m.farms[ms.s.Farm]; ok {
		if sl, ok := mf.slots[ms.s.Slot]; ok && sl.Session == ms.s.ID {
			sl.Owner = owner
			mf.slots[sl.ID] = sl
		}
	}
	return prev, nil
}

// DeleteSession implements Store.
func (m *Memory) DeleteSession(ctx context.Context, tokenHash, owner string) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if ms, ok := m.session(tokenHash, time.Now()); ok && ms.s.Owner == owner {
		delete(m.sessions, tokenHash)
	}
	return nil
}

// Alive implements Store.
func (m *Memory) Alive(ctx context.Context, id string, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	now := time.Now()
	m.sweep(now)
	m.managers[id] = now.Add(ttl)
	return nil
}

// ManagerAlive implements Store.
func (m *Memory) ManagerAlive(ctx context.Context, id string) (bool, error) {
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.mu.Unlock()
	d, ok := m.managers[id]
	return ok && !expired(d, time.Now()), nil
}

// Gone implements Store.
func (m *Memory) Gone(ctx context.Context, id string) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	delete(m.managers, id)
	return nil
}

// Publish implements Store. It never waits: a subscriber whose buffer is
// full loses the event.
func (m *Memory) Publish(ctx context.Context, e Event) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	m.mu.Unlock()
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- e:
		default:
		}
	}
	return nil
}

// Subscribe implements Store. The channel also closes when the store does.
func (m *Memory) Subscribe(ctx context.Context) (<-chan Event, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	// Registered under m.mu so that Close, which sets closed under it
	// before it waits, cannot miss this goroutine.
	m.wg.Add(1)
	m.mu.Unlock()
	ch := make(chan Event, subscriberBuffer)
	m.subMu.Lock()
	m.subs[ch] = struct{}{}
	m.subMu.Unlock()
	go func() {
		defer m.wg.Done()
		select {
		case <-ctx.Done():
		case <-m.done:
		}
		m.subMu.Lock()
		delete(m.subs, ch)
		m.subMu.Unlock()
		close(ch)
	}()
	return ch, nil
}

// Ping implements Store: it fails only once the store is closed.
func (m *Memory) Ping(ctx context.Context) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	m.mu.Unlock()
	return nil
}

// Close ends every subscription and waits for them; later calls fail with
// ErrUnavailable. Closing again does nothing.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}
