package api

import (
	"cmp"
	"io"
	"log/slog"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
)

// auditEvent is one audit line in the making: an upload (upload,
// uploadArray, a signed upload URL), an upload token, or a delete. The
// line says who (user, tenant, how authenticated, which key), what (the
// item, the file's name, the bytes received) and the outcome: "ok", or
// "refused: " and the sentence the client got. Never a token, a key or
// file contents.
type auditEvent struct {
	a      *API
	c      *gin.Context
	p      *auth.Principal
	event  string
	item   string
	name   string
	size   int64
	tenant string // for calls without a principal (signed URLs)
	via    string
	err    error
}

// auditUpload starts the audit line of event for the request's principal.
func (a *API) auditUpload(c *gin.Context, event string) *auditEvent {
	return &auditEvent{a: a, c: c, p: auth.FromContext(c.Request.Context()), event: event}
}

// fail answers err and records it as the outcome.
func (e *auditEvent) fail(err error) {
	e.err = err
	e.a.fail(e.c, err)
}

// count returns r, counting the bytes read from it into the line's size.
func (e *auditEvent) count(r io.Reader) io.Reader { return &countReader{r: r, n: &e.size} }

// log writes the line.
func (e *auditEvent) log() {
	user, tenant, via, key := "anonymous", cmp.Or(e.tenant, auth.DefaultTenant), cmp.Or(e.via, "none"), ""
	if e.p != nil {
		user, tenant, via, key = e.p.User, cmp.Or(e.p.Tenant, auth.DefaultTenant), string(e.p.Via), e.p.KeyID
	}
	outcome := "ok"
	if e.err != nil {
		_, msg := e.a.answer(e.err)
		outcome = "refused: " + msg
	}
	attrs := []slog.Attr{slog.String("event", e.event),
		slog.String("user", user), slog.String("tenant", tenant), slog.String("via", via)}
	if key != "" {
		attrs = append(attrs, slog.String("key_id", key))
	}
	attrs = append(attrs, slog.String("item", e.item), slog.String("name", e.name), slog.Int64("size", e.size),
		slog.String("outcome", outcome), slog.String("remote", e.c.ClientIP()))
	e.a.auditLog.LogAttrs(e.c.Request.Context(), slog.LevelInfo, "audit", attrs...)
}

// countReader counts what is read through it.
type countReader struct {
	r io.Reader
	n *int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}
