package app

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/internal/lib/cleanup"
)

// DefaultCacheSizeMB is the default size of a farm's model cache, in MB.
const DefaultCacheSizeMB = 1024

// CacheConfig configures a farm's model cache (farm/modelcache): the files
// it downloads from managers, kept for the next job or session of the same
// item.
type CacheConfig struct {
	// CacheSize caps the cache in MB (2^20 bytes), as the HOOPS
	// conversion server's localCache.maxSize; 0 for no cache.
	CacheSize int64 `koanf:"cache_size"`
	// CacheDir holds the cache; default "cache" in the farm's state
	// directory.
	CacheDir string `koanf:"cache_dir"`
}

// open opens the cache, in defaultDir unless CacheDir is set, and pushes
// its Close; nil without one.
func (cc CacheConfig) open(defaultDir string, log *slog.Logger, reg prometheus.Registerer, cleanups *cleanup.Stack) (*modelcache.Cache, error) {
	switch {
	case cc.CacheSize < 0:
		return nil, errors.New("the cache size must not be negative (0: no cache)")
	case cc.CacheSize == 0:
		return nil, nil
	case cc.CacheSize > math.MaxInt64/modelcache.MB:
		return nil, fmt.Errorf("a cache size of %d MB is too large", cc.CacheSize)
	}
	dir := coalesce(cc.CacheDir, defaultDir)
	c, err := modelcache.Open(modelcache.Config{Dir: dir, MaxBytes: cc.CacheSize * modelcache.MB,
		Logger: log.With("component", "cache"), Registerer: reg})
	if errors.Is(err, modelcache.ErrInUse) {
		return nil, fmt.Errorf("%w; give each farm its own --cache-dir", err)
	}
	if err != nil {
		return nil, fmt.Errorf("farm model cache: %w", err)
	}
	cleanups.PushFunc("model cache", c.Close)
	return c, nil
}

// upCacheDir is the default cache directory of `drover up`'s local farm,
// whose id changes from run to run: one per data directory.
func upCacheDir(data string) string {
	if abs, err := filepath.Abs(data); err == nil {
		data = abs
	}
	return filepath.Join(farm.DefaultStateDir(farm.StableID("up "+data)), "cache")
}
