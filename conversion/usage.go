package conversion

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/drover-dev/drover/conversion/items"
)

// usage counts what each tenant holds: its items in flight and the bytes
// of their uploads and outputs, for Config.Quota, and the time of the
// last change of one of its items, for a tenant's LastUpdated.
//
// It learns of changes two ways: every write of this service's item
// store, at once (trackedStore), and the store's events, which bring the
// changes other managers sharing a Redis store make. It loads every item
// at Start and again on a resync. Applying an item is idempotent (its
// contribution replaces the one counted) and never goes back to an
// older version, so a change learnt both ways counts once.
//
// Across managers the counts are as fresh as the events; a quota is
// exact within one service (reservations cover what its calls are
// doing), and managers sharing a store may together pass it by the
// uploads they admit at the same moment.
type usage struct {
	mu      sync.Mutex
	items   map[string]itemUse
	gone    map[string]goneItem // deleted ids: a late event must not bring one back
	tenants map[string]*tenantUse
	seq     uint64 // counts the sets, so that a reset keeps what it did not see
}

// itemUse is an item's share of its tenant's usage.
type itemUse struct {
	tenant   string
	bytes    int64
	inFlight bool
	updated  time.Time
	seq      uint64
}

type goneItem struct {
	tenant string
	at     time.Time // when this service learnt of the delete
}

type tenantUse struct {
	inFlight, reservedFlights int
	bytes, reservedBytes      int64
	last                      time.Time
}

// goneTTL is how long a deleted id is remembered: longer than any event
// takes to arrive.
const goneTTL = 10 * time.Minute

func newUsage() *usage {
	return &usage{items: map[string]itemUse{}, gone: map[string]goneItem{}, tenants: map[string]*tenantUse{}}
}

func useOf(it *items.Item) itemUse {
	u := itemUse{tenant: TenantOf(*it), inFlight: !it.State.Terminal(), updated: it.Updated}
	for _, o := range it.Originals {
		u.bytes += o.Size
	}
	for _, f := range it.Files {
		u.bytes += f.Size
	}
	for _, f := range it.Shattered {
		u.bytes += f.Size
	}
	return u
}

func (u *usage) tenant(t string) *tenantUse {
	tu := u.tenants[t]
	if tu == nil {
		tu = &tenantUse{}
		u.tenants[t] = tu
	}
	return tu
}

// set counts it as it is now, unless an as new or newer version is
// counted or it was deleted.
func (u *usage) set(it *items.Item) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.setLocked(it)
}

func (u *usage) setLocked(it *items.Item) {
	if _, gone := u.gone[it.ID]; gone {
		return
	}
	nu := useOf(it)
	if old, ok := u.items[it.ID]; ok {
		if nu.updated.Before(old.updated) {
			return
		}
		u.remove(old)
	}
	u.seq++
	nu.seq = u.seq
	u.items[it.ID] = nu
	tu := u.tenant(nu.tenant)
	tu.bytes += nu.bytes
	if nu.inFlight {
		tu.inFlight++
	}
	if nu.updated.After(tu.last) {
		tu.last = nu.updated
	}
}

func (u *usage) remove(old itemUse) {
	tu := u.tenant(old.tenant)
	tu.bytes -= old.bytes
	if old.inFlight {
		tu.inFlight--
	}
}

// drop forgets a deleted item; at is the delete's time in the store,
// zero if unknown.
func (u *usage) drop(id string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	old, ok := u.items[id]
	if !ok {
		// Known deleted: the store's time of the delete may be later than
		// the one taken then, never another change.
		if g, gone := u.gone[id]; gone {
			if tu := u.tenant(g.tenant); at.After(tu.last) {
				tu.last = at
			}
		}
		return
	}
	u.remove(old)
	delete(u.items, id)
	u.gone[id] = goneItem{tenant: old.tenant, at: now}
	u.touch(old.tenant, at)
	if len(u.gone) > 1024 {
		for gid, g := range u.gone {
			if now.Sub(g.at) > goneTTL {
				delete(u.gone, gid)
			}
		}
	}
}

// touch moves tenant's last change to at, or by a millisecond when at
// is unknown or not after it, as a store's LastUpdated moves.
func (u *usage) touch(tenant string, at time.Time) {
	tu := u.tenant(tenant)
	if !at.After(tu.last) {
		at = tu.last.Add(time.Millisecond)
		if now := time.Now().UTC().Truncate(time.Millisecond); now.After(at) {
			at = now
		}
	}
	tu.last = at
}

// mark is the point a reset starts from: call it before listing.
func (u *usage) mark() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seq
}

// reset counts all, the store's items as listed after mark since,
// afresh. What was counted after since (a write or an event while the
// list was read) stays, when it is newer; reservations stay.
func (u *usage) reset(all []items.Item, since uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, old := range u.items {
		if old.seq > since {
			continue
		}
		u.remove(old)
		delete(u.items, id)
	}
	for i := range all {
		u.setLocked(&all[i])
	}
}

// tenantOf is the tenant of item id, deleted lately or not; false if
// unknown.
func (u *usage) tenantOf(id string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if it, ok := u.items[id]; ok {
		return it.tenant, true
	}
	g, ok := u.gone[id]
	return g.tenant, ok
}

func (u *usage) of(tenant string) TenantUsage {
	u.mu.Lock()
	defer u.mu.Unlock()
	tu := u.tenants[tenant]
	if tu == nil {
		return TenantUsage{}
	}
	return TenantUsage{InFlight: tu.inFlight, Bytes: tu.bytes}
}

func (u *usage) lastUpdated(tenant string) time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if tu := u.tenants[tenant]; tu != nil {
		return tu.last
	}
	return time.Time{}
}

// admit reserves one conversion in flight for tenant, if q allows one
// more and the tenant's storage is not full. release gives the
// reservation back: call it once the item is counted (its store write
// returned) or was not made. Without a quota it reserves nothing.
func (u *usage) admit(tenant string, q TenantQuota) (release func(), err error) {
	if q.MaxInFlight <= 0 && q.MaxBytes <= 0 {
		return func() {}, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	tu := u.tenant(tenant)
	if q.MaxInFlight > 0 && tu.inFlight+tu.reservedFlights >= q.MaxInFlight {
		return nil, fmt.Errorf("%w: the tenant has %d conversions in flight, the most it may have: wait until one ends", ErrQuota, q.MaxInFlight)
	}
	if q.MaxBytes > 0 && tu.bytes+tu.reservedBytes >= q.MaxBytes {
		return nil, fmt.Errorf("%w: the tenant's storage quota of %d bytes is used up: delete items to make room", ErrQuota, q.MaxBytes)
	}
	tu.reservedFlights++
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			u.tenant(tenant).reservedFlights--
		})
	}, nil
}

// reserveBytes reserves n more bytes for an upload of tenant, if they
// fit in max with what the tenant holds and reserved.
func (u *usage) reserveBytes(tenant string, n, max int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	tu := u.tenant(tenant)
	if tu.bytes+tu.reservedBytes+n > max {
		return false
	}
	tu.reservedBytes += n
	return true
}

func (u *usage) releaseBytes(tenant string, n int64) {
	if n == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.tenant(tenant).reservedBytes -= n
}

// quotaReader reads an upload of a tenant, reserving its bytes as they
// come, and fails with ErrQuota (over set) at the first that would take
// the tenant past max. release gives the reservation back once the
// upload is counted in its item, or dropped.
type quotaReader struct {
	r        io.Reader
	u        *usage
	tenant   string
	max      int64 // 0: no quota, nothing reserved
	reserved int64
	over     bool
}

func (s *Service) quotaReader(r io.Reader, tenant string) *quotaReader {
	return &quotaReader{r: r, u: s.usage, tenant: tenant, max: s.cfg.Quota.MaxBytes}
}

func (q *quotaReader) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	if n > 0 && q.max > 0 {
		if !q.u.reserveBytes(q.tenant, int64(n), q.max) {
			q.over = true
			return 0, q.err()
		}
		q.reserved += int64(n)
	}
	return n, err
}

// err is the error of an upload refused for the quota.
func (q *quotaReader) err() error {
	return fmt.Errorf("%w: the upload would take the tenant past its storage quota of %d bytes: delete items to make room", ErrQuota, q.max)
}

func (q *quotaReader) release() {
	q.u.releaseBytes(q.tenant, q.reserved)
	q.reserved = 0
}

// trackedStore is the service's item store: every write it makes is
// counted in usage as soon as it returns.
type trackedStore struct {
	items.Store
	u *usage
}

func (t trackedStore) Create(ctx context.Context, it items.Item) (items.Item, error) {
	it, err := t.Store.Create(ctx, it)
	if err == nil {
		t.u.set(&it)
	}
	return it, err
}

func (t trackedStore) Update(ctx context.Context, id string, fn func(*items.Item) error) (items.Item, error) {
	it, err := t.Store.Update(ctx, id, fn)
	if err == nil {
		t.u.set(&it)
	}
	return it, err
}

func (t trackedStore) UpdateFrom(ctx context.Context, cur items.Item, fn func(*items.Item) error) (items.Item, error) {
	it, err := t.Store.UpdateFrom(ctx, cur, fn)
	if err == nil {
		t.u.set(&it)
	}
	return it, err
}

func (t trackedStore) Delete(ctx context.Context, id string) error {
	err := t.Store.Delete(ctx, id)
	if err == nil {
		t.u.drop(id, time.Time{})
	}
	return err
}

func (t trackedStore) DeleteUnchanged(ctx context.Context, id string, updated time.Time) error {
	err := t.Store.DeleteUnchanged(ctx, id, updated)
	if err == nil {
		t.u.drop(id, time.Time{})
	}
	return err
}

// loadUsage counts the store's items afresh.
func (s *Service) loadUsage(ctx context.Context) error {
	since := s.usage.mark()
	all, err := s.items.List(ctx)
	if err != nil {
		return err
	}
	s.usage.reset(all, since)
	return nil
}

// usageLoop keeps usage current with the store's events: the changes of
// other managers sharing it. It loads every item after subscribing, and
// again after a resync or a broken subscription.
func (s *Service) usageLoop() {
	for s.ctx.Err() == nil {
		ch, err := s.items.Subscribe(s.ctx)
		if err == nil {
			err = s.loadUsage(s.ctx)
		}
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("count tenants' usage: the item store cannot be read; trying again", "err", err)
			}
			select {
			case <-s.ctx.Done():
			case <-time.After(s.cfg.SweepInterval):
			}
			continue
		}
		for e := range ch {
			switch e.Type {
			case items.EventCreated, items.EventUpdated:
				if e.Item != nil {
					s.usage.set(e.Item)
				}
			case items.EventDeleted:
				s.usage.drop(e.ID, e.LastUpdated)
			case items.EventResync:
				if err := s.loadUsage(s.ctx); err != nil && s.ctx.Err() == nil {
					s.log.Warn("count tenants' usage after a resync", "err", err)
				}
			}
		}
	}
}
