package conversion_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
)

func as(tenant string, roles ...string) context.Context {
	return auth.NewContext(context.Background(), &auth.Principal{User: "u-" + tenant, Tenant: tenant, Roles: roles})
}

// TestUsageFollowsItems: a tenant's count follows its items through an
// upload, a conversion's outputs, a reconversion, a delete and a purge,
// and the quota of conversions in flight holds for uploads and
// reconversions alike.
func TestUsageFollowsItems(t *testing.T) {
	var later atomic.Bool
	f := newService(t, queue.Options{}, func(c *conversion.Config) {
		c.Quota = conversion.TenantQuota{MaxInFlight: 1}
		c.Retention = conversion.Retention{MaxAge: time.Hour}
		c.Now = func() time.Time {
			if later.Load() {
				return time.Now().Add(2 * time.Hour)
			}
			return time.Now()
		}
	})
	a := as("tenant-a")
	one, err := f.svc.Upload(a, conversion.Options{}, "cube.stl", strings.NewReader("solid cube"))
	require.NoError(t, err)
	require.Equal(t, "tenant-a", one.Tenant)
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 10}, f.svc.Usage("tenant-a"))
	_, err = f.svc.Upload(a, conversion.Options{}, "two.stl", strings.NewReader("2"))
	require.ErrorIs(t, err, conversion.ErrQuota)
	_, err = f.svc.Upload(as("tenant-b"), conversion.Options{SkipConversion: true}, "b.stl", strings.NewReader("bb"))
	require.NoError(t, err, "another tenant's quota is its own")

	_, err = complete(f.svc, lease(t, f.svc, "farm"), "GLB")
	require.NoError(t, err)
	waitState(t, f.svc, one.ID)
	require.Equal(t, conversion.TenantUsage{InFlight: 0, Bytes: 13}, f.svc.Usage("tenant-a"), "the output counts")

	// A reconversion is in flight, and drops the outputs.
	_, err = f.svc.Reconvert(a, one.ID, conversion.Reconversion{})
	require.NoError(t, err)
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 10}, f.svc.Usage("tenant-a"))
	_, err = f.svc.Upload(a, conversion.Options{}, "two.stl", strings.NewReader("2"))
	require.ErrorIs(t, err, conversion.ErrQuota)
	_, err = f.svc.Reconvert(a, one.ID, conversion.Reconversion{})
	require.NoError(t, err, "reconverting what is in flight adds nothing in flight")
	_, err = complete(f.svc, lease(t, f.svc, "farm"), "GLB")
	require.NoError(t, err)
	waitState(t, f.svc, one.ID)

	two, err := f.svc.Upload(a, conversion.Options{}, "two.stl", strings.NewReader("2"))
	require.NoError(t, err)
	_, err = f.svc.Reconvert(a, one.ID, conversion.Reconversion{})
	require.ErrorIs(t, err, conversion.ErrQuota, "reconverting an ended item is one more in flight")
	require.NoError(t, f.svc.Delete(a, two.ID))
	require.Equal(t, conversion.TenantUsage{InFlight: 0, Bytes: 13}, f.svc.Usage("tenant-a"))

	later.Store(true)
	purged, err := f.svc.PurgeOnce(context.Background())
	require.NoError(t, err)
	require.Contains(t, purged, one.ID)
	require.Equal(t, conversion.TenantUsage{}, f.svc.Usage("tenant-a"), "a purge frees the tenant's storage")
}

// TestTenantScope: Get, List, LastUpdated, Subscribe and the writes see
// the caller's tenant only; an admin and a call without a principal see
// all; a read-only caller reads but does not write.
func TestTenantScope(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	bg := context.Background()
	a, b, admin := as("tenant-a"), as("tenant-b"), as("ops", auth.RoleAdmin)
	subA, err := f.svc.Subscribe(a)
	require.NoError(t, err)
	subB, err := f.svc.Subscribe(b)
	require.NoError(t, err)

	itB, err := f.svc.Create(b, conversion.Options{Name: "b"})
	require.NoError(t, err)
	require.NoError(t, f.svc.Delete(b, itB.ID))
	itA, err := f.svc.Create(a, conversion.Options{Name: "a"})
	require.NoError(t, err)
	marker, err := f.svc.Create(b, conversion.Options{Name: "marker"})
	require.NoError(t, err)

	// A's first event is its own create: B's came before and were left out.
	e := nextEvent(t, subA)
	require.Equal(t, items.EventCreated, e.Type)
	require.Equal(t, itA.ID, e.ID)
	for _, want := range []struct {
		typ items.EventType
		id  string
	}{{items.EventCreated, itB.ID}, {items.EventDeleted, itB.ID}, {items.EventCreated, marker.ID}} {
		e := nextEvent(t, subB)
		require.Equal(t, want.typ, e.Type)
		require.Equal(t, want.id, e.ID, "B sees its own events only")
	}

	_, err = f.svc.Get(a, marker.ID)
	require.ErrorIs(t, err, conversion.ErrNotFound)
	require.ErrorIs(t, err, items.ErrNotFound, "as a missing item")
	for _, ctx := range []context.Context{admin, bg, b} {
		_, err = f.svc.Get(ctx, marker.ID)
		require.NoError(t, err)
	}
	require.ErrorIs(t, f.svc.Delete(a, marker.ID), conversion.ErrNotFound)
	_, err = f.svc.Reconvert(a, marker.ID, conversion.Reconversion{})
	require.ErrorIs(t, err, conversion.ErrNotFound)
	_, err = f.svc.AddFile(a, marker.ID, "x.stl", strings.NewReader("x"))
	require.ErrorIs(t, err, conversion.ErrNotFound)
	_, _, err = f.svc.OpenOriginal(a, marker.ID)
	require.ErrorIs(t, err, conversion.ErrNotFound)

	listA, err := f.svc.List(a)
	require.NoError(t, err)
	require.Len(t, listA, 1)
	listAll, err := f.svc.List(admin)
	require.NoError(t, err)
	require.Len(t, listAll, 2)

	lastA, err := f.svc.LastUpdated(a)
	require.NoError(t, err)
	require.Equal(t, itA.Updated, lastA)
	_, err = f.svc.Create(b, conversion.Options{Name: "more"})
	require.NoError(t, err)
	lastA2, err := f.svc.LastUpdated(a)
	require.NoError(t, err)
	require.Equal(t, lastA, lastA2, "B's change is not A's")
	lastAll, err := f.svc.LastUpdated(bg)
	require.NoError(t, err)
	require.True(t, lastAll.After(lastA))

	ro := auth.NewContext(bg, &auth.Principal{User: "key:r", Tenant: "tenant-a", ReadOnly: true})
	_, err = f.svc.Get(ro, itA.ID)
	require.NoError(t, err)
	_, err = f.svc.Upload(ro, conversion.Options{}, "x.stl", strings.NewReader("x"))
	require.ErrorIs(t, err, conversion.ErrReadOnly)
	_, err = f.svc.Create(ro, conversion.Options{})
	require.ErrorIs(t, err, conversion.ErrReadOnly)
	require.ErrorIs(t, f.svc.Delete(ro, itA.ID), conversion.ErrReadOnly)
	_, err = f.svc.Reconvert(ro, itA.ID, conversion.Reconversion{})
	require.ErrorIs(t, err, conversion.ErrReadOnly)
	_, _, err = f.svc.BeginDirect(ro, conversion.Options{}, "x.stl", 0)
	require.ErrorIs(t, err, conversion.ErrReadOnly)

	// Without a principal, items are the default tenant's.
	def, err := f.svc.Create(bg, conversion.Options{})
	require.NoError(t, err)
	require.Equal(t, auth.DefaultTenant, def.Tenant)
	_, err = f.svc.Get(as(auth.DefaultTenant), def.ID)
	require.NoError(t, err)
}

func nextEvent(t *testing.T, ch <-chan items.Event) items.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return items.Event{}
	}
}

// TestLegacyItemsAreDefaultTenant: a record made before items had
// tenants belongs to the default tenant, and counts in its usage.
func TestLegacyItemsAreDefaultTenant(t *testing.T) {
	store := items.NewMemory()
	legacy, err := store.Create(context.Background(), items.Item{Name: "old", State: items.StateSuccess,
		Originals: []items.Original{{Name: "old.stl", Stored: "x.stl", Size: 7}}})
	require.NoError(t, err)
	require.Empty(t, legacy.Tenant)
	f := newService(t, queue.Options{}, func(c *conversion.Config) { c.Items = store })
	require.Equal(t, auth.DefaultTenant, conversion.TenantOf(legacy))
	require.Equal(t, conversion.TenantUsage{Bytes: 7}, f.svc.Usage(auth.DefaultTenant), "counted at start")
	_, err = f.svc.Get(as(auth.DefaultTenant), legacy.ID)
	require.NoError(t, err)
	_, err = f.svc.Get(as("tenant-a"), legacy.ID)
	require.ErrorIs(t, err, conversion.ErrNotFound)
}
