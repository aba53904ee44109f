package manager

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/session"
)

// The admin routes besides /farms: ending a session and managing API
// keys. Require(LevelAdmin) guards them.

// serveEndSession ends a session of this manager by its id (as /status
// shows it): DELETE /sessions/:id. Its client gets DisconnectEnded.
func (m *Manager) serveEndSession(c *gin.Context) {
	s := m.sessionByID(c.Param("id"))
	if s == nil {
		restError(c, http.StatusNotFound, session.CodeNotFound, noSuchSession)
		return
	}
	m.audit(c.Request.Context(), append([]slog.Attr{slog.String("event", "session_end_requested"),
		slog.String("session", s.info.ID), slog.String("remote", m.clientAddr(c.Request))},
		who(auth.FromContext(c.Request.Context()))...)...)
	s.end(session.DisconnectEnded)
	c.JSON(http.StatusOK, gin.H{"session": s.info.ID, "ended": true})
}
