// Command drover is the session instance manager. `drover up` runs the
// whole system on one machine; `drover manager` and `drover farm` split it
// over machines; `drover worker` is the reference instance program;
// `drover call` and `drover load` are client tools (see `drover help`).
// Programs that embed drover start from package drover instead.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		// Errors of package drover name it already.
		fmt.Fprintln(os.Stderr, "drover:", strings.TrimPrefix(err.Error(), "drover: "))
		return 1
	}
	return 0
}
