package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// reloader is a running node: what it re-reads on SIGHUP (certificates,
// keys) it logs itself, each with its outcome.
type reloader interface{ Reload() error }

// reloadOnHangup calls r.Reload on every SIGHUP until the returned stop is
// called; stop waits for a reload under way. Call it before the banner is
// printed: from then on a SIGHUP reloads instead of ending the process.
func reloadOnHangup(r reloader, log *slog.Logger) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-sigs:
				log.Info("SIGHUP: reloading")
				_ = r.Reload() // each part logged its outcome
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
		<-done
	}
}
