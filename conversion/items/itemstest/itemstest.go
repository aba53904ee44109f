// Package itemstest is the conformance suite of items.Store: every
// implementation runs Run, so that the local store and Redis behave alike,
// down to their errors, their LastUpdated and their events.
package itemstest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/items"
)

const (
	// clockSlack bounds the gap between the test's clock and the store's
	// (for Redis the server's, on the same machine).
	clockSlack = 2 * time.Second
	// within bounds every wait for an event.
	within = 5 * time.Second
)

// Run runs the suite. Each subtest calls open for an empty store of its
// own and closes it when it ends, so Close must be idempotent. Subtests
// run in parallel.
func Run(t *testing.T, open func(t *testing.T) items.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st items.Store)
	}{
		{"CreateGet", testCreateGet},
		{"CreateDefaults", testCreateDefaults},
		{"CreateExists", testCreateExists},
		{"CreateInvalid", testCreateInvalid},
		{"GetNotFound", testGetNotFound},
		{"List", testList},
		{"Update", testUpdate},
		{"UpdateFnError", testUpdateFnError},
		{"UpdateNoChange", testUpdateNoChange},
		{"UpdateNotFound", testUpdateNotFound},
		{"UpdateFrom", testUpdateFrom},
		{"ConcurrentUpdateFrom", testConcurrentUpdateFrom},
		{"UpdateImmutable", testUpdateImmutable},
		{"Tenant", testTenant},
		{"Transitions", testTransitions},
		{"SuccessOnce", testSuccessOnce},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCreate", testConcurrentCreate},
		{"ConcurrentEnd", testConcurrentEnd},
		{"Delete", testDelete},
		{"DeleteUnchanged", testDeleteUnchanged},
		{"ConcurrentDeleteUnchanged", testConcurrentDeleteUnchanged},
		{"LastUpdated", testLastUpdated},
		{"Events", testEvents},
		{"EventsEndWithContext", testEventsEnd},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			t.Cleanup(func() { _ = st.Close() })
			tt.fn(t, st)
		})
	}
}

// ms is the current time in the stores' resolution.
func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// Full returns an item with every field set, for round trips.
func Full(id string) items.Item {
	at := ms(time.Now().Add(-time.Minute))
	return items.Item{
		ID:               id,
		Name:             "assembly.zip",
		Tenant:           "acme",
		StartPath:        "asm/top.step",
		State:            items.StatePending,
		Webhook:          "https://hooks.example/done?x=1&y=\"2\"",
		CommandLine:      []string{"*", "--output_stl", ""},
		ProcessShattered: true,
		Originals:        []items.Original{{Name: "assembly.zip", Stored: "upload-1.zip", Size: 1234}},
		Files:            []items.File{{Name: "top.step.glb", Type: "glb", Size: 99}},
		Generation:       2,
		Attempts:         1,
		DetailedError:    "line one\nline \"two\" ✓",
		Delivery: &items.Delivery{
			ID: "d-1", State: items.StatePending, Attempts: 3, LastStatus: 502,
			LastError: "bad gateway", LastAttempt: at, Delivered: at.Add(time.Second),
		},
	}
}

func testCreateGet(t *testing.T, st items.Store) {
	ctx := t.Context()
	before := ms(time.Now())
	want := Full("item-1")
	got, err := st.Create(ctx, want)
	require.NoError(t, err)
	require.WithinRange(t, got.Created, before.Add(-clockSlack), time.Now().Add(clockSlack))
	require.Equal(t, got.Created, got.Updated)
	require.Equal(t, ms(got.Created), got.Created, "milliseconds")
	want.Created, want.Updated = got.Created, got.Updated
	require.Equal(t, want, got)

	again, err := st.Get(ctx, "item-1")
	require.NoError(t, err)
	require.Equal(t, want, again)

	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, got.Created, last)
}

func testCreateDefaults(t *testing.T, st items.Store) {
	ctx := t.Context()
	it, err := st.Create(ctx, items.Item{Name: "part.stl"})
	require.NoError(t, err)
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, it.ID)
	require.Equal(t, items.StateUploading, it.State)
	got, err := st.Get(ctx, it.ID)
	require.NoError(t, err)
	require.Equal(t, it, got)

	// What the caller passed is not shared with the store.
	cl := []string{"--output_stl", ""}
	it2, err := st.Create(ctx, items.Item{CommandLine: cl})
	require.NoError(t, err)
	cl[0] = "changed"
	got, err = st.Get(ctx, it2.ID)
	require.NoError(t, err)
	require.Equal(t, "--output_stl", got.CommandLine[0])
}

func testCreateExists(t *testing.T, st items.Store) {
	ctx := t.Context()
	first, err := st.Create(ctx, items.Item{ID: "dup", Name: "first"})
	require.NoError(t, err)
	_, err = st.Create(ctx, items.Item{ID: "dup", Name: "second"})
	require.ErrorIs(t, err, items.ErrExists)
	got, err := st.Get(ctx, "dup")
	require.NoError(t, err)
	require.Equal(t, first, got)
}

func testCreateInvalid(t *testing.T, st items.Store) {
	ctx := t.Context()
	for _, it := range []items.Item{
		{ID: "../x"}, {ID: "a/b"}, {ID: "a.b"}, {ID: "-x"}, {ID: "_x"}, {ID: "a b"}, {ID: "ä"},
		{ID: strings.Repeat("x", items.MaxIDLen+1)},
		{ID: "ok", State: "DONE"}, {ID: "ok", State: "ERROR - "}, {ID: "ok", State: "ERROR"},
		{ID: "ok", State: "ERROR - a\nb"}, {ID: "ok", State: "success"},
		{ID: "ok", Generation: -1}, {ID: "ok", Attempts: -1},
	} {
		t.Run(fmt.Sprintf("%.20s/%s", it.ID, it.State), func(t *testing.T) {
			_, err := st.Create(ctx, it)
			require.ErrorIs(t, err, items.ErrInvalid)
		})
	}
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.True(t, last.IsZero(), "a store that never changed")
	// The longest id is fine.
	_, err = st.Create(ctx, items.Item{ID: strings.Repeat("x", items.MaxIDLen)})
	require.NoError(t, err)
}

func testGetNotFound(t *testing.T, st items.Store) {
	ctx := t.Context()
	for _, id := range []string{"missing", "", "../x", "a b", strings.Repeat("y", 1000)} {
		_, err := st.Get(ctx, id)
		require.ErrorIs(t, err, items.ErrNotFound, "%q", id)
		require.ErrorIs(t, st.Delete(ctx, id), items.ErrNotFound, "%q", id)
	}
}

func ids(list []items.Item) []string {
	out := make([]string, len(list))
	for i, it := range list {
		out[i] = it.ID
	}
	return out
}

func testList(t *testing.T, st items.Store) {
	ctx := t.Context()
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	// Ids in an order that is not their creation order.
	order := []string{"m", "b", "z", "a", "k"}
	for _, id := range order {
		_, err := st.Create(ctx, items.Item{ID: id, Name: id})
		require.NoError(t, err)
	}
	list, err = st.List(ctx)
	require.NoError(t, err)
	require.Equal(t, order, ids(list), "oldest first")
	for i := 1; i < len(list); i++ {
		require.True(t, list[i].Created.After(list[i-1].Created))
	}
	// Updates do not reorder.
	_, err = st.Update(ctx, "m", func(it *items.Item) error { it.Name = "renamed"; return nil })
	require.NoError(t, err)
	require.NoError(t, st.Delete(ctx, "z"))
	list, err = st.List(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"m", "b", "a", "k"}, ids(list))
	require.Equal(t, "renamed", list[0].Name)
}

func testUpdate(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "u", Name: "part.step"})
	require.NoError(t, err)
	files := []items.File{{Name: "part.step.glb", Type: "glb", Size: 10}, {Name: "part.step.png", Type: "png", Size: 20}}
	got, err := st.Update(ctx, "u", func(it *items.Item) error {
		it.State = items.StatePending
		it.Attempts = 1
		it.Updated = time.Time{} // ignored: the store sets it
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, items.StatePending, got.State)
	require.Equal(t, created.Created, got.Created)
	require.True(t, got.Updated.After(created.Updated), "updated moves")
	got, err = st.Update(ctx, "u", func(it *items.Item) error { return it.Succeed(0, files) })
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, got.State)
	require.Equal(t, files, got.Files)
	stored, err := st.Get(ctx, "u")
	require.NoError(t, err)
	require.Equal(t, got, stored)
	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, got.Updated, last)
}

var errFn = errors.New("itemstest: fn failed")

func testUpdateFnError(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "f", Name: "n"})
	require.NoError(t, err)
	_, err = st.Update(ctx, "f", func(it *items.Item) error {
		it.Name = "changed, then failed"
		return errFn
	})
	require.ErrorIs(t, err, errFn)
	got, err := st.Get(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, created, got)
	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, created.Updated, last)
}

func testUpdateNoChange(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "n", Name: "n", State: items.StatePending})
	require.NoError(t, err)
	got, err := st.Update(ctx, "n", func(it *items.Item) error {
		it.Name = "n"
		it.State = items.StatePending
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, created, got)
	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, created.Updated, last, "no change, no move")
}

func testUpdateNotFound(t *testing.T, st items.Store) {
	called := false
	_, err := st.Update(t.Context(), "missing", func(*items.Item) error { called = true; return nil })
	require.ErrorIs(t, err, items.ErrNotFound)
	require.False(t, called)
}

// testUpdateFrom: an update from a version the caller holds writes fn's
// change when that version is current, and applies fn to the current
// version when it is not: nothing another writer did is lost.
func testUpdateFrom(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "uf", Name: "m.stl"})
	require.NoError(t, err)
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	pending, err := st.UpdateFrom(ctx, created, func(it *items.Item) error {
		it.State = items.StatePending
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, items.StatePending, pending.State)
	require.True(t, pending.Updated.After(created.Updated))
	stored, err := st.Get(ctx, "uf")
	require.NoError(t, err)
	require.Equal(t, pending, stored)
	e := Next(t, ch)
	require.Equal(t, items.EventUpdated, e.Type)
	require.Equal(t, &pending, e.Item)

	// From the old version: fn sees the current one.
	var saw items.State
	got, err := st.UpdateFrom(ctx, created, func(it *items.Item) error {
		saw = it.State
		it.Attempts = 1
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, items.StatePending, saw, "fn is applied to the current version")
	require.Equal(t, items.StatePending, got.State)
	require.Equal(t, 1, got.Attempts)
	stored, err = st.Get(ctx, "uf")
	require.NoError(t, err)
	require.Equal(t, got, stored)

	// The rules hold: the old version was UPLOADING, the item is not.
	_, err = st.UpdateFrom(ctx, created, func(it *items.Item) error { it.State = items.StateUploading; return nil })
	require.ErrorIs(t, err, items.ErrTransition)
	_, err = st.UpdateFrom(ctx, got, func(*items.Item) error { return errFn })
	require.ErrorIs(t, err, errFn)

	require.NoError(t, st.Delete(ctx, "uf"))
	_, err = st.UpdateFrom(ctx, got, func(it *items.Item) error { it.Name = "back?"; return nil })
	require.ErrorIs(t, err, items.ErrNotFound, "no update brings a deleted item back")
	_, err = st.Get(ctx, "uf")
	require.ErrorIs(t, err, items.ErrNotFound)
}

// testConcurrentUpdateFrom: writers that all start from the same version
// lose none of their changes.
func testConcurrentUpdateFrom(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "cf", State: items.StatePending})
	require.NoError(t, err)
	const writers = 16
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			_, err := st.UpdateFrom(ctx, created, func(it *items.Item) error {
				it.Attempts++
				it.CommandLine = append(it.CommandLine, fmt.Sprint(i))
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := st.Get(ctx, "cf")
	require.NoError(t, err)
	require.Equal(t, writers, got.Attempts)
	require.Len(t, got.CommandLine, writers)
}

func testUpdateImmutable(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "i"})
	require.NoError(t, err)
	_, err = st.Update(ctx, "i", func(it *items.Item) error { it.ID = "other"; return nil })
	require.ErrorIs(t, err, items.ErrInvalid)
	_, err = st.Update(ctx, "i", func(it *items.Item) error { it.Created = it.Created.Add(-time.Hour); return nil })
	require.ErrorIs(t, err, items.ErrInvalid)
	_, err = st.Update(ctx, "i", func(it *items.Item) error { it.State = "CONVERTING"; return nil })
	require.ErrorIs(t, err, items.ErrInvalid)
	_, err = st.Get(ctx, "other")
	require.ErrorIs(t, err, items.ErrNotFound)
	got, err := st.Get(ctx, "i")
	require.NoError(t, err)
	require.Equal(t, created, got)
}

// testTenant: an item keeps its tenant through updates, lists and
// events; no update changes it; an item made without one reads back
// without one (a record from before tenants).
func testTenant(t *testing.T, st items.Store) {
	ctx := t.Context()
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	a, err := st.Create(ctx, items.Item{ID: "a", Tenant: "tenant-a"})
	require.NoError(t, err)
	require.Equal(t, "tenant-a", a.Tenant)
	require.Equal(t, "tenant-a", Next(t, ch).Item.Tenant)
	_, err = st.Create(ctx, items.Item{ID: "none"})
	require.NoError(t, err)
	Next(t, ch)

	a, err = st.Update(ctx, "a", func(it *items.Item) error { it.Name = "renamed"; return nil })
	require.NoError(t, err)
	require.Equal(t, "tenant-a", a.Tenant)
	ev := Next(t, ch)
	require.Equal(t, "tenant-a", ev.Item.Tenant, "the event's item carries its tenant")
	for _, to := range []string{"tenant-b", ""} {
		_, err = st.Update(ctx, "a", func(it *items.Item) error { it.Tenant = to; return nil })
		require.ErrorIs(t, err, items.ErrInvalid, "tenant %q", to)
		_, err = st.UpdateFrom(ctx, a, func(it *items.Item) error { it.Tenant = to; return nil })
		require.ErrorIs(t, err, items.ErrInvalid, "tenant %q", to)
	}
	_, err = st.Update(ctx, "none", func(it *items.Item) error { it.Tenant = "tenant-b"; return nil })
	require.ErrorIs(t, err, items.ErrInvalid, "a record without a tenant gets none later")

	got, err := st.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, a, got)
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "tenant-a", list[0].Tenant)
	require.Empty(t, list[1].Tenant)
}

// testTransitions walks every pair of states within a generation, and
// generation changes.
func testTransitions(t *testing.T, st items.Store) {
	ctx := t.Context()
	failed := items.Failed("Conversion Error")
	otherFailure := items.Failed("Unzip Error")
	states := []items.State{items.StateUploading, items.StatePending, items.StateSuccess, failed, otherFailure}
	allowed := map[[2]items.State]bool{}
	for _, s := range states {
		allowed[[2]items.State{s, s}] = true
		allowed[[2]items.State{items.StateUploading, s}] = true
		if s != items.StateUploading {
			allowed[[2]items.State{items.StatePending, s}] = true
		}
	}
	n := 0
	for _, from := range states {
		for _, to := range states {
			n++
			id := fmt.Sprintf("t%d", n)
			_, err := st.Create(ctx, items.Item{ID: id, State: from})
			require.NoError(t, err)
			got, err := st.Update(ctx, id, func(it *items.Item) error { it.State = to; it.Name = "touched"; return nil })
			switch {
			case allowed[[2]items.State{from, to}]:
				require.NoError(t, err, "%s to %s", from, to)
				require.Equal(t, to, got.State)
			case from.Terminal():
				require.ErrorIs(t, err, items.ErrTerminal, "%s to %s", from, to)
			default:
				require.ErrorIs(t, err, items.ErrTransition, "%s to %s", from, to)
			}
		}
	}

	// Generations: up by one to PENDING only.
	_, err := st.Create(ctx, items.Item{ID: "g", State: items.StateSuccess, Generation: 3})
	require.NoError(t, err)
	for _, tt := range []struct {
		gen   int
		state items.State
	}{{4, items.StateSuccess}, {4, items.StateUploading}, {5, items.StatePending}, {2, items.StatePending}, {2, items.StateSuccess}} {
		_, err := st.Update(ctx, "g", func(it *items.Item) error { it.Generation, it.State = tt.gen, tt.state; return nil })
		require.ErrorIs(t, err, items.ErrTransition, "generation %d %s", tt.gen, tt.state)
	}
	got, err := st.Update(ctx, "g", func(it *items.Item) error { it.Reconvert(); return nil })
	require.NoError(t, err)
	require.Equal(t, 4, got.Generation)
	require.Equal(t, items.StatePending, got.State)
}

// testSuccessOnce: a conversion ends once; a repeated or late result is
// refused; only Reconvert starts another, and results of the last one are
// stale then.
func testSuccessOnce(t *testing.T, st items.Store) {
	ctx := t.Context()
	_, err := st.Create(ctx, items.Item{ID: "s", Name: "m.stl", State: items.StatePending})
	require.NoError(t, err)
	first := []items.File{{Name: "m.stl.glb", Type: "glb", Size: 1}}
	got, err := st.Update(ctx, "s", func(it *items.Item) error { return it.Succeed(0, first) })
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, got.State)

	late := []items.File{{Name: "late.glb", Type: "glb", Size: 2}}
	_, err = st.Update(ctx, "s", func(it *items.Item) error { return it.Succeed(0, late) })
	require.ErrorIs(t, err, items.ErrTerminal)
	_, err = st.Update(ctx, "s", func(it *items.Item) error { return it.Fail(0, "Conversion Error", "late failure") })
	require.ErrorIs(t, err, items.ErrTerminal)
	_, err = st.Update(ctx, "s", func(it *items.Item) error { it.State = items.Failed("Conversion Error"); return nil })
	require.ErrorIs(t, err, items.ErrTerminal, "even written directly")
	_, err = st.Update(ctx, "s", func(it *items.Item) error { it.State = items.StatePending; return nil })
	require.ErrorIs(t, err, items.ErrTerminal, "PENDING again only by Reconvert")
	got, err = st.Get(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, first, got.Files)

	// Metadata of an ended item still changes.
	_, err = st.Update(ctx, "s", func(it *items.Item) error {
		it.Delivery = &items.Delivery{ID: "d", State: it.State, Attempts: 1, LastStatus: 200}
		return nil
	})
	require.NoError(t, err)

	got, err = st.Update(ctx, "s", func(it *items.Item) error { it.Reconvert(); return nil })
	require.NoError(t, err)
	require.Equal(t, 1, got.Generation)
	require.Equal(t, items.StatePending, got.State)
	require.Empty(t, got.Files)
	require.Nil(t, got.Delivery)
	require.Zero(t, got.Attempts)

	_, err = st.Update(ctx, "s", func(it *items.Item) error { return it.Succeed(0, late) })
	require.ErrorIs(t, err, items.ErrStale, "a result of the first conversion")
	got, err = st.Update(ctx, "s", func(it *items.Item) error { return it.Fail(1, "Conversion Error", "assimp: no mesh") })
	require.NoError(t, err)
	require.Equal(t, items.Failed("Conversion Error"), got.State)
	require.Equal(t, "Conversion Error", got.State.Reason())
	require.Equal(t, "assimp: no mesh", got.DetailedError)
}

// testConcurrentUpdates: 50 writers of one item, each adding to it; none
// is lost.
func testConcurrentUpdates(t *testing.T, st items.Store) {
	ctx := t.Context()
	_, err := st.Create(ctx, items.Item{ID: "c", State: items.StatePending})
	require.NoError(t, err)
	const writers = 50
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			_, err := st.Update(ctx, "c", func(it *items.Item) error {
				it.Attempts++
				it.CommandLine = append(it.CommandLine, fmt.Sprint(i))
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := st.Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, writers, got.Attempts)
	require.Len(t, got.CommandLine, writers)
	seen := map[string]bool{}
	for _, s := range got.CommandLine {
		seen[s] = true
	}
	require.Len(t, seen, writers, "every writer's change is there once")
}

func testConcurrentCreate(t *testing.T, st items.Store) {
	ctx := t.Context()
	var ok, exists atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := st.Create(ctx, items.Item{ID: "one", Name: fmt.Sprint(i)})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, items.ErrExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, ok.Load())
	require.EqualValues(t, 19, exists.Load())
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
}

// testConcurrentEnd: results racing to end one conversion (a reclaimed
// attempt's and its successor's): one wins, the others are refused.
func testConcurrentEnd(t *testing.T, st items.Store) {
	ctx := t.Context()
	_, err := st.Create(ctx, items.Item{ID: "e", State: items.StatePending})
	require.NoError(t, err)
	var won atomic.Int32
	var winner atomic.Value
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			name := fmt.Sprintf("attempt%d.glb", i)
			_, err := st.Update(ctx, "e", func(it *items.Item) error {
				if i%2 == 0 {
					return it.Succeed(0, []items.File{{Name: name, Type: "glb"}})
				}
				return it.Fail(0, "Conversion Error", name)
			})
			switch {
			case err == nil:
				won.Add(1)
				winner.Store(name)
			case errors.Is(err, items.ErrTerminal):
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, won.Load())
	got, err := st.Get(ctx, "e")
	require.NoError(t, err)
	if got.State == items.StateSuccess {
		require.Equal(t, winner.Load(), got.Files[0].Name)
	} else {
		require.Equal(t, winner.Load(), got.DetailedError)
	}
}

func testDelete(t *testing.T, st items.Store) {
	ctx := t.Context()
	created, err := st.Create(ctx, items.Item{ID: "d", Name: "gone"})
	require.NoError(t, err)
	_, err = st.Create(ctx, items.Item{ID: "d2", Name: "stays"})
	require.NoError(t, err)
	before, err := st.LastUpdated(ctx)
	require.NoError(t, err)

	require.NoError(t, st.Delete(ctx, "d"))
	after, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.True(t, after.After(before), "a delete moves LastUpdated: %v then %v", before, after)

	_, err = st.Get(ctx, "d")
	require.ErrorIs(t, err, items.ErrNotFound)
	require.ErrorIs(t, st.Delete(ctx, "d"), items.ErrNotFound, "a second delete is told the truth")
	again, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, after, again, "a failed delete does not move it")
	_, err = st.Update(ctx, "d", func(it *items.Item) error { it.Name = "back?"; return nil })
	require.ErrorIs(t, err, items.ErrNotFound)
	_, err = st.Get(ctx, "d2")
	require.NoError(t, err)

	// The id can be used again; the new item is newer.
	fresh, err := st.Create(ctx, items.Item{ID: "d"})
	require.NoError(t, err)
	require.True(t, fresh.Created.After(created.Created))
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"d2", "d"}, ids(list))
}

// testDeleteUnchanged: a compare-and-delete removes the version it was
// given, and only that one; it publishes and moves LastUpdated as Delete
// does, and a refused one changes nothing.
func testDeleteUnchanged(t *testing.T, st items.Store) {
	ctx := t.Context()
	judged, err := st.Create(ctx, items.Item{ID: "cd", Name: "old"})
	require.NoError(t, err)
	changed, err := st.Update(ctx, "cd", func(it *items.Item) error { it.Name = "touched"; return nil })
	require.NoError(t, err)
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	before, err := st.LastUpdated(ctx)
	require.NoError(t, err)

	require.ErrorIs(t, st.DeleteUnchanged(ctx, "cd", judged.Updated), items.ErrChanged,
		"the item changed after it was judged: it stays")
	got, err := st.Get(ctx, "cd")
	require.NoError(t, err)
	require.Equal(t, changed, got)
	again, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, before, again, "a refused delete does not move LastUpdated")

	require.NoError(t, st.DeleteUnchanged(ctx, "cd", changed.Updated))
	_, err = st.Get(ctx, "cd")
	require.ErrorIs(t, err, items.ErrNotFound)
	after, err := st.LastUpdated(ctx)
	require.NoError(t, err)
	require.True(t, after.After(before))
	require.Equal(t, items.Event{Type: items.EventDeleted, ID: "cd", LastUpdated: after}, Next(t, ch),
		"the first event is the delete: the refused one published nothing")
	require.ErrorIs(t, st.DeleteUnchanged(ctx, "cd", changed.Updated), items.ErrNotFound)
	require.ErrorIs(t, st.DeleteUnchanged(ctx, "never", changed.Updated), items.ErrNotFound)
	list, err := st.List(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

// testConcurrentDeleteUnchanged: deleters racing for one version delete
// it once; a deleter racing with an update either deletes the version it
// judged or is refused, and an update never brings a deleted item back.
func testConcurrentDeleteUnchanged(t *testing.T, st items.Store) {
	ctx := t.Context()
	it, err := st.Create(ctx, items.Item{ID: "race", State: items.StatePending})
	require.NoError(t, err)
	var deleted, gone atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := st.DeleteUnchanged(ctx, "race", it.Updated)
			switch {
			case err == nil:
				deleted.Add(1)
			case errors.Is(err, items.ErrNotFound):
				gone.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, deleted.Load())
	require.EqualValues(t, 7, gone.Load())

	for i := range 20 {
		id := fmt.Sprintf("vs%d", i)
		judged, err := st.Create(ctx, items.Item{ID: id, State: items.StatePending})
		require.NoError(t, err)
		var derr, uerr error
		wg.Go(func() { derr = st.DeleteUnchanged(ctx, id, judged.Updated) })
		wg.Go(func() {
			_, uerr = st.Update(ctx, id, func(it *items.Item) error { return it.Succeed(it.Generation, nil) })
		})
		wg.Wait()
		got, gerr := st.Get(ctx, id)
		if derr == nil {
			require.ErrorIs(t, uerr, items.ErrNotFound, "the delete came first: the update finds nothing")
			require.ErrorIs(t, gerr, items.ErrNotFound, "and brings nothing back")
		} else {
			require.ErrorIs(t, derr, items.ErrChanged, "the update came first: the delete is refused")
			require.NoError(t, uerr)
			require.NoError(t, gerr)
			require.Equal(t, items.StateSuccess, got.State)
		}
	}
}

// testLastUpdated: every change moves LastUpdated, even many in one
// millisecond, and the changed item's Updated is it.
func testLastUpdated(t *testing.T, st items.Store) {
	ctx := t.Context()
	var prev time.Time
	step := func(t *testing.T, at time.Time) {
		t.Helper()
		require.True(t, at.After(prev), "%v after %v", at, prev)
		last, err := st.LastUpdated(ctx)
		require.NoError(t, err)
		require.Equal(t, at, last)
		prev = at
	}
	for i := range 30 {
		id := fmt.Sprint("l", i)
		it, err := st.Create(ctx, items.Item{ID: id})
		require.NoError(t, err)
		step(t, it.Updated)
		it, err = st.Update(ctx, id, func(it *items.Item) error { it.State = items.StatePending; return nil })
		require.NoError(t, err)
		step(t, it.Updated)
		if i%3 == 0 {
			require.NoError(t, st.Delete(ctx, id))
			last, err := st.LastUpdated(ctx)
			require.NoError(t, err)
			step(t, last)
		}
	}
	require.WithinRange(t, prev, time.Now().Add(-clockSlack), time.Now().Add(clockSlack),
		"a burst keeps LastUpdated near the clock")
}

// Next returns the next event on ch, skipping none, or fails the test.
func Next(t testing.TB, ch <-chan items.Event) items.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		require.True(t, ok, "the subscription ended")
		return e
	case <-time.After(within):
		t.Fatal("no event")
		return items.Event{}
	}
}

func testEvents(t *testing.T, st items.Store) {
	ctx := t.Context()
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	created, err := st.Create(ctx, Full("ev"))
	require.NoError(t, err)
	// No change, a failed fn and a refused transition publish nothing.
	_, err = st.Update(ctx, "ev", func(*items.Item) error { return nil })
	require.NoError(t, err)
	_, err = st.Update(ctx, "ev", func(*items.Item) error { return errFn })
	require.ErrorIs(t, err, errFn)
	_, err = st.Update(ctx, "ev", func(it *items.Item) error { it.State = items.StateUploading; return nil })
	require.ErrorIs(t, err, items.ErrTransition)
	updated, err := st.Update(ctx, "ev", func(it *items.Item) error { return it.Succeed(it.Generation, nil) })
	require.NoError(t, err)
	require.NoError(t, st.Delete(ctx, "ev"))
	require.ErrorIs(t, st.Delete(ctx, "ev"), items.ErrNotFound)
	last, err := st.LastUpdated(ctx)
	require.NoError(t, err)

	e := Next(t, ch)
	require.Equal(t, items.EventCreated, e.Type)
	require.Equal(t, "ev", e.ID)
	require.Equal(t, &created, e.Item)
	require.Equal(t, created.Updated, e.LastUpdated)

	e = Next(t, ch)
	require.Equal(t, items.EventUpdated, e.Type)
	require.Equal(t, &updated, e.Item)
	require.Equal(t, updated.Updated, e.LastUpdated)

	e = Next(t, ch)
	require.Equal(t, items.Event{Type: items.EventDeleted, ID: "ev", LastUpdated: last}, e)

	select {
	case e := <-ch:
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
}

func testEventsEnd(t *testing.T, st items.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	other, err := st.Subscribe(t.Context())
	require.NoError(t, err)
	cancel()
	select {
	case _, ok := <-ch:
		require.False(t, ok)
	case <-time.After(within):
		t.Fatal("the subscription did not end with its context")
	}
	_, err = st.Create(t.Context(), items.Item{ID: "after"})
	require.NoError(t, err)
	require.Equal(t, "after", Next(t, other).ID, "other subscriptions go on")
}

func testCanceledContext(t *testing.T, st items.Store) {
	_, err := st.Create(t.Context(), items.Item{ID: "x"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = st.Create(ctx, items.Item{ID: "y"})
	require.ErrorIs(t, err, context.Canceled)
	_, err = st.Get(ctx, "x")
	require.ErrorIs(t, err, context.Canceled)
	_, err = st.List(ctx)
	require.ErrorIs(t, err, context.Canceled)
	_, err = st.Update(ctx, "x", func(it *items.Item) error { it.Name = "n"; return nil })
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, st.Delete(ctx, "x"), context.Canceled)
	_, err = st.LastUpdated(ctx)
	require.ErrorIs(t, err, context.Canceled)
	got, err := st.Get(t.Context(), "x")
	require.NoError(t, err)
	require.Empty(t, got.Name)
}

func testClose(t *testing.T, st items.Store) {
	ctx := t.Context()
	ch, err := st.Subscribe(ctx)
	require.NoError(t, err)
	_, err = st.Create(ctx, items.Item{ID: "x"})
	require.NoError(t, err)
	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "again")
	// The subscription ends: what was published before may still come.
	deadline := time.After(within)
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-deadline:
			t.Fatal("the subscription did not end with the store")
		}
	}
	_, err = st.Create(ctx, items.Item{ID: "y"})
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = st.Get(ctx, "x")
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = st.List(ctx)
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = st.Update(ctx, "x", func(*items.Item) error { return nil })
	require.ErrorIs(t, err, items.ErrUnavailable)
	require.ErrorIs(t, st.Delete(ctx, "x"), items.ErrUnavailable)
	_, err = st.LastUpdated(ctx)
	require.ErrorIs(t, err, items.ErrUnavailable)
	_, err = st.Subscribe(ctx)
	require.ErrorIs(t, err, items.ErrUnavailable)
}
