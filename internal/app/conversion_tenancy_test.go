package app

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
)

// TestTenancyQuota: the config makes the service's quota, and refuses
// negative bounds.
func TestTenancyQuota(t *testing.T) {
	q, err := TenancyConfig{TenantMaxConversions: 3, TenantMaxStorage: 1 << 20}.quota()
	require.NoError(t, err)
	require.Equal(t, conversion.TenantQuota{MaxInFlight: 3, MaxBytes: 1 << 20}, q)
	for _, tc := range []TenancyConfig{{TenantMaxConversions: -1}, {TenantMaxStorage: -1}} {
		_, err := tc.quota()
		require.Error(t, err)
	}
}
