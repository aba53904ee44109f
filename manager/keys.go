package manager

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/session"
)

// keyRoutes serves API key management under /admin/keys. Until the
// authenticator has a key store, there are no keys to manage.
func (m *Manager) keyRoutes(g *gin.RouterGroup) {
	none := func(c *gin.Context) {
		restError(c, http.StatusNotFound, session.CodeNotFound, "no API key store is configured")
	}
	g.POST("", none)
	g.GET("", none)
	g.DELETE("/:id", none)
}
