package app

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/internal/lib/cleanup"
)

// node is a drover.Server and what its command opened for it, such as the
// store: `drover up` and `drover manager`.
type node struct {
	srv      *drover.Server
	grace    time.Duration
	cleanups cleanup.Stack
	// OnReload and Reload: what SIGHUP re-reads.
	reloads
}

// shutdownGrace is the configured grace, or 10 s.
func shutdownGrace(d time.Duration) time.Duration {
	if d <= 0 {
		return 10 * time.Second
	}
	return d
}

// undoIfFailed runs the cleanups registered so far when *err is set: the
// deferred rollback of a constructor.
func (n *node) undoIfFailed(err *error) {
	if *err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*n.grace)
	defer cancel()
	*err = errors.Join(*err, n.cleanups.Run(ctx))
}

// Addr is the address the manager listens on.
func (n *node) Addr() net.Addr { return n.srv.Addr() }

// Start serves in the background.
func (n *node) Start() error { return n.srv.Start() }

// Stop ends what the constructor and Start began, last first, and joins
// their errors; ctx bounds it. A second Stop does nothing.
func (n *node) Stop(ctx context.Context) error { return n.cleanups.Run(ctx) }

// Run serves until ctx ends or serving fails, then stops: clients get close
// frames, sessions end within the shutdown grace, and a local farm's
// instances are stopped within a grace more.
func (n *node) Run(ctx context.Context) error {
	err := n.Start()
	if err == nil {
		select {
		case <-ctx.Done():
		case <-n.srv.Done():
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*n.grace)
	defer cancel()
	return errors.Join(err, n.Stop(sctx))
}
