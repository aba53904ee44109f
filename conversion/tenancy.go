package conversion

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion/items"
)

// Tenancy. Every item belongs to a tenant: the tenant of the principal
// whose call made it (auth.FromContext of the call's context). A
// principal sees and touches only its tenant's items, admins every
// tenant's: Get, List, LastUpdated, Subscribe and every method that names
// an item answer for a foreign item exactly as for a missing one
// (ErrNotFound wrapping items.ErrNotFound), so that ids of other tenants'
// items leak nothing. A read-only principal may read but not upload,
// reconvert or delete (ErrReadOnly).
//
// A call without a principal has every right and creates items of
// auth.DefaultTenant: the service used in process without
// authentication, its own loops, and requests whose authority is a
// signed URL, checked when the URL was issued.

// Errors of tenancy. The API maps them to 403 and 429.
var (
	// ErrReadOnly: the caller may read but not change (a read-only API
	// key).
	ErrReadOnly = errors.New("this key is read-only")
	// ErrQuota: the tenant's quota of conversions in flight or of
	// storage is used up.
	ErrQuota = errors.New("conversion: tenant quota exceeded")
)

// TenantQuota bounds what one tenant may hold; zero fields are
// unlimited. The same quota applies to every tenant.
type TenantQuota struct {
	// MaxInFlight is the most items a tenant may have converting or
	// being uploaded (neither SUCCESS nor ERROR). An upload, uploadToken
	// or reconvert past it is refused with ErrQuota.
	MaxInFlight int
	// MaxBytes is the most bytes a tenant's items may hold: uploads and
	// outputs. An upload that would pass it is refused with ErrQuota and
	// stores nothing; outputs are never refused, so a conversion may
	// take a tenant past it, and its next upload is refused.
	MaxBytes int64
}

// TenantOf is the tenant that owns it: auth.DefaultTenant for records
// made before items had tenants.
func TenantOf(it items.Item) string { return cmp.Or(it.Tenant, auth.DefaultTenant) }

// callerTenant is the tenant the caller of ctx creates items in.
func callerTenant(ctx context.Context) string {
	if p := auth.FromContext(ctx); p != nil {
		return cmp.Or(p.Tenant, auth.DefaultTenant)
	}
	return auth.DefaultTenant
}

// seesAll reports whether the caller of ctx sees every tenant's items:
// no principal, or an admin.
func seesAll(ctx context.Context) bool {
	p := auth.FromContext(ctx)
	return p == nil || p.Admin()
}

// visible reports whether the caller of ctx may see an item of tenant.
func visible(ctx context.Context, tenant string) bool {
	return seesAll(ctx) || callerTenant(ctx) == tenant
}

// hidden is the error for an item the caller may not see: the one a
// missing item gets.
func hidden(id string) error {
	return fmt.Errorf("%w: %w: %s", ErrNotFound, items.ErrNotFound, id)
}

// writable returns ErrReadOnly for a caller that may only read.
func writable(ctx context.Context) error {
	if p := auth.FromContext(ctx); p != nil && !p.CanWrite() {
		return ErrReadOnly
	}
	return nil
}

// guard wraps an update function of item id: an item the caller of ctx
// may not see is not found, and stays unchanged.
func guard(ctx context.Context, id string, fn func(*items.Item) error) func(*items.Item) error {
	return func(it *items.Item) error {
		if !visible(ctx, TenantOf(*it)) {
			return hidden(id)
		}
		return fn(it)
	}
}

// TenantUsage is what a tenant holds, as the service counts it.
type TenantUsage struct {
	// InFlight counts the tenant's items neither SUCCESS nor ERROR.
	InFlight int
	// Bytes adds up the sizes of the tenant's uploads and outputs.
	Bytes int64
}

// Usage is what tenant holds now, as this service counts it (see
// Config.Quota).
func (s *Service) Usage(tenant string) TenantUsage { return s.usage.of(tenant) }

// sees reports whether the caller of ctx may see item id, from what the
// service counts (no round trip to the store), or the store if the item
// is not counted yet.
func (s *Service) sees(ctx context.Context, id string) bool {
	if seesAll(ctx) {
		return true
	}
	if t, ok := s.usage.tenantOf(id); ok {
		return visible(ctx, t)
	}
	_, err := s.Get(ctx, id)
	return err == nil
}

// visibleEvents passes on the events of in that the caller of ctx may
// see: its tenant's items (deletes by the item's tenant as counted), and
// resyncs.
func (s *Service) visibleEvents(ctx context.Context, in <-chan items.Event) <-chan items.Event {
	out := make(chan items.Event, cap(in))
	go func() {
		defer close(out)
		for e := range in {
			switch {
			case e.Type == items.EventResync:
			case e.Item != nil:
				if !visible(ctx, TenantOf(*e.Item)) {
					continue
				}
			default:
				if t, ok := s.usage.tenantOf(e.ID); !ok || !visible(ctx, t) {
					continue
				}
			}
			select {
			case out <- e:
			case <-ctx.Done():
				for range in {
				}
				return
			}
		}
	}()
	return out
}
