package app

import (
	"os"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
)

// StreamConfig configures streaming sessions (GET /api/streamingSession).
type StreamConfig struct {
	// StreamPool is the stream pool sessions are placed in; default
	// drover.DefaultStreamPool, the reference viewer that the default
	// pools include. Name a pool of HOOPS SC servers here to stream with
	// them instead (docs/conversion.md, "Streaming sessions").
	StreamPool string `koanf:"stream_pool"`
	// StreamInitialUse is the initial-use time of the default viewer pool:
	// a session no viewer connected to within it ends. 0: the farm's
	// default (60 s).
	StreamInitialUse time.Duration `koanf:"stream_initial_use"`
}

// viewerPool is the reference viewer as a stream pool of `drover up` and
// `drover farm` without configured pools: this executable's `worker
// viewer`, serving its session directory, or the same in a container of
// the reference image.
func viewerPool(exe string, docker bool) PoolConfig {
	spec := farm.PoolSpec{Name: drover.DefaultStreamPool, Protocol: farm.ProtocolStream,
		Command: exe, Args: []string{"worker", "viewer", "--models", "{{.ModelDirs}}"}}
	if docker {
		spec.Command = "/drover"
		spec.Args = []string{"worker", "viewer", "--listen", "{{.Addr}}", "--models", "{{.ModelDirs}}"}
	}
	return PoolConfig{Pool: manager.Pool{Name: drover.DefaultStreamPool}, PoolSpec: spec}
}

// ownExe is this executable, for the default pools.
func ownExe() (string, error) { return os.Executable() }

// withInitialUse sets the default viewer pool's initial-use time.
func withInitialUse(pools []PoolConfig, d time.Duration) []PoolConfig {
	if d <= 0 {
		return pools
	}
	for i := range pools {
		if pools[i].PoolSpec.Name == drover.DefaultStreamPool && pools[i].InitialUse == 0 {
			pools[i].InitialUse = d
		}
	}
	return pools
}
