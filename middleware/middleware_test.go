package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/session"
)

// recorder is a ResultWriter that keeps what it is sent.
type recorder struct {
	results  []string
	binaries []string
	err      error // returned by every write when set
}

func (r *recorder) WriteResult(data []byte) error {
	r.results = append(r.results, string(data))
	return r.err
}

func (r *recorder) WriteBinary(data []byte) error {
	r.binaries = append(r.binaries, string(data))
	return r.err
}

var _ session.ResultWriter = (*recorder)(nil)

// instance stands in for the manager's final handler: it records the tasks
// it gets and answers each with its data and then "ok".
type instance struct {
	tasks []string
	err   error
}

func (h *instance) ServeTask(_ context.Context, t *session.Task, w session.ResultWriter) error {
	h.tasks = append(h.tasks, string(t.Data))
	if h.err != nil {
		return h.err
	}
	if err := w.WriteResult(t.Data); err != nil {
		return err
	}
	return w.WriteResult([]byte(`"ok"`))
}

func newTask(data string) *session.Task {
	return &session.Task{
		ID:      []byte(`"t1"`),
		Data:    []byte(data),
		Session: &session.Info{ID: "s1", Instance: "i1", Pool: "default"},
	}
}

func TestChainOrder(t *testing.T) {
	var trace []string
	step := func(name string) Middleware {
		return Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
			trace = append(trace, name)
			err := next.ServeTask(ctx, t, w)
			trace = append(trace, "/"+name)
			return err
		})
	}
	final := HandlerFunc(func(context.Context, *session.Task, session.ResultWriter) error {
		trace = append(trace, "instance")
		return nil
	})

	h := Chain{step("a"), step("b"), step("c")}.Then(final)
	for range 2 { // the built handler is reused for every task of a session
		trace = nil
		require.NoError(t, h.ServeTask(context.Background(), newTask(`1`), &recorder{}))
		require.Equal(t, []string{"a", "b", "c", "instance", "/c", "/b", "/a"}, trace)
	}
}

func TestEmptyChain(t *testing.T) {
	inst := &instance{}
	w := &recorder{}
	require.NoError(t, Chain(nil).Then(inst).ServeTask(context.Background(), newTask(`{"x":1}`), w))
	require.Equal(t, []string{`{"x":1}`}, inst.tasks)
	require.Equal(t, []string{`{"x":1}`, `"ok"`}, w.results)
}

func TestMiddleware(t *testing.T) {
	tests := []struct {
		name string
		mw   Middleware
		// data is the client's task data.
		data string
		// instance is what the instance is asked, client what the client gets.
		instance []string
		client   []string
		binaries []string
	}{
		{
			name: "pass through",
			mw: Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
				return next.ServeTask(ctx, t, w)
			}),
			data:     `{"op":"a"}`,
			instance: []string{`{"op":"a"}`},
			client:   []string{`{"op":"a"}`, `"ok"`},
		},
		{
			name: "discard",
			mw: Func(func(context.Context, *session.Task, session.ResultWriter, Handler) error {
				return nil
			}),
			data: `{"op":"drop me"}`,
		},
		{
			name: "rewrite",
			mw: Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
				t.Data = []byte(`{"op":"rewritten"}`)
				return next.ServeTask(ctx, t, w)
			}),
			data:     `{"op":"original"}`,
			instance: []string{`{"op":"rewritten"}`},
			client:   []string{`{"op":"rewritten"}`, `"ok"`},
		},
		{
			name: "answer itself",
			mw: Func(func(_ context.Context, _ *session.Task, w session.ResultWriter, _ Handler) error {
				if err := w.WriteResult([]byte(`{"cached":true}`)); err != nil {
					return err
				}
				return w.WriteBinary([]byte{0, 1, 2})
			}),
			data:     `{"op":"cached"}`,
			client:   []string{`{"cached":true}`},
			binaries: []string{"\x00\x01\x02"},
		},
		{
			name: "extra task",
			mw: Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
				extra := &session.Task{Data: []byte(`{"op":"prepare"}`), Session: t.Session}
				if err := next.ServeTask(ctx, extra, w); err != nil {
					return err
				}
				return next.ServeTask(ctx, t, w)
			}),
			data:     `{"op":"main"}`,
			instance: []string{`{"op":"prepare"}`, `{"op":"main"}`},
			client:   []string{`{"op":"prepare"}`, `"ok"`, `{"op":"main"}`, `"ok"`},
		},
		{
			name: "extra task with private results",
			mw: Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
				private := &recorder{}
				extra := &session.Task{Data: []byte(`{"op":"whoami"}`), Session: t.Session}
				if err := next.ServeTask(ctx, extra, private); err != nil {
					return err
				}
				if len(private.results) != 2 {
					return fmt.Errorf("private results: %q", private.results)
				}
				return next.ServeTask(ctx, t, w)
			}),
			data:     `{"op":"main"}`,
			instance: []string{`{"op":"whoami"}`, `{"op":"main"}`},
			client:   []string{`{"op":"main"}`, `"ok"`},
		},
		{
			name: "change results",
			mw: Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
				return next.ServeTask(ctx, t, upper{w})
			}),
			data:     `"abc"`,
			instance: []string{`"abc"`},
			client:   []string{`"ABC"`, `"OK"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := &instance{}
			w := &recorder{}
			task := newTask(tt.data)
			err := Chain{tt.mw}.Then(inst).ServeTask(context.Background(), task, w)
			require.NoError(t, err)
			require.Equal(t, tt.instance, inst.tasks, "instance")
			require.Equal(t, tt.client, w.results, "client")
			require.Equal(t, tt.binaries, w.binaries, "client binaries")
			require.Equal(t, `"t1"`, string(task.ID), "the client's id is kept")
		})
	}
}

// upper is a ResultWriter that upper-cases results on their way to the client.
type upper struct{ session.ResultWriter }

func (u upper) WriteResult(data []byte) error {
	return u.ResultWriter.WriteResult(bytes.ToUpper(data))
}

// observer is a ResultWriter that counts what passes through it.
type observer struct {
	session.ResultWriter
	results, binaries, bytes int
}

func (o *observer) WriteResult(data []byte) error {
	o.results++
	o.bytes += len(data)
	return o.ResultWriter.WriteResult(data)
}

func (o *observer) WriteBinary(data []byte) error {
	o.binaries++
	o.bytes += len(data)
	return o.ResultWriter.WriteBinary(data)
}

func TestObservingWriter(t *testing.T) {
	var seen []*observer
	observe := Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		o := &observer{ResultWriter: w}
		seen = append(seen, o)
		return next.ServeTask(ctx, t, o)
	})
	final := HandlerFunc(func(_ context.Context, _ *session.Task, w session.ResultWriter) error {
		if err := w.WriteResult([]byte(`[1,2]`)); err != nil {
			return err
		}
		return w.WriteBinary(make([]byte, 10))
	})
	w := &recorder{}
	require.NoError(t, Chain{observe, observe}.Then(final).ServeTask(context.Background(), newTask(`1`), w))

	require.Len(t, seen, 2)
	for _, o := range seen {
		require.Equal(t, 1, o.results)
		require.Equal(t, 1, o.binaries)
		require.Equal(t, 15, o.bytes)
	}
	require.Equal(t, []string{`[1,2]`}, w.results)
	require.Len(t, w.binaries, 1)
}

func TestErrors(t *testing.T) {
	lost := session.NewError(session.CodeInstanceLost, "farm f1 is gone")

	t.Run("from the instance", func(t *testing.T) {
		var sawErr error
		mw := Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
			sawErr = next.ServeTask(ctx, t, w)
			return sawErr
		})
		err := Chain{mw}.Then(&instance{err: lost}).ServeTask(context.Background(), newTask(`1`), &recorder{})
		require.Same(t, lost, err)
		require.Same(t, lost, sawErr)
	})

	t.Run("middleware refuses", func(t *testing.T) {
		inst := &instance{}
		refuse := Func(func(context.Context, *session.Task, session.ResultWriter, Handler) error {
			return fmt.Errorf("quota: %w", session.NewError(session.CodeRejected, "quota exceeded"))
		})
		err := Chain{refuse}.Then(inst).ServeTask(context.Background(), newTask(`1`), &recorder{})
		var se *session.Error
		require.ErrorAs(t, err, &se)
		require.Equal(t, session.CodeRejected, se.Code)
		require.Empty(t, inst.tasks)
	})

	t.Run("write error stops the instance", func(t *testing.T) {
		gone := errors.New("client gone")
		inst := &instance{}
		err := Chain{}.Then(inst).ServeTask(context.Background(), newTask(`1`), &recorder{err: gone})
		require.ErrorIs(t, err, gone)
	})
}

type ctxKey struct{}

func TestContextReachesInstance(t *testing.T) {
	tag := Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		return next.ServeTask(context.WithValue(ctx, ctxKey{}, "tagged"), t, w)
	})
	var got any
	final := HandlerFunc(func(ctx context.Context, _ *session.Task, _ session.ResultWriter) error {
		got = ctx.Value(ctxKey{})
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	h := Chain{tag}.Then(final)
	require.NoError(t, h.ServeTask(ctx, newTask(`1`), &recorder{}))
	require.Equal(t, "tagged", got)

	cancel()
	require.ErrorIs(t, h.ServeTask(ctx, newTask(`1`), &recorder{}), context.Canceled)
}

func TestSessionState(t *testing.T) {
	// Middleware keeps per-session state in session.Info.
	count := Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		n, _ := t.Session.Get(ctxKey{})
		c, _ := n.(int)
		t.Session.Set(ctxKey{}, c+1)
		return next.ServeTask(ctx, t, w)
	})
	h := Chain{count}.Then(&instance{})
	info := &session.Info{ID: "s"}
	for range 3 {
		require.NoError(t, h.ServeTask(context.Background(), &session.Task{Data: []byte(`1`), Session: info}, &recorder{}))
	}
	n, ok := info.Get(ctxKey{})
	require.True(t, ok)
	require.Equal(t, 3, n)
}

// logLines returns the JSON log records written to buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		lines = append(lines, m)
	}
	return lines
}

func TestLogging(t *testing.T) {
	const secret = "s3cr3t-p4ss"
	data := `{"op":"login","password":"` + secret + `"}`

	tests := []struct {
		name  string
		level slog.Level
		err   error
		// want is the record logged, nil for none.
		want map[string]any
		// task is the "task" group of the record, without "duration".
		task map[string]any
	}{
		{
			name:  "done at debug",
			level: slog.LevelDebug,
			want:  map[string]any{"level": "DEBUG", "msg": "task done"},
			task:  map[string]any{"session": "s1", "instance": "i1", "results": float64(3)},
		},
		{
			name:  "done not logged at info",
			level: slog.LevelInfo,
		},
		{
			name:  "failed with a code",
			level: slog.LevelInfo,
			err:   fmt.Errorf("running: %w", session.NewError(session.CodeTimeout, "no answer in 30s")),
			want:  map[string]any{"level": "WARN", "msg": "task failed", "err": "running: timeout: no answer in 30s"},
			task:  map[string]any{"session": "s1", "instance": "i1", "code": "timeout"},
		},
		{
			name:  "failed without a code",
			level: slog.LevelWarn,
			err:   errors.New("connection reset"),
			want:  map[string]any{"level": "WARN", "msg": "task failed", "err": "connection reset"},
			task:  map[string]any{"session": "s1", "instance": "i1"},
		},
		{
			name:  "failed not logged at error",
			level: slog.LevelError,
			err:   errors.New("connection reset"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tt.level}))
			final := HandlerFunc(func(_ context.Context, t *session.Task, w session.ResultWriter) error {
				// An instance that echoes the secret back must not get it logged either.
				if err := w.WriteResult(t.Data); err != nil {
					return err
				}
				if err := w.WriteBinary([]byte(secret)); err != nil {
					return err
				}
				if err := w.WriteResult([]byte(`1`)); err != nil {
					return err
				}
				return tt.err
			})
			w := &recorder{}
			err := Chain{Logging(log)}.Then(final).ServeTask(context.Background(), newTask(data), w)

			require.Equal(t, tt.err, err, "the error passes through unchanged")
			require.Equal(t, []string{data, `1`}, w.results, "results pass through")
			require.Equal(t, []string{secret}, w.binaries)
			require.NotContains(t, buf.String(), secret, "task data must never be logged")
			require.NotContains(t, buf.String(), "password")

			lines := logLines(t, &buf)
			if tt.want == nil {
				require.Empty(t, lines)
				return
			}
			require.Len(t, lines, 1)
			rec := lines[0]
			for k, v := range tt.want {
				require.Equal(t, v, rec[k], k)
			}
			task, ok := rec["task"].(map[string]any)
			require.True(t, ok, "task group: %v", rec)
			require.Contains(t, task, "duration")
			delete(task, "duration")
			require.Equal(t, tt.task, task)
		})
	}
}

func BenchmarkChain(b *testing.B) {
	pass := Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		return next.ServeTask(ctx, t, w)
	})
	final := HandlerFunc(func(_ context.Context, t *session.Task, w session.ResultWriter) error {
		return w.WriteResult(t.Data)
	})
	h := Chain{pass, pass, pass}.Then(final)
	ctx := context.Background()
	task := newTask(`{"op":"x"}`)
	w := discard{}
	b.ReportAllocs()
	for b.Loop() {
		if err := h.ServeTask(ctx, task, w); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) WriteResult([]byte) error { return nil }
func (discard) WriteBinary([]byte) error { return nil }
