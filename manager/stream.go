package manager

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/session"
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
		restError(c, http.StatusBadRequest, session.CodeBadRequest, "a stream session is a WebSocket")
		return
	}
	q := r.URL.Query()
	opts, err := session.ParseConnectOptions(q, m.connectDefaults(true))
	if err != nil {
		m.restFail(c, err)
		return
	}
	// The viewer waits for the 101 while its instance starts.
	s, err := m.openNow(r.Context(), openRequest{opts: opts, remote: m.clientAddr(r), http: r, query: q, stream: true})
	if err != nil {
		m.restFail(c, err)
		return
	}
	if s.inst.Info().Protocol != farmapi.ProtocolStream {
		s.end(session.DisconnectBadOptions)
		restError(c, http.StatusBadRequest, session.CodeBadRequest, "the pool is not a stream pool")
		return
	}
	m.relayStream(c, s)
}

// relayStream relays the viewer's WebSocket to the stream session's
// instance byte for byte, and ends the session when that connection ends.
func (m *Manager) relayStream(c *gin.Context, s *Session) {
	inst := s.inst
	relay := m.relay
	if inst.Header() != nil {
		relay = m.farmRelay // carries the farm token
	} else {
		// The instance's own port: one relay hop, which its farm cannot
		// see. A remote farm hears of it over its API, in the background:
		// the viewer does not wait for that.
		m.goTracked(func() {
			if err := inst.StreamConnected(); err != nil {
				m.log.Info("stream instance's farm not told of its client", "session", s.info.ID, "err", err)
			}
		})
	}
	if err := relay.ServeWebSocket(c.Writer, withoutCredentials(c.Request), inst.URL()); err != nil {
		m.log.Info("stream relay ended with an error", "session", s.info.ID, "err", err)
	}
	s.end(session.DisconnectStreamEnded)
}

// withoutCredentials is r without the caller's credential, for the
// instance it is relayed to: no Authorization header (a remote farm's
// relay sets the farm token instead), no bearer.<token> subprotocol.
func withoutCredentials(r *http.Request) *http.Request {
	h := r.Header.Clone()
	h.Del("Authorization")
	if protos := h.Values("Sec-Websocket-Protocol"); len(protos) > 0 {
		h.Del("Sec-Websocket-Protocol")
		for _, v := range protos {
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, "bearer.") {
					h.Add("Sec-Websocket-Protocol", p)
				}
			}
		}
	}
	r2 := r.WithContext(r.Context()) // a shallow copy
	r2.Header = h
	return r2
}
