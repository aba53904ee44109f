// Command native embeds drover with a native pool and middleware. The
// program is its own instance program: run as "native worker" it is
// drover's reference worker. Middleware answers, rewrites, discards and
// adds tasks; a session driven from Go with Manager().Open shows each, and
// then WebSocket clients get the same on -addr until the program is
// interrupted.
//
//	go run ./examples/native -addr 127.0.0.1:8181
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		err = worker.Run(ctx, worker.Config{}) // listens on $DROVER_PORT, which the farm sets
	} else {
		addr := flag.String("addr", "127.0.0.1:8181", "listen address")
		flag.Parse()
		err = run(ctx, *addr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "native:", err)
		stop()     // os.Exit skips the deferred stop
		os.Exit(1) //nolint:gocritic // stop ran on the line above
	}
}

func run(ctx context.Context, addr string) (err error) {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	srv, err := drover.New(drover.Config{
		Addr: addr,
		Farm: farm.Config{Slots: 2},
		Pools: []drover.Pool{{
			Pool:     manager.Pool{Name: "kernel", Warm: 1},
			PoolSpec: farm.PoolSpec{Command: self, Args: []string{"worker"}}, // native by default
		}},
	})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Stop(sctx))
	}()
	m := srv.Manager()
	m.Use(middleware.Func(tasks))
	if err := srv.Start(); err != nil {
		return err
	}

	// A session driven from Go, through the same middleware.
	s, err := m.Open(ctx, manager.OpenOptions{Pool: "kernel"})
	if err != nil {
		return err
	}
	for _, task := range []string{
		`{"command":"version"}`,
		`{"command":"greet","name":"Ada"}`,
		`{"command":"noop"}`,
		`{"command":"batch","tasks":[{"command":"set","key":"a","value":1},{"command":"get","key":"a"}]}`,
	} {
		results, err := s.Execute(ctx, []byte(task))
		if err != nil {
			return err
		}
		out, _ := json.Marshal(append([]manager.Result{}, results...)) // [] for none
		fmt.Printf("%s -> %s\n", task, out)
	}
	_ = s.Close()

	fmt.Printf("listening on %s\n", srv.Addr())
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	return nil
}

// tasks is the middleware. It sees every task of every session, from
// WebSocket clients and from Open alike.
func tasks(ctx context.Context, t *session.Task, w session.ResultWriter, next middleware.Handler) error {
	var task struct {
		Command string            `json:"command"`
		Name    string            `json:"name"`
		Tasks   []json.RawMessage `json:"tasks"`
	}
	if err := json.Unmarshal(t.Data, &task); err != nil {
		return session.NewError(session.CodeBadRequest, "a task is a JSON object")
	}
	switch task.Command {
	case "version": // answered here: the instance never sees it
		return w.WriteResult([]byte(`{"version":"native-example/1"}`))
	case "greet": // rewritten into a task the instance knows
		t.Data, _ = json.Marshal(map[string]string{"command": "echo", "greeting": "hello, " + task.Name})
		return next.ServeTask(ctx, t, w)
	case "noop": // discarded: the client gets done, no result
		return nil
	case "batch": // tasks added: each runs on the instance, every result reaches the client
		for _, data := range task.Tasks {
			if err := next.ServeTask(ctx, &session.Task{Data: data, Session: t.Session}, w); err != nil {
				return err
			}
		}
		return nil
	}
	return next.ServeTask(ctx, t, w)
}
