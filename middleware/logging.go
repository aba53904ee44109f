package middleware

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/drover-dev/drover/session"
)

// Logging logs every task at debug level (and failed ones at warn) with its
// session, duration and result count. Task data is never logged: it may hold
// secrets.
func Logging(log *slog.Logger) Middleware {
	return Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		start := time.Now()
		cw := countingWriter{ResultWriter: w}
		err := next.ServeTask(ctx, t, &cw)
		attrs := []any{"session", t.Session.ID, "instance", t.Session.Instance,
			"results", cw.n, "duration", time.Since(start)}
		if err != nil {
			var se *session.Error
			if errors.As(err, &se) {
				attrs = append(attrs, "code", se.Code)
			}
			log.LogAttrs(ctx, slog.LevelWarn, "task failed", slog.Group("task", attrs...), slog.Any("err", err))
			return err
		}
		if log.Enabled(ctx, slog.LevelDebug) {
			log.LogAttrs(ctx, slog.LevelDebug, "task done", slog.Group("task", attrs...))
		}
		return nil
	})
}

type countingWriter struct {
	session.ResultWriter
	n int
}

func (c *countingWriter) WriteResult(data []byte) error { c.n++; return c.ResultWriter.WriteResult(data) }
func (c *countingWriter) WriteBinary(data []byte) error { c.n++; return c.ResultWriter.WriteBinary(data) }
