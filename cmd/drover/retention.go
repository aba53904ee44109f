package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/internal/lib/duration"
)

// retentionFlags are the flags of app.RetentionConfig.
func retentionFlags(fs *pflag.FlagSet) {
	maxAge, unfinished := duration.Duration(0), duration.Duration(0)
	interval := duration.Duration(conversion.DefaultRetentionInterval)
	fs.Var(&maxAge, "retention-max-age", `purge conversion items not changed for this long, e.g. "30d"; 0: never`)
	fs.Var(&unfinished, "retention-unfinished", `purge conversion items that are not SUCCESS after this long without a change, e.g. "24h"; 0: never`)
	fs.Var(&interval, "retention-interval", "how often retention looks at the items")
}
