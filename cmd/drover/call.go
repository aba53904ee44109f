package main

import (
	"bufio"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/lib/bearer"
)

func newCallCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "call [TASK-JSON ...]",
		Short: "Open a session, run tasks, print their results",
		Long: `call opens one session on a manager, runs each task given as a JSON
argument (or, with none, each line of standard input) in order, and prints
every result as a JSON line: {"task":N,"data":…} or {"task":N,"binary":BASE64}.
A failed task prints {"task":N,"error":{…}} and call exits 1 at the end.`,
		Example: `  drover call '{"command":"pid"}' '{"command":"set","key":"a","value":1}' '{"command":"get","key":"a"}'
  echo '{"command":"echo","hello":"world"}' | drover call`,
	}
	url := cmd.Flags().String("url", "ws://localhost:8181/ws", "the manager's WebSocket endpoint")
	pool := cmd.Flags().String("pool", "", "pool to run in")
	noWait := cmd.Flags().Bool("no-wait", false, "fail at once when no instance is free")
	token := cmd.Flags().String("token", "", "a JWT or API key to authenticate with (prefer DROVER_TOKEN)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out := cmd.OutOrStdout()
		var header http.Header
		if t := cmp.Or(*token, os.Getenv("DROVER_TOKEN")); t != "" {
			header = bearer.Header(t)
		}
		s, err := client.Dial(ctx, *url, client.Options{
			Pool:     *pool,
			NoWait:   *noWait,
			Header:   header,
			OnQueued: func(p int) { fmt.Fprintf(cmd.ErrOrStderr(), "queued at position %d\n", p) },
			OnEvent:  func(name string, _ json.RawMessage) { fmt.Fprintf(cmd.ErrOrStderr(), "event: %s\n", name) },
		})
		if err != nil {
			return err
		}
		defer func() { _ = s.Logout() }()
		fmt.Fprintf(cmd.ErrOrStderr(), "session %s on instance %s\n", s.ID, s.Instance)
		next := argsOrLines(args, cmd.InOrStdin())
		failed := 0
		enc := json.NewEncoder(out)
		for n := 1; ; n++ {
			task, ok := next()
			if !ok {
				break
			}
			res, err := s.Execute(ctx, json.RawMessage(task))
			for _, r := range res {
				if r.Binary != nil {
					_ = enc.Encode(map[string]any{"task": n, "binary": base64.StdEncoding.EncodeToString(r.Binary)})
				} else {
					_ = enc.Encode(map[string]any{"task": n, "data": r.Data})
				}
			}
			if err != nil {
				failed++
				_ = enc.Encode(map[string]any{"task": n, "error": err.Error()})
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d task(s) failed", failed)
		}
		return nil
	}
	return cmd
}

// argsOrLines yields the arguments, or the non-empty lines of r when there
// are none.
func argsOrLines(args []string, r io.Reader) func() (string, bool) {
	if len(args) > 0 {
		i := 0
		return func() (string, bool) {
			if i >= len(args) {
				return "", false
			}
			i++
			return args[i-1], true
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return func() (string, bool) {
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				return line, true
			}
		}
		return "", false
	}
}
