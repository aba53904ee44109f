package manager

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/session"
)

// Browser origins. A page on another site can make its visitor's browser
// open a WebSocket to the manager, or send it a form, with whatever the
// browser holds; the Origin header says which site that page is on. The
// manager accepts its own origin, the origins of Config.AllowedOrigins,
// and requests without an Origin (not from a browser: curl, farms, SDKs).

// corsMethods and corsHeaders are what a preflight allows an allowed
// foreign origin: the methods of drover's routes, and the headers its
// clients send (hc-caas clients put their arguments in CS-API-Arg).
const (
	corsMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
	corsHeaders = "Authorization, Content-Type, CS-API-Arg"
	corsMaxAge  = "600"
)

// origins is the origin policy: any origin ("*" in the list), or the
// request's own plus a list, each normalised by normOrigin.
type origins struct {
	any     bool
	allowed map[string]bool
}

// newOrigins checks and normalises Config.AllowedOrigins.
func newOrigins(list []string) (origins, error) {
	o := origins{allowed: map[string]bool{}}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "*" {
			o.any = true
			continue
		}
		n, ok := normOrigin(s)
		if !ok {
			return origins{}, fmt.Errorf("manager: allowed origin %q: want scheme://host[:port] (http or https) or *", s)
		}
		o.allowed[n] = true
	}
	return o, nil
}

// normOrigin is an origin as scheme://host[:port] in lower case, without
// the scheme's default port; ok is false for anything else (a path, a
// query, "null", another scheme).
func normOrigin(s string) (string, bool) {
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme) + "://" + stripDefaultPort(strings.ToLower(u.Host)), true
}

// stripDefaultPort removes :80 and :443: a proxy that ends TLS makes the
// scheme of the request differ from the page's, so the port alone cannot
// tell them apart.
func stripDefaultPort(host string) string {
	if h, ok := strings.CutSuffix(host, ":80"); ok {
		return h
	}
	if h, ok := strings.CutSuffix(host, ":443"); ok {
		return h
	}
	return host
}

// sameOrigin reports whether origin (normalised) is the request's own: its
// host and port are those the request was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	_, host, ok := strings.Cut(origin, "://")
	return ok && host == stripDefaultPort(strings.ToLower(r.Host))
}

// verdict says what the policy makes of r's Origin: none (not a browser's
// request), own (the same origin), allowed (a foreign origin the policy
// admits) or foreign.
type verdict int

const (
	originNone verdict = iota
	originOwn
	originAllowed
	originForeign
)

func (o origins) judge(r *http.Request) verdict {
	raw := r.Header.Get("Origin")
	if raw == "" {
		return originNone
	}
	n, ok := normOrigin(raw)
	switch {
	case ok && sameOrigin(n, r):
		return originOwn
	case o.any, ok && o.allowed[n]:
		return originAllowed
	}
	return originForeign
}

// checkOrigin is the origin middleware of every route. A foreign origin
// cannot upgrade to a WebSocket (Config.CheckOrigin decides instead when
// set) and cannot send anything but GET and HEAD, whose answers its page
// cannot read. An allowed foreign origin gets CORS headers, and its
// preflights are answered here.
func (m *Manager) checkOrigin(c *gin.Context) {
	r := c.Request
	if websocket.IsWebSocketUpgrade(r) {
		ok := m.cfg.CheckOrigin != nil && m.cfg.CheckOrigin(r)
		if m.cfg.CheckOrigin == nil {
			ok = m.origins.judge(r) != originForeign
		}
		if !ok {
			m.refuse(c, http.StatusForbidden, session.CodeForbidden, "this origin may not open a WebSocket here", nil)
			return
		}
		c.Next()
		return
	}
	v := m.origins.judge(r)
	if v == originNone {
		c.Next()
		return
	}
	c.Writer.Header().Add("Vary", "Origin")
	switch v {
	case originForeign:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			m.refuse(c, http.StatusForbidden, session.CodeForbidden, "requests from this origin are not accepted", nil)
			return
		}
	case originAllowed:
		h := c.Writer.Header()
		h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
	}
	c.Next()
}
