// Package hijackserve runs an http.Server whose handlers hijack their
// connections (WebSockets) and stops it without leaving them behind:
// net/http forgets a connection once it is hijacked, so Shutdown and Close
// neither end nor wait for it. Serve tracks the handlers itself.
//
// It owns the serve loop only; ending the hijacked connections is the
// handlers' business, through the request context, which derives from
// Serve's ctx and is done when Serve stops.
package hijackserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/lib/httpguard"
)

// ReadHeaderTimeout bounds how long a client may take to send its request
// headers.
const ReadHeaderTimeout = 10 * time.Second

// Serve serves h on ln until ctx is done or ln fails. Then it closes ln,
// cancels every request context and waits for every handler to return,
// hijacked or not. It returns nil after ctx ends, or the listener's error
// (prefixed with name) when ln failed first. A request that arrives while
// Serve stops gets 503. Log receives net/http's own messages at debug
// level.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, name string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var t tracker
	srv := &http.Server{
		Handler:     t.wrap(h, name),
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// The default limits: idle connections and headers bounded, bodies
	// paced, no read or write timeout that would outlive the upgrade.
	httpguard.Timeouts{ReadHeader: ReadHeaderTimeout}.Apply(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("%s: serve %s: %w", name, ln.Addr(), err)
	}
	// Cancel first: hijacked connections end through their request
	// context. Close stops the listener and the plain HTTP connections.
	cancel()
	_ = srv.Close()
	if err == nil {
		// http.ErrServerClosed, caused by the Close above.
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = serr
		}
	}
	t.closeAndWait()
	return err
}

// tracker counts the running handlers so that Serve can wait for them.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (t *tracker) wrap(h http.Handler, name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.add() {
			http.Error(w, name+" shutting down", http.StatusServiceUnavailable)
			return
		}
		defer t.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// add registers a handler unless closeAndWait has begun: a request read
// just before the server closed may still reach the handler afterwards.
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
