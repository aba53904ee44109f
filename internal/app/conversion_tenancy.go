package app

import (
	"errors"

	"github.com/drover-dev/drover/conversion"
)

// TenancyConfig bounds what each tenant's conversion items hold (see
// conversion.TenantQuota); zero is unlimited.
type TenancyConfig struct {
	// TenantMaxConversions is the most conversions a tenant may have in
	// flight (uploading or converting).
	TenantMaxConversions int `koanf:"tenant_max_conversions"`
	// TenantMaxStorage is the most bytes a tenant's uploads and outputs
	// may hold.
	TenantMaxStorage int64 `koanf:"tenant_max_storage"`
}

func (tc TenancyConfig) quota() (conversion.TenantQuota, error) {
	if tc.TenantMaxConversions < 0 || tc.TenantMaxStorage < 0 {
		return conversion.TenantQuota{}, errors.New("tenant_max_conversions and tenant_max_storage cannot be negative")
	}
	return conversion.TenantQuota{MaxInFlight: tc.TenantMaxConversions, MaxBytes: tc.TenantMaxStorage}, nil
}
