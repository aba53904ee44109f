// Command drover-worker is the reference instance program alone: what
// `drover worker` runs, in a binary that holds nothing else. A farm
// starts an instance per cold session, and a process of the whole drover
// binary spends its first milliseconds in the package initialisation of
// everything drover links (HTTP router, Docker and S3 clients, metrics);
// this one does not. `drover up` runs it when it sits next to the drover
// executable (make build puts it there), and `drover worker` otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/drover-dev/drover/worker"
)

func main() {
	fs := flag.NewFlagSet("drover-worker", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address (default --host:$DROVER_PORT)")
	host := fs.String("host", "127.0.0.1", "listen host with $DROVER_PORT (0.0.0.0 in a container)")
	modelDir := fs.String("model-dir", "", "the directory of the model the instance serves")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	_ = fs.Parse(os.Args[1:])
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "drover-worker: bad --log-level %q\n", *level)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := worker.Run(ctx, worker.Config{Addr: *addr, Host: *host, ModelDir: *modelDir, Logger: log}); err != nil {
		fmt.Fprintln(os.Stderr, "drover-worker:", err)
		os.Exit(1)
	}
}
