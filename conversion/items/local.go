package items

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/storage"
)

// maxRecord bounds the size of an item record read back from storage.
const maxRecord = 4 << 20

// Options configure Open.
type Options struct {
	// Logger hears about records Open skips (unreadable or malformed).
	// Default slog.Default().
	Logger *slog.Logger
}

// Local is a Store in the process: the items live in memory, and, when
// opened on a storage.Storage, every change is written through to it
// before it is made visible: item id's record is the JSON file
// MetaKey(id) ("items/<id>/item.json"), beside the item's files, written
// whole (a Put) so that a crash leaves the old record or the new one.
// Open reads them all back; LastUpdated survives too (deletes leave it in
// "items/lastUpdated.json").
//
// One process owns a Local store's records: managers that share items
// use Redis. Changes are made one at a time (each writes and syncs a
// file); reads never wait for them.
type Local struct {
	st  storage.Storage // nil: in memory only
	log *slog.Logger
	hub *hub

	// wmu makes changes one at a time: their ticks, writes and events
	// come in one order.
	wmu sync.Mutex

	mu     sync.RWMutex // guards the fields below; held briefly, never during I/O
	items  map[string]*Item
	order  []string // ids, oldest first
	last   time.Time
	closed bool

	once sync.Once
}

var _ Store = (*Local)(nil)

// NewMemory returns an empty Local store that keeps its items in memory
// only.
func NewMemory() *Local {
	return &Local{log: slog.Default(), hub: newHub(), items: map[string]*Item{}}
}

// Open returns a Local store whose records are kept in st, with the items
// whose records st holds. Records that cannot be read are logged and left
// out (their files stay).
func Open(ctx context.Context, st storage.Storage, o Options) (*Local, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Local{st: st, log: o.Logger, hub: newHub(), items: map[string]*Item{}}
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Local) load(ctx context.Context) error {
	infos, err := l.st.List(ctx, Prefix)
	if err != nil {
		return fmt.Errorf("items: open: %w", err)
	}
	for _, in := range infos {
		if in.Key == lastUpdatedKey {
			var rec struct {
				LastUpdated time.Time `json:"lastUpdated"`
			}
			if err := l.read(ctx, in.Key, &rec); err != nil {
				l.log.Warn("items: unreadable lastUpdated; taking the newest item's", "key", in.Key, "err", err)
				continue
			}
			l.last = maxTime(l.last, rec.LastUpdated)
			continue
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(in.Key, Prefix), "/"+metaName)
		if !ok || ValidateID(id) != nil {
			continue // an item's file, or not an item's at all
		}
		var it Item
		if err := l.read(ctx, in.Key, &it); err != nil {
			l.log.Warn("items: unreadable item record skipped", "key", in.Key, "err", err)
			continue
		}
		if it.ID != id || !it.State.Valid() {
			l.log.Warn("items: item record skipped: its id or state is wrong", "key", in.Key, "id", it.ID, "state", it.State)
			continue
		}
		l.items[id] = &it
		l.order = append(l.order, id)
		l.last = maxTime(l.last, it.Updated)
	}
	l.sortOrder()
	return nil
}

func (l *Local) read(ctx context.Context, key string, v any) error {
	obj, err := l.st.Open(ctx, key)
	if err != nil {
		return err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, maxRecord+1))
	if err != nil {
		return err
	}
	if len(b) > maxRecord {
		return fmt.Errorf("larger than %d bytes", maxRecord)
	}
	return json.Unmarshal(b, v)
}

func (l *Local) sortOrder() {
	slices.SortFunc(l.order, func(a, b string) int {
		if c := l.items[a].Created.Compare(l.items[b].Created); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

var errClosed = fmt.Errorf("%w: store closed", ErrUnavailable)

// begin starts a change: it takes wmu and checks the store and ctx.
func (l *Local) begin(ctx context.Context) (func(), error) {
	l.wmu.Lock()
	if err := l.check(ctx); err != nil {
		l.wmu.Unlock()
		return nil, err
	}
	return l.wmu.Unlock, nil
}

func (l *Local) check(ctx context.Context) error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return errClosed
	}
	return ctx.Err()
}

// put writes a record through to storage.
func (l *Local) put(ctx context.Context, key string, v any) error {
	if l.st == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := l.st.Put(ctx, key, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("items: write %s: %w", key, err)
	}
	return nil
}

// Create implements Store.
func (l *Local) Create(ctx context.Context, it Item) (Item, error) {
	if err := validateNew(&it); err != nil {
		return Item{}, err
	}
	end, err := l.begin(ctx)
	if err != nil {
		return Item{}, err
	}
	defer end()
	l.mu.RLock()
	_, taken := l.items[it.ID]
	last := l.last
	l.mu.RUnlock()
	if taken {
		return Item{}, fmt.Errorf("%w: %s", ErrExists, it.ID)
	}
	it = it.Clone()
	t := tick(last, time.Now())
	it.Created, it.Updated = t, t
	if err := l.put(ctx, MetaKey(it.ID), &it); err != nil {
		return Item{}, err
	}
	stored := it.Clone()
	l.mu.Lock()
	l.items[it.ID] = &stored
	l.order = append(l.order, it.ID) // t is the newest Created
	l.last = t
	l.mu.Unlock()
	l.publish(EventCreated, &it, t)
	return it, nil
}

func (l *Local) publish(typ EventType, it *Item, t time.Time) {
	e := Event{Type: typ, LastUpdated: t}
	if it != nil {
		c := it.Clone()
		e.ID, e.Item = it.ID, &c
	}
	l.hub.publish(e)
}

// Get implements Store.
func (l *Local) Get(ctx context.Context, id string) (Item, error) {
	if err := l.check(ctx); err != nil {
		return Item{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	it, ok := l.items[id]
	if !ok {
		return Item{}, fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	return it.Clone(), nil
}

// List implements Store.
func (l *Local) List(ctx context.Context) ([]Item, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]Item, len(l.order))
	for i, id := range l.order {
		out[i] = l.items[id].Clone()
	}
	return out, nil
}

// Update implements Store. fn is called once.
func (l *Local) Update(ctx context.Context, id string, fn func(*Item) error) (Item, error) {
	end, err := l.begin(ctx)
	if err != nil {
		return Item{}, err
	}
	defer end()
	l.mu.RLock()
	cur, ok := l.items[id]
	last := l.last
	l.mu.RUnlock()
	if !ok {
		return Item{}, fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	// Only changes hold wmu, and this one does: cur stays as it is.
	next := cur.Clone()
	if err := fn(&next); err != nil {
		return Item{}, err
	}
	if err := ValidateUpdate(cur, &next); err != nil {
		return Item{}, err
	}
	next.Updated = cur.Updated
	if same, err := sameJSON(cur, &next); err != nil || same {
		return cur.Clone(), err
	}
	t := tick(last, time.Now())
	next.Updated = t
	if err := l.put(ctx, MetaKey(id), &next); err != nil {
		return Item{}, err
	}
	stored := next.Clone()
	l.mu.Lock()
	l.items[id] = &stored
	l.last = t
	l.mu.Unlock()
	l.publish(EventUpdated, &next, t)
	return next, nil
}

// UpdateFrom implements Store. Reads cost nothing here: it is Update.
func (l *Local) UpdateFrom(ctx context.Context, cur Item, fn func(*Item) error) (Item, error) {
	return l.Update(ctx, cur.ID, fn)
}

// sameJSON reports whether a and b are stored alike.
func sameJSON(a, b *Item) (bool, error) {
	ja, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	jb, err := json.Marshal(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ja, jb), nil
}

// Delete implements Store. On storage it removes the item's record; its
// files are the caller's (storage.DeletePrefix(Dir(id))).
func (l *Local) Delete(ctx context.Context, id string) error {
	return l.delete(ctx, id, nil)
}

// DeleteUnchanged implements Store: the comparison and the delete are
// one change, under the lock of changes.
func (l *Local) DeleteUnchanged(ctx context.Context, id string, updated time.Time) error {
	return l.delete(ctx, id, func(cur *Item) error {
		if !cur.Updated.Equal(updated) {
			return fmt.Errorf("%w: %s was updated at %s, not %s", ErrChanged, id,
				cur.Updated.Format(time.RFC3339Nano), updated.UTC().Format(time.RFC3339Nano))
		}
		return nil
	})
}

// delete removes item id if check, when given, passes it.
func (l *Local) delete(ctx context.Context, id string, check func(*Item) error) error {
	end, err := l.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	l.mu.RLock()
	cur, ok := l.items[id]
	last := l.last
	l.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	// Only changes hold wmu, and this one does: cur stays as it is.
	if check != nil {
		if err := check(cur); err != nil {
			return err
		}
	}
	t := tick(last, time.Now())
	if l.st != nil {
		// LastUpdated first: a crash between the two writes moves it
		// without a change, rather than losing a change (after a restart
		// the newest item would set it back).
		rec := struct {
			LastUpdated time.Time `json:"lastUpdated"`
		}{t}
		if err := l.put(ctx, lastUpdatedKey, rec); err != nil {
			return err
		}
		if err := l.st.Delete(ctx, MetaKey(id)); err != nil {
			return fmt.Errorf("items: delete %s: %w", id, err)
		}
	}
	l.mu.Lock()
	delete(l.items, id)
	if i := slices.Index(l.order, id); i >= 0 {
		l.order = slices.Delete(l.order, i, i+1)
	}
	l.last = t
	l.mu.Unlock()
	l.hub.publish(Event{Type: EventDeleted, ID: id, LastUpdated: t})
	return nil
}

// LastUpdated implements Store.
func (l *Local) LastUpdated(ctx context.Context) (time.Time, error) {
	if err := l.check(ctx); err != nil {
		return time.Time{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last, nil
}

// Subscribe implements Store.
func (l *Local) Subscribe(ctx context.Context) (<-chan Event, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	ch, ok := l.hub.subscribe(ctx)
	if !ok {
		return nil, errClosed
	}
	return ch, nil
}

// Close implements Store. It does not close the storage, which is the
// caller's.
func (l *Local) Close() error {
	l.once.Do(func() {
		l.wmu.Lock() // a change under way finishes first
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.wmu.Unlock()
		l.hub.close()
	})
	return nil
}
