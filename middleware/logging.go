package middleware

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/drover-dev/drover/session"
)

// Logging logs failed tasks at warn level with their session and code, and
// (when debug is enabled) every task with its result count and duration.
// Task data is never logged: it may hold secrets. Without debug logging a
// successful task costs no allocation here.
func Logging(log *slog.Logger) Middleware {
	return Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		start := time.Now()
		if !log.Enabled(ctx, slog.LevelDebug) {
			err := next.ServeTask(ctx, t, w)
			if err != nil {
				logFailure(ctx, log, t, err, -1, time.Since(start))
			}
			return err
		}
		cw := countingWriter{ResultWriter: w}
		err := next.ServeTask(ctx, t, &cw)
		if err != nil {
			logFailure(ctx, log, t, err, cw.n, time.Since(start))
			return err
		}
		log.LogAttrs(ctx, slog.LevelDebug, "task done", slog.Group("task", taskAttrs(t, cw.n, time.Since(start))...))
		return nil
	})
}

func taskAttrs(t *session.Task, results int, d time.Duration) []any {
	attrs := make([]any, 0, 10)
	if t.Session != nil {
		attrs = append(attrs, "session", t.Session.ID, "instance", t.Session.Instance)
	}
	if results >= 0 {
		attrs = append(attrs, "results", results)
	}
	return append(attrs, "duration", d)
}

func logFailure(ctx context.Context, log *slog.Logger, t *session.Task, err error, results int, d time.Duration) {
	attrs := taskAttrs(t, results, d)
	var se *session.Error
	if errors.As(err, &se) {
		attrs = append(attrs, "code", se.Code)
	}
	log.LogAttrs(ctx, slog.LevelWarn, "task failed", slog.Group("task", attrs...), slog.Any("err", err))
}

type countingWriter struct {
	session.ResultWriter
	n int
}

func (c *countingWriter) WriteResult(data []byte) error {
	c.n++
	return c.ResultWriter.WriteResult(data)
}

func (c *countingWriter) WriteBinary(data []byte) error {
	c.n++
	return c.ResultWriter.WriteBinary(data)
}
