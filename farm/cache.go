package farm

import (
	"context"
	"fmt"
	"io"
	"os"

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

// cachedModels reads a streaming session's model files through the farm's
// cache: the second session of a model copies it from the farm's disk
// instead of fetching it again. Files without a version, or a farm without
// a cache, go straight to fetch.
type cachedModels struct {
	cache *modelcache.Cache
	fetch ModelFetcher
}

var _ ModelFetcher = cachedModels{}

// withCache wraps fetch with cache; fetch itself without one.
func withCache(cache *modelcache.Cache, fetch ModelFetcher) ModelFetcher {
	if cache == nil || fetch == nil {
		return fetch
	}
	return cachedModels{cache: cache, fetch: fetch}
}

// FetchModel implements ModelFetcher. The session gets a copy: its
// directory is read-only to the instance, but an instance running as the
// farm's user could change the mode of a shared file.
func (c cachedModels) FetchModel(ctx context.Context, mf farmapi.ModelFile, w io.Writer) (int64, error) {
	if mf.Version == "" || mf.Item == "" || mf.Source == "" {
		return c.fetch.FetchModel(ctx, mf, w)
	}
	key := modelcache.ItemKey(mf.Item, mf.Source, mf.Version)
	h, err := c.cache.Get(ctx, key, func(ctx context.Context, w io.Writer) (int64, error) {
		n, err := c.fetch.FetchModel(ctx, mf, w)
		if err == nil && mf.Size > 0 && n != mf.Size {
			err = fmt.Errorf("got %d bytes of %d", n, mf.Size)
		}
		return n, err
	})
	if err != nil {
		return 0, err
	}
	defer h.Close()
	if mf.Size > 0 && h.Size() != mf.Size {
		c.cache.Remove(key) // changed on the farm's disk
		return 0, fmt.Errorf("the cached copy has %d bytes of %d", h.Size(), mf.Size)
	}
	src, err := os.Open(h.Path())
	if err != nil {
		return 0, err
	}
	defer src.Close()
	return io.Copy(w, src)
}
