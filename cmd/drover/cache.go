package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/app"
)

// cacheFlags are a farm's model cache flags (`drover farm`, and `drover
// up` for its local farm).
func cacheFlags(fs *pflag.FlagSet, dirDefault string) {
	fs.Int64("cache-size", app.DefaultCacheSizeMB,
		"MB of downloaded inputs and models the farm keeps for later jobs and sessions (localCache.maxSize); 0: no cache")
	fs.String("cache-dir", "", "where the farm keeps its model cache (default "+dirDefault+")")
}
