package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/drover-dev/drover/internal/lib/bearer"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/jsonhttp"
	"github.com/drover-dev/drover/store"
)

// remoteFarm is a farm in another process, reached over its REST API.
type remoteFarm struct {
	req    farmapi.RegisterRequest
	base   *url.URL
	header http.Header // carries the farm token; never logged
	client *http.Client
}

var _ Farm = (*remoteFarm)(nil)
var _ placementInfo = (*remoteFarm)(nil)
var _ ViaFarm = (*remoteFarm)(nil)

func newRemoteFarm(req farmapi.RegisterRequest, token string) (*remoteFarm, error) {
	u, err := url.Parse(req.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("farm url %q is not an http(s) URL", req.URL)
	}
	h := bearer.Header(token)
	// No client timeout: starts may take as long as the pool's start
	// timeout; every call carries a context that bounds it.
	return &remoteFarm{req: req, base: u, header: h, client: &http.Client{}}, nil
}

func (r *remoteFarm) ID() string                { return r.req.ID }
func (r *remoteFarm) Slots() int                { return r.req.Slots }
func (r *remoteFarm) Pools() []string           { return r.req.Pools }
func (r *remoteFarm) Labels() map[string]string { return r.req.Labels }
func (r *remoteFarm) Priority() int             { return r.req.Priority }
func (r *remoteFarm) Header() http.Header       { return r.header }

func (r *remoteFarm) do(ctx context.Context, method, path string, body, out any) (int, error) {
	code, err := jsonhttp.Call(ctx, r.client, method, r.base.JoinPath(path).String(), r.header, body, out)
	if err != nil {
		err = fmt.Errorf("farm %s: %w", r.req.ID, err)
	}
	return code, err
}

func (r *remoteFarm) StartInstance(ctx context.Context, pool string) (farmapi.Instance, error) {
	return r.StartInstanceWith(ctx, pool, farmapi.StartOptions{})
}

func (r *remoteFarm) StartInstanceWith(ctx context.Context, pool string, opts farmapi.StartOptions) (farmapi.Instance, error) {
	var inst farmapi.Instance
	req := farmapi.StartRequest{Pool: pool, Model: opts.Model}
	if code, err := r.do(ctx, http.MethodPost, farmapi.PathInstances, req, &inst); err != nil {
		if sentinel := farmapi.StartError(code); sentinel != nil {
			err = farmError{err, sentinel}
		}
		return farmapi.Instance{}, err
	}
	if inst.URL == "" {
		inst.URL = r.wsBase() + farmapi.PathInstance + url.PathEscape(inst.ID)
	}
	return inst, nil
}

// farmError is a remote farm's error answer to a start: like an
// in-process farm's, it matches the farmapi sentinel its status stands for
// (a 429 is farmapi.ErrNoSlot, a 504 farmapi.ErrStartTimeout).
type farmError struct {
	error
	sentinel error
}

func (e farmError) Unwrap() []error { return []error{e.error, e.sentinel} }

func (r *remoteFarm) StopInstance(ctx context.Context, id string) error {
	code, err := r.do(ctx, http.MethodDelete, farmapi.PathInstances+"/"+url.PathEscape(id), nil, nil)
	if code == http.StatusNotFound {
		return farmapi.ErrNotFound
	}
	return err
}

// instanceURL is where the manager opens an instance's WebSocket.
func instanceURL(info farmapi.Instance) string {
	if info.URL != "" {
		return info.URL
	}
	return "ws://" + info.Addr + "/"
}

// ViaFarm is an optional Farm capability: a farm that serves its instances
// behind its own port, as the adapters of dial, stdio and stream pools need.
// Header carries the farm token; Serves tells which instance URLs are its.
// A farm.Farm added to a manager as it is has no port: package drover wires
// one up.
type ViaFarm interface {
	Header() http.Header
	Serves(url string) bool
}

// farmHeader is sent when connecting to an instance through its farm's
// port: it carries the farm token, which the farm strips. Never to an
// instance reached directly (a farm advertising direct ports): it must not
// see the token.
func farmHeader(f Farm, info farmapi.Instance) http.Header {
	if v, ok := f.(ViaFarm); ok && info.URL != "" && v.Serves(info.URL) {
		return v.Header()
	}
	return nil
}

// Serves reports whether url goes through the farm's own port.
func (r *remoteFarm) Serves(url string) bool {
	return strings.HasPrefix(url, r.wsBase()+farmapi.PathInstance)
}

func (r *remoteFarm) wsBase() string {
	ws := *r.base
	ws.Scheme = strings.Replace(ws.Scheme, "http", "ws", 1)
	return strings.TrimSuffix(ws.String(), "/")
}

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
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"message": "missing or wrong token"})
	}
}

func (m *Manager) farmRoutes(r *gin.Engine) {
	if m.cfg.FarmToken == "" {
		return // no remote farms: drover up with its local farm
	}
	farms := r.Group(farmapi.PathFarms, m.bearer(m.cfg.FarmToken))
	farms.POST("", m.serveRegister)
	farms.POST("/:id/heartbeat", m.serveHeartbeat)
	farms.DELETE("/:id", m.serveDeregister)
	admin := r.Group(farmapi.PathFarms, m.bearer(m.cfg.AdminToken))
	admin.POST("/:id/drain", m.serveDrain)
	admin.GET("", func(c *gin.Context) { c.JSON(http.StatusOK, m.Status().Farms) })
}

func (m *Manager) serveRegister(c *gin.Context) {
	var req farmapi.RegisterRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": "bad registration: " + err.Error()})
		return
	}
	if req.ID == "" || len(req.ID) > 128 || !printable(req.ID) || req.Slots < 0 || req.Slots > 100000 {
		c.JSON(http.StatusBadRequest, gin.H{"message": "a farm needs a printable id of at most 128 characters and 0 to 100000 slots"})
		return
	}
	rf, err := newRemoteFarm(req, m.cfg.FarmToken)
	if err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": err.Error()})
		return
	}
	spec, err := json.Marshal(req)
	if err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": err.Error()})
		return
	}
	ctx, cancel := opCtx()
	err = m.shared.note(m.shared.st.PutFarm(ctx, store.Farm{ID: req.ID, Spec: spec, Slots: req.Slots}))
	cancel()
	if err != nil {
		// The farm tries again; registering it here only would hide it
		// from the other managers.
		c.JSON(http.StatusServiceUnavailable, gin.H{"message": err.Error()})
		return
	}
	if m.sched.rejoin(req, spec) {
		// It registered again without restarting (a manager that did not
		// know it sent it away): its instances live on, and the
		// reconciler records them in the store again.
		m.shared.poke()
	} else {
		m.sched.addFarm(rf, true, "", spec)
	}
	m.shared.publish(store.Event{Type: store.EventFarmAdded, Farm: req.ID})
	m.log.Info("farm registered", "farm", req.ID, "name", req.Name, "url", req.URL, "slots", req.Slots,
		"pools", req.Pools, "labels", req.Labels)
	m.metrics.farmEvents.WithLabelValues("registered").Inc()
	c.JSON(http.StatusOK, farmapi.RegisterResponse{HeartbeatIntervalMS: m.cfg.HeartbeatInterval.Milliseconds()})
}

func (m *Manager) serveHeartbeat(c *gin.Context) {
	var hb farmapi.Heartbeat
	if err := c.ShouldBindJSON(&hb); err != nil {
		c.JSON(http.StatusBadRequest, gin.H{"message": "bad heartbeat: " + err.Error()})
		return
	}
	known, drain, err := m.shared.heartbeat(c.Param("id"), hb)
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
	id := c.Param("id")
	ctx, cancel := opCtx()
	inStore, err := m.shared.st.RemoveFarm(ctx, id)
	cancel()
	if m.shared.note(err) == nil && inStore {
		m.shared.publish(store.Event{Type: store.EventFarmRemoved, Farm: id})
	}
	if !m.sched.removeFarm(id, errors.New("the farm left")) && !inStore {
		c.JSON(http.StatusNotFound, gin.H{"message": "unknown farm"})
		return
	}
	m.log.Info("farm deregistered", "farm", c.Param("id"))
	m.metrics.farmEvents.WithLabelValues("deregistered").Inc()
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
func (m *Manager) DrainFarm(id string) error {
	ctx, cancel := opCtx()
	err := m.shared.note(m.shared.st.DrainFarm(ctx, id))
	cancel()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	sessions, ok := m.sched.drain(id)
	if !ok && err != nil {
		return fmt.Errorf("%w: %q", ErrFarmNotFound, id)
	}
	m.shared.publish(store.Event{Type: store.EventFarmDraining, Farm: id})
	m.log.Info("farm draining", "farm", id, "sessions", len(sessions))
	m.metrics.farmEvents.WithLabelValues("draining").Inc()
	m.notifyDraining(id, sessions)
	return nil
}

func (m *Manager) notifyDraining(farmID string, sessions []*Session) {
	for _, s := range sessions {
		s.farmDraining(farmID)
	}
}
