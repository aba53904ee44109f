// Command stdio serves a line program over WebSocket, websocketd style,
// through drover's one setup call: each session gets a process of its own
// (-command, default /bin/cat), a task goes to its stdin as one line, and
// the lines it writes back are the results.
//
//	go run ./examples/stdio -addr 127.0.0.1:8181
//
// and from Go:
//
//	s, _ := client.Dial(ctx, "ws://127.0.0.1:8181/ws", client.Options{Pool: "lines"})
//	results, _ := s.Execute(ctx, json.RawMessage(`{"hello":"stdio"}`))
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8181", "listen address")
	command := flag.String("command", "/bin/cat", "the program each session runs")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *command); err != nil {
		fmt.Fprintln(os.Stderr, "stdio:", err)
		stop()     // os.Exit skips the deferred stop
		os.Exit(1) //nolint:gocritic // stop ran on the line above
	}
}

func run(ctx context.Context, addr, command string) error {
	srv, err := drover.New(drover.Config{
		Addr: addr,
		Farm: farm.Config{Slots: 4},
		Pools: []drover.Pool{{
			Pool: manager.Pool{Name: "lines", Warm: 1},
			PoolSpec: farm.PoolSpec{Command: command, Protocol: farm.ProtocolStdio,
				// cat writes no end-of-task line: a task ends after 50 ms
				// without output. A program that does sets Delimiter.
				IdleGap: 50 * time.Millisecond},
		}},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", srv.Addr())
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return srv.Stop(sctx)
}
