package app

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// reloads is what a running node re-reads on SIGHUP: certificate files,
// keys. Each part registers a hook with OnReload when it is built; Reload
// runs them all. A hook that fails must keep what it had (a bad file never
// replaces a good certificate), so one failure does not stop the others.
type reloads struct {
	mu    sync.Mutex
	log   *slog.Logger
	hooks []reloadHook
}

type reloadHook struct {
	name string
	fn   func() error
}

// OnReload adds fn to what Reload runs, under name ("tls certificate",
// "auth keys"). fn re-reads its files and swaps what it serves only if
// they are good; its error names the file and what is wrong with it, never
// a secret, since it is logged.
func (r *reloads) OnReload(name string, fn func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hooks = append(r.hooks, reloadHook{name: name, fn: fn})
}

// Reload runs every hook, in the order they were added, logs each outcome
// and returns their errors joined, each prefixed with its hook's name.
// Calls do not overlap.
func (r *reloads) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, h := range r.hooks {
		if err := h.fn(); err != nil {
			log.Error("reload failed; keeping what was loaded before", "what", h.name, "err", err)
			errs = append(errs, fmt.Errorf("reload %s: %w", h.name, err))
			continue
		}
		log.Info("reloaded", "what", h.name)
	}
	return errors.Join(errs...)
}

// reloadLog is the logger of a node's reloads.
func reloadLog(log *slog.Logger) *slog.Logger { return log.With("component", "reload") }
