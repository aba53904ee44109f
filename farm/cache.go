package farm

import (
	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/farmapi"
)

// Cache is the farm's model cache; nil without one.
func (f *Farm) Cache() *modelcache.Cache { return f.cache }

// cacheStatus is c's part of the farm's status; nil without a cache.
func cacheStatus(c *modelcache.Cache) *farmapi.CacheStatus {
	if c == nil {
		return nil
	}
	s := c.Stats()
	return &farmapi.CacheStatus{MaxBytes: s.MaxBytes, UsedBytes: s.UsedBytes, Entries: s.Entries,
		Pinned: s.Pinned, Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, Uncached: s.Uncached}
}
