package manager

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/certreload"
	"github.com/drover-dev/drover/session"
)

// The farm API: registrations, heartbeats and drains over REST, handed to
// placement, which keeps the registry.

// bearer is gin middleware admitting requests that carry one of tokens.
// The token is never logged or echoed.
func (m *Manager) bearer(tokens ...string) gin.HandlerFunc {
	check := bearer.NewChecker(tokens...)
	return func(c *gin.Context) {
		if check.Request(c.Request, false) {
			c.Next()
			return
		}
		m.log.Warn("unauthorized API request", "path", c.FullPath(), "remote", c.ClientIP())
		m.audit(c.Request.Context(), slog.String("event", "refused"), slog.String("method", c.Request.Method),
			slog.String("route", c.FullPath()), slog.Int("status", http.StatusUnauthorized),
			slog.String("code", session.CodeUnauthorized), slog.String("remote", c.Request.RemoteAddr))
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"message": "missing or wrong token"})
	}
}

// FarmCertGuard is gin middleware for farm routes: when require is set,
// it refuses (403) requests whose connection presented no client
// certificate that verified against the listener's client CAs. The farm
// token is checked as well, by another handler.
func FarmCertGuard(require bool, log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !require || certreload.Verified(c.Request.TLS) {
			c.Next()
			return
		}
		log.Warn("farm API request without a verified client certificate", "path", c.FullPath(), "remote", c.ClientIP())
		c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"message": "a verified client certificate is required"})
	}
}

func (m *Manager) farmRoutes(r *gin.Engine) {
	if m.cfg.FarmToken == "" {
		return // no remote farms: drover up with its local farm
	}
	farms := r.Group(farmapi.PathFarms, FarmCertGuard(m.cfg.RequireFarmCert, m.log), m.bearer(m.cfg.FarmToken))
	farms.POST("", m.serveRegister)
	farms.POST("/:id/heartbeat", m.serveHeartbeat)
	farms.DELETE("/:id", m.serveDeregister)
	admin := r.Group(farmapi.PathFarms, m.Require(LevelAdmin))
	admin.POST("/:id/drain", m.serveDrain)
	admin.GET("", func(c *gin.Context) { c.JSON(http.StatusOK, m.Status().Farms) })
}

func (m *Manager) serveRegister(c *gin.Context) {
	var req farmapi.RegisterRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": "bad registration: " + err.Error()})
		return
	}
	resp, err := m.place.Register(req)
	switch {
	case errors.Is(err, ErrStoreUnavailable):
		// The farm tries again.
		c.JSON(http.StatusServiceUnavailable, gin.H{"message": err.Error()})
	case err != nil:
		c.JSON(http.StatusBadRequest, gin.H{"message": err.Error()})
	default:
		c.JSON(http.StatusOK, resp)
	}
}

func (m *Manager) serveHeartbeat(c *gin.Context) {
	var hb farmapi.Heartbeat
	if err := c.ShouldBindJSON(&hb); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": "bad heartbeat: " + err.Error()})
		return
	}
	known, drain, err := m.place.Heartbeat(c.Param("id"), hb)
	switch {
	case err != nil:
		c.JSON(http.StatusServiceUnavailable, gin.H{"message": err.Error()})
	case !known:
		c.JSON(http.StatusNotFound, gin.H{"message": "unknown farm: register again"})
	default:
		c.JSON(http.StatusOK, farmapi.HeartbeatResponse{Drain: drain})
	}
}

func (m *Manager) serveDeregister(c *gin.Context) {
	if !m.place.Deregister(c.Param("id")) {
		c.JSON(http.StatusNotFound, gin.H{"message": "unknown farm"})
		return
	}
	c.Status(http.StatusNoContent)
}

func (m *Manager) serveDrain(c *gin.Context) {
	if err := m.DrainFarm(c.Param("id")); err != nil {
		code := http.StatusNotFound
		if errors.Is(err, ErrStoreUnavailable) {
			code = http.StatusServiceUnavailable
		}
		c.JSON(code, gin.H{"message": err.Error()})
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"farm": c.Param("id"), "draining": true})
}

// DrainFarm stops placing sessions on a farm and tells its sessions; the
// farm learns it from its next heartbeat and exits once they have ended.
func (m *Manager) DrainFarm(id string) error { return m.place.DrainFarm(id) }
