package manager

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/certreload"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
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
			slog.String("code", session.CodeUnauthorized), slog.String("remote", m.clientAddr(c.Request)))
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
	farms := r.Group(farmapi.PathFarms, FarmCertGuard(m.cfg.RequireFarmCert, m.log), m.bearer(m.cfg.FarmToken), bodylimit.Max(maxFarmBody))
	farms.POST("", m.serveRegister)
	farms.POST("/:id/heartbeat", m.serveHeartbeat)
	farms.DELETE("/:id", m.serveDeregister)
	admin := r.Group(farmapi.PathFarms, m.Require(LevelAdmin))
	admin.POST("/:id/drain", m.serveDrain)
	admin.GET("", func(c *gin.Context) { c.JSON(http.StatusOK, m.Status().Farms) })
}

// maxFarmBody bounds a registration or a heartbeat.
const maxFarmBody = 1 << 20

// Plain sentences of the farm API's errors; the details go to the log.
const (
	msgBadRegistration = "bad registration, a farm needs a JSON body with a printable id of at most 128 characters, " +
		"0 to 100000 slots and an http or https url"
	msgBadHeartbeat = "bad heartbeat, the body must be a JSON heartbeat"
	msgStoreDown    = "the shared state is unavailable; try again"
)

func (m *Manager) serveRegister(c *gin.Context) {
	var req farmapi.RegisterRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		m.log.Info("bad farm registration", "remote", c.ClientIP(), "err", err)
		c.JSON(http.StatusBadRequest, gin.H{"message": msgBadRegistration})
		return
	}
	resp, err := m.place.Register(req)
	switch {
	case errors.Is(err, ErrStoreUnavailable):
		// The farm tries again.
		m.log.Warn("farm registration", "farm", req.ID, "err", err)
		c.JSON(http.StatusServiceUnavailable, gin.H{"message": msgStoreDown})
	case err != nil:
		m.log.Info("bad farm registration", "farm", req.ID, "remote", c.ClientIP(), "err", err)
		c.JSON(http.StatusBadRequest, gin.H{"message": msgBadRegistration})
	default:
		c.JSON(http.StatusOK, resp)
	}
}

func (m *Manager) serveHeartbeat(c *gin.Context) {
	var hb farmapi.Heartbeat
	if err := c.ShouldBindJSON(&hb); err != nil {
		m.log.Info("bad farm heartbeat", "farm", c.Param("id"), "err", err)
		c.JSON(http.StatusBadRequest, gin.H{"message": msgBadHeartbeat})
		return
	}
	known, drain, err := m.place.Heartbeat(c.Param("id"), hb)
	switch {
	case err != nil:
		m.log.Warn("farm heartbeat", "farm", c.Param("id"), "err", err)
		c.JSON(http.StatusServiceUnavailable, gin.H{"message": msgStoreDown})
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
		code, msg := http.StatusNotFound, "unknown farm"
		if errors.Is(err, ErrStoreUnavailable) {
			code, msg = http.StatusServiceUnavailable, msgStoreDown
			m.log.Warn("drain farm", "farm", c.Param("id"), "err", err)
		}
		c.JSON(code, gin.H{"message": msg})
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"farm": c.Param("id"), "draining": true})
}

// DrainFarm stops placing sessions on a farm and tells its sessions; the
// farm learns it from its next heartbeat and exits once they have ended.
func (m *Manager) DrainFarm(id string) error { return m.place.DrainFarm(id) }
