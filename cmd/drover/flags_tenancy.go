package main

import "github.com/spf13/pflag"

// tenancyFlags are the flags of app.TenancyConfig: the quotas of each
// tenant's conversion items.
func tenancyFlags(fs *pflag.FlagSet) {
	fs.Int("tenant-max-conversions", 0, "most conversions a tenant may have in flight (uploading or converting); 0: no limit")
	fs.Int64("tenant-max-storage", 0, "most bytes a tenant's conversion items (uploads and outputs) may hold; 0: no limit")
}
