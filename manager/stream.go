package manager

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/middleware"
)

// serveStream opens a stream session (HOOPS SC-server style): a fresh
// instance of a stream pool is started for the viewer, with its model, and
// the viewer's WebSocket is relayed to it byte for byte. The session lasts
// as long as that connection.
//
//	GET /stream?pool=P&model=M[&wait=false][&labels=k=v]
func (m *Manager) serveStream(c *gin.Context) {
	r := c.Request
	if !websocket.IsWebSocketUpgrade(r) {
		c.JSON(http.StatusBadRequest, gin.H{"message": "a stream session is a WebSocket"})
		return
	}
	q := r.URL.Query()
	name := q.Get("pool")
	if name == "" {
		name = m.cfg.DefaultPool
	}
	p, err := m.pool(name)
	if err != nil {
		c.JSON(http.StatusNotFound, gin.H{"message": err.Error()})
		return
	}
	s := m.newSession(p, r.RemoteAddr)
	s.stream = true
	s.startOpts = farmapi.StartOptions{Model: q.Get("model")}
	s.labels = parseLabels(q)
	if err := m.connect(s.ctx, &middleware.ConnectRequest{Info: &s.info, HTTP: r, Query: q}); err != nil {
		s.cancel()
		code, msg := errorOf(err)
		c.JSON(httpStatus(code), gin.H{"message": msg, "code": code})
		return
	}
	m.addSession(s)
	// The viewer waits for the 101 while its instance starts.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	inst, err := m.acquire(ctx, s, q.Get("wait") != "false", nil)
	if err != nil {
		s.end("placement failed", 0, false)
		code, msg := errorOf(err)
		c.JSON(httpStatus(code), gin.H{"message": msg, "code": code})
		return
	}
	s.bind(inst)
	if inst.Info().Protocol != farmapi.ProtocolStream {
		s.end("not a stream pool", 0, true)
		c.JSON(http.StatusBadRequest, gin.H{"message": "pool " + name + " is not a stream pool"})
		return
	}
	m.metrics.sessionsOpened.WithLabelValues(p.cfg.Name).Inc()
	relay := m.relay
	if inst.Header() != nil {
		relay = m.farmRelay // carries the farm token
	}
	err = relay.ServeWebSocket(c.Writer, r, inst.URL())
	reason := "stream closed"
	if err != nil {
		reason = "stream failed: " + err.Error()
	}
	s.end(reason, 0, false)
}
