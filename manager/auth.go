package manager

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/internal/lib/bearer"
)

// Level is what a route asks of its caller.
type Level int

// The levels of drover's routes. Farm routes (registration, heartbeats,
// jobs) check the farm token instead.
const (
	// LevelPublic: anyone (/health, /livez, /ui/, signed URLs, the viewer
	// door, which checks its own token).
	LevelPublic Level = iota
	// LevelUser: a principal with the user role opens sessions and uses
	// the conversion API.
	LevelUser
	// LevelAdmin: a principal with the admin role drives the cluster.
	LevelAdmin
)

// Require is gin middleware admitting callers of level: it authenticates
// the request, refuses it (401 or 403, with the code and a sentence) or
// puts the principal into the request's context (auth.FromContext) for
// the handlers. Applications mount their own routes behind it, as package
// drover mounts the conversion API behind Require(LevelUser).
func (m *Manager) Require(level Level) gin.HandlerFunc {
	return func(c *gin.Context) {
		if level == LevelPublic {
			c.Next()
			return
		}
		p, ok := m.authenticate(c, level)
		if !ok {
			return
		}
		c.Request = c.Request.WithContext(auth.NewContext(c.Request.Context(), p))
		c.Next()
	}
}

// authenticate finds the principal of c's request and checks it holds
// level; when it does not, it has answered the refusal.
func (m *Manager) authenticate(c *gin.Context, level Level) (*auth.Principal, bool) {
	p, aerr := m.cfg.Auth.Authenticate(c.Request)
	switch {
	case aerr != nil:
		m.refuseAuth(c, aerr, nil)
		return nil, false
	case p == nil:
		msg := "this needs a credential: a bearer token or an API key"
		if e, ok := m.cfg.Auth.(interface{ Enforced() bool }); ok && !e.Enforced() {
			// Protected mode: say why a client that worked locally fails here.
			msg = "this needs a credential: without authentication configured, this server admits only clients on its own machine"
		}
		m.refuseAuth(c, auth.Unauthorized(msg), nil)
		return nil, false
	case level == LevelAdmin && !p.Admin():
		m.refuseAuth(c, auth.Forbidden("this needs the admin role"), p)
		return nil, false
	case level == LevelUser && !p.HasRole(auth.RoleUser):
		m.refuseAuth(c, auth.Forbidden("this needs the user role"), p)
		return nil, false
	}
	return p, true
}

// principal is the principal of r, for routes any caller may use but
// admins see more of (/status): nil for anyone else, or when the
// credential does not check out.
func (m *Manager) principal(r *http.Request) *auth.Principal {
	p, err := m.cfg.Auth.Authenticate(r)
	if err != nil {
		return nil
	}
	return p
}

func (m *Manager) refuseAuth(c *gin.Context, e *auth.Error, p *auth.Principal) {
	m.refuse(c, e.Status, e.Code, e.Message, p)
}

// refuse answers a refused request with status, code and msg, and writes
// the audit line. A 401 says how to authenticate (WWW-Authenticate).
func (m *Manager) refuse(c *gin.Context, status int, code, msg string, p *auth.Principal) {
	if status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="drover"`)
	}
	route := c.FullPath()
	if route == "" {
		route = "(none)"
	}
	attrs := []slog.Attr{slog.String("event", "refused"), slog.String("method", c.Request.Method),
		slog.String("route", route), slog.Int("status", status), slog.String("code", code),
		slog.String("remote", m.clientAddr(c.Request))}
	m.audit(c.Request.Context(), append(attrs, who(p)...)...)
	c.AbortWithStatusJSON(status, restBody{Code: code, Message: msg})
}

// audit writes one audit line: msg "audit", the event and its attributes.
// Callers never pass a credential, a key or task data.
func (m *Manager) audit(ctx context.Context, attrs ...slog.Attr) {
	m.auditLog.LogAttrs(ctx, slog.LevelInfo, "audit", attrs...)
}

// who is what an audit line records of p.
func who(p *auth.Principal) []slog.Attr {
	if p == nil {
		return nil
	}
	attrs := []slog.Attr{slog.String("user", p.User), slog.String("tenant", p.Tenant), slog.String("via", string(p.Via))}
	if p.KeyID != "" {
		attrs = append(attrs, slog.String("key", p.KeyID))
	}
	return attrs
}

// samePrincipal reports whether b may take over what a opened (resume a
// session, run its REST tasks): the same user of the same tenant. What was
// opened without a principal (an in-process session) is anybody's who has
// its secret.
func samePrincipal(a, b *auth.Principal) bool {
	if a == nil {
		return true
	}
	return b != nil && a.User == b.User && a.Tenant == b.Tenant
}

// requestPrincipal is the principal Require put into ctx, or, for
// in-process calls, the one the caller put there.
func requestPrincipal(ctx context.Context, r *http.Request) *auth.Principal {
	if r != nil {
		if p := auth.FromContext(r.Context()); p != nil {
			return p
		}
	}
	if ctx != nil {
		return auth.FromContext(ctx)
	}
	return nil
}

// metricsGuard keeps /metrics open, or, with Config.MetricsToken, behind
// that bearer token or an admin's credential.
func (m *Manager) metricsGuard() gin.HandlerFunc {
	if m.cfg.MetricsToken == "" {
		return func(c *gin.Context) { c.Next() }
	}
	check := bearer.NewChecker(m.cfg.MetricsToken)
	return func(c *gin.Context) {
		if check.Request(c.Request, false) {
			c.Next()
			return
		}
		if _, ok := m.authenticate(c, LevelAdmin); ok {
			c.Next()
		}
	}
}

// auditSession writes the audit line of a session's start (outcome
// "started", "refused", "not placed") or end ("ended", with the reason).
func (m *Manager) auditSession(ctx context.Context, s *Session, outcome string, extra ...slog.Attr) {
	event := "session_start"
	if outcome == "ended" {
		event = "session_end"
	}
	attrs := []slog.Attr{slog.String("event", event), slog.String("outcome", outcome),
		slog.String("session", s.info.ID), slog.String("pool", s.info.Pool), slog.String("remote", s.info.Remote)}
	attrs = append(attrs, extra...)
	m.audit(ctx, append(attrs, who(s.owner)...)...)
}

// boundSecret is what the shared state knows a session by: the hash of
// its secret bound to its owner's user and tenant. Another principal
// holding the secret finds nothing to resume on any manager, and the
// session's record is not touched.
func boundSecret(secret string, p *auth.Principal) string {
	if p == nil {
		return secret
	}
	return secret + "\x00" + p.User + "\x00" + p.Tenant
}
