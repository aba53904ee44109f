package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover"
)

// streamFlags are the flags of app.StreamConfig.
func streamFlags(fs *pflag.FlagSet) {
	fs.String("stream-pool", drover.DefaultStreamPool, "stream pool of streaming sessions (GET /api/streamingSession)")
	fs.Duration("stream-initial-use", 0, "a streaming session no viewer connected to within this time ends (default viewer pool; 0: 60s)")
}
