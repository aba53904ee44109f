// Package examples_test builds every program under examples/, runs it on a
// free loopback port, drives it as its doc comment says, and stops it, so
// that the examples cannot rot.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
)

// waitFor bounds each wait on an example: to print its address, to answer,
// to exit.
const waitFor = 60 * time.Second

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	buildOut  []byte
)

// build builds every example once, into a directory of the test's.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "drover-examples-"); buildErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		cmd := exec.Command(goTool, "build", "-o", binDir+string(filepath.Separator), "./...")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	require.NoError(t, buildErr, "go build ./examples/...:\n%s", buildOut)
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// example is one running example program.
type example struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string   // host:port it listens on
	before []string // what it printed before its address
	stderr *bytes.Buffer
	quit   chan struct{} // closed when the test stops reading stdout
	exited chan struct{}
	err    error // set before exited is closed
}

// run starts example name on a free loopback port and waits for its
// "listening on ADDR" line. The cleanup stops it with SIGTERM and requires
// a clean exit.
func run(t *testing.T, name string, args ...string) *example {
	t.Helper()
	bin := filepath.Join(build(t), name)
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	e := &example{t: t, cmd: cmd, stderr: &bytes.Buffer{}, quit: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: e.stderr}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	// Lines up to the address come to the test; the rest is drained, so
	// that the program never blocks on its stdout.
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for found := false; sc.Scan(); {
			if !found {
				select {
				case lines <- sc.Text():
				case <-e.quit:
				}
				found = strings.HasPrefix(sc.Text(), "listening on ")
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(lines)
		e.err = cmd.Wait() // after the last read from its stdout
		close(e.exited)
	}()
	t.Cleanup(e.stop)

	timeout := time.After(waitFor)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-e.exited
				t.Fatalf("%s exited before listening: %v\nstdout:\n%s\nstderr:\n%s", name, e.err,
					strings.Join(e.before, "\n"), e.stderrText())
			}
			if addr, found := strings.CutPrefix(line, "listening on "); found {
				e.addr = addr
				return e
			}
			e.before = append(e.before, line)
		case <-timeout:
			t.Fatalf("%s printed no address within %s; stdout so far:\n%s\nstderr:\n%s", name, waitFor,
				strings.Join(e.before, "\n"), e.stderrText())
		}
	}
}

// stop sends SIGTERM and requires exit status 0 within waitFor.
func (e *example) stop() {
	close(e.quit)
	select {
	case <-e.exited:
	default:
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(waitFor):
			_ = e.cmd.Process.Kill()
			<-e.exited
			e.t.Errorf("%s did not exit within %s of SIGTERM", e.cmd.Path, waitFor)
		}
	}
	if e.err != nil {
		e.t.Errorf("%s: %v\nstderr:\n%s", e.cmd.Path, e.err, e.stderrText())
	}
}

func (e *example) stderrText() string {
	lw := e.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return e.stderr.String()
}

// lockedWriter lets the test read stderr while exec copies into it.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// data returns the JSON of each result.
func data(t *testing.T, res []client.Result) []string {
	t.Helper()
	out := make([]string, 0, len(res))
	for _, r := range res {
		require.Nil(t, r.Binary)
		out = append(out, string(r.Data))
	}
	return out
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

func TestExamples(t *testing.T) {
	build(t) // once, before the subtests run in parallel

	// A native pool: middleware answers, rewrites, discards and adds
	// tasks, for the in-process session and for WebSocket clients.
	t.Run("native", func(t *testing.T) {
		t.Parallel()
		e := run(t, "native")
		require.Equal(t, []string{
			`{"command":"version"} -> [{"version":"native-example/1"}]`,
			`{"command":"greet","name":"Ada"} -> [{"command":"echo","greeting":"hello, Ada"}]`,
			`{"command":"noop"} -> []`,
			`{"command":"batch","tasks":[{"command":"set","key":"a","value":1},{"command":"get","key":"a"}]} -> [{"ok":true},{"key":"a","value":1}]`,
		}, e.before)

		ctx := ctx(t)
		s, err := client.Dial(ctx, "ws://"+e.addr+"/ws", client.Options{})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Logout()) }()
		res, err := s.Execute(ctx, json.RawMessage(`{"command":"greet","name":"Grace"}`))
		require.NoError(t, err)
		require.Equal(t, []string{`{"command":"echo","greeting":"hello, Grace"}`}, data(t, res))
		res, err = s.Execute(ctx, json.RawMessage(`{"command":"batch","tasks":[{"command":"get","key":"a"}]}`))
		require.NoError(t, err)
		require.Equal(t, []string{`{"key":"a","value":null}`}, data(t, res), "a session of its own: a fresh instance")
		res, err = s.Execute(ctx, json.RawMessage(`{"command":"noop"}`))
		require.NoError(t, err)
		require.Empty(t, res)
	})

	// A stdio pool through the exported setup call, over WebSocket.
	t.Run("stdio", func(t *testing.T) {
		t.Parallel()
		e := run(t, "stdio")
		ctx := ctx(t)
		s, err := client.Dial(ctx, "ws://"+e.addr+"/ws", client.Options{Pool: "lines"})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Logout()) }()
		for _, task := range []string{`{"hello":"stdio"}`, `[1,2,3]`} {
			res, err := s.Execute(ctx, json.RawMessage(task))
			require.NoError(t, err)
			require.Equal(t, []string{task}, data(t, res), "cat gives the line back")
		}
	})

	// A route of the program's own, and a health rule with a status code
	// and a body.
	t.Run("health", func(t *testing.T) {
		t.Parallel()
		e := run(t, "health")
		base := "http://" + e.addr

		code, body := getJSON(t, base+"/hello?name=drover")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, map[string]any{"hello": "drover"}, body)

		code, body = getJSON(t, base+"/health")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, map[string]any{"free": 2.0}, body)

		ctx := ctx(t)
		for range 2 {
			s, err := client.Dial(ctx, "ws://"+e.addr+"/ws", client.Options{})
			require.NoError(t, err)
			defer func() { require.NoError(t, s.Logout()) }()
		}
		code, body = getJSON(t, base+"/health")
		require.Equal(t, http.StatusTooManyRequests, code)
		require.Equal(t, map[string]any{"free": 0.0, "reason": "keeping slots in reserve"}, body)

		_, status := getJSON(t, base+"/status")
		capa := status["capacity"].(map[string]any)
		require.Equal(t, "custom", capa["rule"])
		require.NotContains(t, capa, "threshold")
		require.Equal(t, false, capa["healthy"])
	})
}
