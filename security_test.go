package drover_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/manager"
)

// The secrets of the secured server; none may appear in a log line, a
// /status body or an error body.
const (
	secJWTSecret    = "wiring-jwt-secret-5d0c7f3a9e21b8446f0d"
	secAdminToken   = "wiring-admin-token-8b1e4c"
	secFarmToken    = "wiring-farm-token-27f9ad"
	secMetricsToken = "wiring-metrics-token-c04e19"
	secAudience     = "drover-wiring-test"
	secIssuer       = "wiring-issuer"
	allowedOrigin   = "http://allowed.example"
)

// secured is a drover server with conversions, JWTs, API keys, an admin,
// farm and metrics token and an allowed origin, and what the tests saw:
// every log line, and every answer's body.
type secured struct {
	t      *testing.T
	srv    *drover.Server
	base   string
	logs   *testutil.SyncBuffer
	mu     sync.Mutex
	bodies []string
	// tokens by name: the valid ones and the bad ones.
	tokens  map[string]string
	secrets []string // besides the tokens
}

func startSecured(t *testing.T) *secured {
	t.Helper()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "jwt.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secJWTSecret+"\n"), 0o600))
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	authn, err := auth.New(auth.Config{AdminTokens: []string{secAdminToken},
		JWT:      auth.JWTConfig{SecretFiles: []string{secretFile}, Audience: secAudience, Issuer: secIssuer},
		KeysFile: filepath.Join(dir, "keys.json"), Logger: log.With("component", "auth")})
	require.NoError(t, err)
	srv := start(t, drover.Config{
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "default"},
			PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})}},
		Manager: manager.Config{Auth: authn, AdminToken: secAdminToken, FarmToken: secFarmToken,
			MetricsToken: secMetricsToken, AllowedOrigins: []string{allowedOrigin}},
		Farm:       farm.Config{Slots: 6},
		Logger:     log,
		Conversion: &drover.Conversion{DataDir: filepath.Join(dir, "data"), JobSlots: -1},
	})
	s := &secured{t: t, srv: srv, base: "http://" + srv.Addr().String(), logs: logs,
		secrets: []string{secJWTSecret, secAdminToken, secFarmToken, secMetricsToken}}
	valid := func(user, tenant string, roles ...string) jwt.MapClaims {
		return jwt.MapClaims{"sub": user, "tenant": tenant, "roles": roles, "aud": secAudience, "iss": secIssuer,
			"exp": time.Now().Add(time.Hour).Unix()}
	}
	with := func(c jwt.MapClaims, k string, v any) jwt.MapClaims { c[k] = v; return c }
	s.tokens = map[string]string{
		"alice":     mint(t, secJWTSecret, valid("alice", "tenant-a", auth.RoleUser)),
		"bob":       mint(t, secJWTSecret, valid("bob", "tenant-b", auth.RoleUser)),
		"root":      mint(t, secJWTSecret, valid("root", "ops", auth.RoleAdmin)),
		"viewer":    mint(t, secJWTSecret, valid("vera", "tenant-a", "viewer")),
		"badsig":    mint(t, "another-secret-of-32-bytes-or-more-1234", valid("alice", "tenant-a", auth.RoleUser)),
		"expired":   mint(t, secJWTSecret, with(valid("alice", "tenant-a", auth.RoleUser), "exp", time.Now().Add(-time.Hour).Unix())),
		"wrong-aud": mint(t, secJWTSecret, with(valid("alice", "tenant-a", auth.RoleUser), "aud", "someone-else")),
	}
	return s
}

func mint(t *testing.T, key string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	require.NoError(t, err)
	return s
}

// do sends a request with the bearer token (if any) and extra headers, and
// returns the status, the headers and the body, which it keeps for the
// secrets check.
func (s *secured) do(method, path, token string, body io.Reader, hdr http.Header) (int, http.Header, []byte) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	require.NoError(s.t, err)
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	s.keep(string(b))
	return resp.StatusCode, resp.Header, b
}

func (s *secured) keep(body string) {
	s.mu.Lock()
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
}

// upload uploads a file as the holder of token and returns its item id.
func (s *secured) upload(token, name string) string {
	s.t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", name)
	require.NoError(s.t, err)
	_, _ = io.WriteString(fw, cubeSTL)
	require.NoError(s.t, w.Close())
	code, _, b := s.do(http.MethodPost, "/api/upload", token, &buf, http.Header{"Content-Type": {w.FormDataContentType()}})
	require.Equal(s.t, http.StatusOK, code, "%s", b)
	var out struct {
		ID string `json:"itemid"`
	}
	require.NoError(s.t, json.Unmarshal(b, &out))
	require.NotEmpty(s.t, out.ID, "%s", b)
	return out.ID
}

// Levels of the route table.
const (
	lvPublic  = "public"
	lvUser    = "user"
	lvAdmin   = "admin"
	lvFarm    = "farm"    // the farm token
	lvMetrics = "metrics" // the metrics token or an admin
)

// routeCase is a route's entry in the table: its level, and what kind of
// route it is.
type routeCase struct {
	level string
	// item: the route names a conversion item (its :id is the other
	// tenant's item in the wrong-tenant case).
	item bool
	// own: a public route that checks a credential of its own (a signed
	// URL's signature). ws: a WebSocket route; long: an answer that does not end (SSE, a
	// long poll); opens: a successful call opens a session. These are not
	// called with valid credentials here; the session tests below do.
	own, ws, long, opens bool
}

// routeTable is every route of the secured server. A route added without
// an entry here fails TestRouteTableCoversEveryRoute.
var routeTable = map[string]routeCase{
	// Public: health, the dashboard, signed URLs, the viewer door ("/"),
	// and /status, redacted for all but admins.
	"GET /":                {level: lvPublic},
	"GET /health":          {level: lvPublic},
	"GET /livez":           {level: lvPublic},
	"GET /status":          {level: lvPublic},
	"GET /ui/*path":        {level: lvPublic},
	"GET /api/direct/*key": {level: lvPublic, own: true},
	"PUT /api/direct/*key": {level: lvPublic, own: true},
	"GET /metrics":         {level: lvMetrics},

	// Sessions.
	"GET /ws":              {level: lvUser, ws: true},
	"GET /stream":          {level: lvUser, ws: true},
	"GET /login":           {level: lvUser, opens: true},
	"GET /login/:id":       {level: lvUser, opens: true},
	"GET /logout/:id":      {level: lvUser},
	"POST /execute/:id":    {level: lvUser},
	"GET /events":          {level: lvUser, long: true},
	"DELETE /sessions/:id": {level: lvAdmin},

	// Administration.
	"GET /admin/keys":              {level: lvAdmin},
	"POST /admin/keys":             {level: lvAdmin},
	"DELETE /admin/keys/:id":       {level: lvAdmin},
	"GET /api/v1/farms":            {level: lvAdmin},
	"POST /api/v1/farms/:id/drain": {level: lvAdmin},

	// Farms.
	"POST /api/v1/farms":                          {level: lvFarm},
	"POST /api/v1/farms/:id/heartbeat":            {level: lvFarm},
	"DELETE /api/v1/farms/:id":                    {level: lvFarm},
	"POST /api/v1/jobs/lease":                     {level: lvFarm},
	"POST /api/v1/jobs/:id/renew":                 {level: lvFarm},
	"GET /api/v1/jobs/:id/input/:index":           {level: lvFarm},
	"POST /api/v1/jobs/:id/output-url":            {level: lvFarm},
	"PUT /api/v1/jobs/:id/output/:name":           {level: lvFarm},
	"PUT /api/v1/jobs/:id/output/shattered/:name": {level: lvFarm},
	"POST /api/v1/jobs/:id/complete":              {level: lvFarm},
	"POST /api/v1/jobs/:id/fail":                  {level: lvFarm},
	"GET /api/v1/items/:id/files/:name":           {level: lvFarm},
}

// The conversion API, the same under both prefixes.
func init() {
	conv := map[string]routeCase{
		"POST /upload":                       {level: lvUser},
		"POST /uploadArray":                  {level: lvUser},
		"PUT /create":                        {level: lvUser},
		"PUT /reconvert/:id":                 {level: lvUser, item: true},
		"PUT /delete/:id":                    {level: lvUser, item: true},
		"GET /data":                          {level: lvUser},
		"GET /data/:id":                      {level: lvUser, item: true},
		"GET /items":                         {level: lvUser},
		"GET /updated":                       {level: lvUser, long: true},
		"GET /file/:id/:type":                {level: lvUser, item: true},
		"GET /fileByName/:id/:name":          {level: lvUser, item: true},
		"GET /original/:id":                  {level: lvUser, item: true},
		"GET /shattered/:id/*name":           {level: lvUser, item: true},
		"GET /shatteredXML/:id":              {level: lvUser, item: true},
		"GET /info":                          {level: lvUser},
		"GET /uploadToken/:name":             {level: lvUser},
		"GET /uploadToken/:name/:size":       {level: lvUser},
		"GET /downloadToken/:id/:type":       {level: lvUser, item: true},
		"GET /streamingSession":              {level: lvUser, opens: true},
		"PUT /enableStreamAccess/:sessionid": {level: lvUser},
	}
	for k, c := range conv {
		method, path, _ := strings.Cut(k, " ")
		for _, prefix := range []string{"/api", "/caas_api"} {
			routeTable[method+" "+prefix+path] = c
		}
	}
}

// concrete is a request path for a route pattern: each parameter is id.
var paramRE = regexp.MustCompile(`[:*][A-Za-z]+`)

func concrete(pattern, id string) string {
	return paramRE.ReplaceAllString(pattern, id)
}

// Every route the server has is in the table, and every entry of the table
// is a route the server has.
func TestRouteTableCoversEveryRoute(t *testing.T) {
	s := startSecured(t)
	have := map[string]bool{}
	for _, r := range s.srv.Manager().Router().Routes() {
		key := r.Method + " " + r.Path
		have[key] = true
		_, ok := routeTable[key]
		require.True(t, ok, "route %s has no entry in routeTable: say who may call it", key)
	}
	for key := range routeTable {
		require.True(t, have[key], "routeTable lists %s, which the server does not have", key)
	}
}

// refusal is an answer the middleware gave: status, code, a plain message,
// nothing else.
func requireRefusal(t *testing.T, status int, want int, hdr http.Header, body []byte, what string) {
	t.Helper()
	require.Equal(t, want, status, "%s: %s", what, body)
	var got map[string]any
	require.NoError(t, json.Unmarshal(body, &got), "%s: %s", what, body)
	require.Len(t, got, 2, "%s: only a code and a message: %s", what, body)
	code := map[int]string{http.StatusUnauthorized: "unauthorized", http.StatusForbidden: "forbidden"}[want]
	require.Equal(t, code, got["code"], what)
	require.NotEmpty(t, got["message"], what)
	if want == http.StatusUnauthorized {
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer", what)
	}
}

// wsHeader makes a request a WebSocket upgrade.
func wsHeader() http.Header {
	return http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
}

// Every route, tried with no token, a bad signature, an expired token, a
// token of the wrong audience and one of the wrong role, is refused with
// the right status and a {code, message} body; farm routes refuse users'
// and admins' tokens; a user of another tenant gets nothing of an item.
// No session, item or data comes out of any of it.
func TestEveryRouteRefusesBadCredentials(t *testing.T) {
	s := startSecured(t)
	item := s.upload(s.tokens["alice"], "cube.stl")

	for key, rc := range routeTable {
		method, pattern, _ := strings.Cut(key, " ")
		path := concrete(pattern, "x")
		var hdr http.Header
		if rc.ws {
			hdr = wsHeader()
		}
		t.Run(key, func(t *testing.T) {
			switch rc.level {
			case lvPublic:
				code, _, body := s.do(method, path, "", nil, hdr)
				if rc.own {
					// Its signature is its credential: a made-up one is refused.
					require.Contains(t, []int{http.StatusForbidden, http.StatusNotFound}, code, "%s", body)
					break
				}
				require.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, code, "%s", body)
			case lvMetrics:
				code, h, body := s.do(method, path, "", nil, nil)
				requireRefusal(t, code, http.StatusUnauthorized, h, body, "no token")
				code, h, body = s.do(method, path, s.tokens["alice"], nil, nil)
				requireRefusal(t, code, http.StatusForbidden, h, body, "a user")
				code, _, _ = s.do(method, path, secMetricsToken, nil, nil)
				require.Equal(t, http.StatusOK, code, "the metrics token")
				code, _, _ = s.do(method, path, s.tokens["root"], nil, nil)
				require.Equal(t, http.StatusOK, code, "an admin")
			case lvFarm:
				for _, name := range []string{"", "alice", "root", "expired"} {
					code, _, body := s.do(method, path, s.tokens[name], nil, hdr)
					require.Equal(t, http.StatusUnauthorized, code, "%q on a farm route: %s", name, body)
				}
				code, _, body := s.do(method, path, secAdminToken, nil, hdr)
				require.Equal(t, http.StatusUnauthorized, code, "the admin token on a farm route: %s", body)
				if method == http.MethodGet {
					code, _, body := s.do(method, path, secFarmToken, nil, hdr)
					require.NotEqual(t, http.StatusUnauthorized, code, "the farm token: %s", body)
				}
			case lvUser, lvAdmin:
				for _, name := range []string{"", "badsig", "expired", "wrong-aud"} {
					code, h, body := s.do(method, path, s.tokens[name], nil, hdr)
					requireRefusal(t, code, http.StatusUnauthorized, h, body, "token "+cmpName(name))
				}
				wrongRole := "viewer" // no user role
				if rc.level == lvAdmin {
					wrongRole = "alice" // a user, not an admin
				}
				code, h, body := s.do(method, path, s.tokens[wrongRole], nil, hdr)
				requireRefusal(t, code, http.StatusForbidden, h, body, "wrong role "+wrongRole)
				if rc.item {
					// Bob, of another tenant, names Alice's item.
					code, _, body := s.do(method, concrete(pattern, item), s.tokens["bob"], nil, nil)
					require.Contains(t, []int{http.StatusForbidden, http.StatusNotFound}, code,
						"another tenant's item: %s", body)
					require.NotContains(t, string(body), "cube", "nothing of the item")
				}
				if !rc.ws && !rc.long && !rc.opens && method == http.MethodGet {
					right := "alice"
					if rc.level == lvAdmin {
						right = "root"
					}
					code, _, body := s.do(method, path, s.tokens[right], nil, nil)
					require.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, code,
						"the right credential: %s", body)
				}
			default:
				t.Fatalf("unknown level %q", rc.level)
			}
		})
	}

	// Nothing came of it: no session, and Bob sees no item.
	require.Empty(t, s.srv.Manager().Status().Sessions)
	code, _, body := s.do(http.MethodGet, "/api/items", s.tokens["bob"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, string(body), item)
	s.requireNoSecrets()
}

func cmpName(name string) string {
	if name == "" {
		return "(none)"
	}
	return name
}

// dial opens /ws with header; resp is the handshake's answer.
func (s *secured) dial(query string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	s.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: subprotocols}
	u := strings.Replace(s.base, "http://", "ws://", 1) + "/ws" + query
	ws, resp, err := d.Dial(u, header)
	if resp != nil && ws == nil {
		b, _ := io.ReadAll(resp.Body)
		s.keep(string(b))
	}
	return ws, resp, err
}

// welcome reads frames until the welcome and returns it.
func welcome(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(30*time.Second)))
	for {
		_, b, err := ws.ReadMessage()
		require.NoError(t, err)
		var f map[string]any
		require.NoError(t, json.Unmarshal(b, &f))
		switch f["type"] {
		case "welcome":
			return f
		case "error":
			t.Fatalf("error frame: %s", b)
		}
	}
}

// logout ends a session with a close frame and closes the connection.
func logout(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	require.NoError(t, ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)))
	_ = ws.Close()
}

func bearerHeader(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// A foreign Origin cannot upgrade, nor post; an allowed one can, and gets
// CORS; the server's own origin can. A token in the subprotocol is taken,
// and the other protocol offered is echoed; a token in the query works
// and is not logged.
func TestOriginsAndWebSocketCredentials(t *testing.T) {
	s := startSecured(t)
	alice := s.tokens["alice"]

	h := bearerHeader(alice)
	h.Set("Origin", "http://evil.example")
	ws, resp, err := s.dial("", h)
	require.Error(t, err)
	require.Nil(t, ws)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a foreign origin cannot upgrade")
	code, _, body := s.do(http.MethodPost, "/api/upload", alice, nil, http.Header{"Origin": {"http://evil.example"}})
	requireRefusal(t, code, http.StatusForbidden, nil, body, "a foreign origin's post")

	for _, origin := range []string{allowedOrigin, s.base} {
		h := bearerHeader(alice)
		h.Set("Origin", origin)
		ws, resp, err := s.dial("", h)
		require.NoError(t, err, origin)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		welcome(t, ws)
		logout(t, ws)
	}

	// The allowed origin's preflight and answers carry CORS.
	code, hdr, _ := s.do(http.MethodOptions, "/api/upload", "", nil, http.Header{"Origin": {allowedOrigin},
		"Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization,cs-api-arg"}})
	require.Equal(t, http.StatusNoContent, code)
	require.Equal(t, allowedOrigin, hdr.Get("Access-Control-Allow-Origin"))
	require.Contains(t, hdr.Get("Access-Control-Allow-Headers"), "Authorization")
	require.Contains(t, hdr.Get("Access-Control-Allow-Headers"), "CS-API-Arg")
	require.Contains(t, hdr.Values("Vary"), "Origin")
	code, hdr, _ = s.do(http.MethodGet, "/api/items", alice, nil, http.Header{"Origin": {allowedOrigin}})
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, allowedOrigin, hdr.Get("Access-Control-Allow-Origin"))
	code, hdr, _ = s.do(http.MethodGet, "/api/items", alice, nil, http.Header{"Origin": {"http://evil.example"}})
	require.Equal(t, http.StatusOK, code, "a foreign GET is answered, without CORS its page cannot read it")
	require.Empty(t, hdr.Get("Access-Control-Allow-Origin"))

	// The token as a subprotocol: "drover" is echoed, the token is not.
	ws, resp, err = s.dial("", nil, "drover", "bearer."+alice)
	require.NoError(t, err)
	require.Equal(t, "drover", resp.Header.Get("Sec-Websocket-Protocol"))
	welcome(t, ws)
	logout(t, ws)

	// The token as a query parameter.
	ws, _, err = s.dial("?access_token="+url.QueryEscape(alice), nil)
	require.NoError(t, err)
	welcome(t, ws)
	logout(t, ws)

	// A bad token in the subprotocol or the query is refused before the upgrade.
	_, resp, err = s.dial("", nil, "drover", "bearer."+s.tokens["expired"])
	require.Error(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_, resp, err = s.dial("?access_token="+s.tokens["badsig"], nil)
	require.Error(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	s.requireNoSecrets()
}

// A session belongs to who opened it: another user cannot resume it, nor
// run or end its REST twin; an admin can end it. Starts, ends and
// refusals are audited.
func TestSessionsBelongToTheirPrincipal(t *testing.T) {
	s := startSecured(t)
	alice, bob := s.tokens["alice"], s.tokens["bob"]

	ws, _, err := s.dial("", bearerHeader(alice))
	require.NoError(t, err)
	w := welcome(t, ws)
	resume := w["resume"].(string)
	require.NoError(t, ws.UnderlyingConn().Close()) // dropped: resumable

	// Bob holds the resume token, and still gets nothing.
	ws, _, err = s.dial("?resume="+url.QueryEscape(resume), bearerHeader(bob))
	require.NoError(t, err, "the refusal comes in the protocol, like an unknown token's")
	_, b, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Contains(t, string(b), `"not_found"`)
	_ = ws.Close()
	ws, _, err = s.dial("?resume="+url.QueryEscape(resume), bearerHeader(alice))
	require.NoError(t, err)
	require.Equal(t, w["session"], welcome(t, ws)["session"], "Alice resumes her own")

	// An admin ends it: Alice's connection closes with 1008.
	code, _, body := s.do(http.MethodDelete, "/sessions/"+w["session"].(string), s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	for {
		if _, _, err = ws.ReadMessage(); err != nil {
			break
		}
	}
	require.True(t, websocket.IsCloseError(err, websocket.ClosePolicyViolation), "%v", err)
	_ = ws.Close()

	// REST: Bob cannot execute on, or log out, Alice's session.
	code, _, body = s.do(http.MethodGet, "/login/alice-rest-1", alice, nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), `"permitted"`)
	task := `{"command":"echo","data":"hi"}`
	code, _, _ = s.do(http.MethodPost, "/execute/alice-rest-1", bob, strings.NewReader(task), nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _, _ = s.do(http.MethodGet, "/logout/alice-rest-1", bob, nil, nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _, body = s.do(http.MethodGet, "/login/alice-rest-1", bob, nil, nil)
	require.NotContains(t, string(body), `"permitted"`, "Bob cannot take Alice's session id")
	code, _, body = s.do(http.MethodPost, "/execute/alice-rest-1", alice, strings.NewReader(task), nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, _ = s.do(http.MethodGet, "/logout/alice-rest-1", alice, nil, nil)
	require.Equal(t, http.StatusOK, code)

	// The audit: Alice's sessions started and ended, Bob's refusals.
	require.Eventually(t, func() bool {
		return len(auditLines(s.logs.String(), "session_end")) >= 2
	}, 10*time.Second, 20*time.Millisecond)
	starts := auditLines(s.logs.String(), "session_start")
	require.NotEmpty(t, starts)
	for _, l := range starts {
		require.Equal(t, "alice", l["user"])
		require.Equal(t, "tenant-a", l["tenant"])
		require.Equal(t, "jwt", l["via"])
		require.NotEmpty(t, l["session"])
		require.NotEmpty(t, l["pool"])
	}
	ends := auditLines(s.logs.String(), "session_end")
	require.True(t, slices.ContainsFunc(ends, func(l map[string]any) bool { return l["reason"] == "ended by an administrator" }))
	s.do(http.MethodGet, "/admin/keys", s.tokens["alice"], nil, nil)
	refused := auditLines(s.logs.String(), "refused")
	require.True(t, slices.ContainsFunc(refused, func(l map[string]any) bool {
		return l["route"] == "/admin/keys" && l["user"] == "alice" && l["status"] == float64(http.StatusForbidden)
	}), "%v", refused)
	s.requireNoSecrets()
}

// auditLines are the audit lines of event in a JSON log.
func auditLines(log, event string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(log, "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		if l["msg"] == "audit" && l["component"] == "audit" && l["event"] == event {
			out = append(out, l)
		}
	}
	return out
}

// /status shows admins everything and others only the capacity; /metrics
// asks for its token; API keys are made, used and revoked by admins, and
// their secret is shown once.
func TestStatusMetricsAndKeys(t *testing.T) {
	s := startSecured(t)

	var public map[string]any
	code, _, body := s.do(http.MethodGet, "/status", s.tokens["alice"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal(body, &public))
	for _, k := range []string{"farms", "instances", "sessions", "queue", "conversion", "pools"} {
		require.NotContains(t, public, k, "a user's /status")
	}
	require.Contains(t, public, "capacity")
	require.Contains(t, public, "version")
	var full map[string]any
	code, _, body = s.do(http.MethodGet, "/status", s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal(body, &full))
	require.Contains(t, full, "farms")
	require.Contains(t, full, "sessions")
	code, _, body = s.do(http.MethodGet, "/status", secAdminToken, nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), `"sessions"`, "the admin token sees all")

	// A key: made by an admin, shown once, used, listed without its
	// secret, revoked.
	code, _, body = s.do(http.MethodPost, "/admin/keys", s.tokens["root"],
		strings.NewReader(`{"name":"ci","tenant":"tenant-a"}`), http.Header{"Content-Type": {"application/json"}})
	require.Equal(t, http.StatusCreated, code, "%s", body)
	var made manager.KeyCreated
	require.NoError(t, json.Unmarshal(body, &made))
	require.NotEmpty(t, made.Secret)
	s.mu.Lock()
	s.bodies = s.bodies[:len(s.bodies)-1] // the one answer that shows it
	s.mu.Unlock()
	s.secrets = append(s.secrets, made.Secret)

	code, _, body = s.do(http.MethodGet, "/api/items", made.Secret, nil, nil)
	require.Equal(t, http.StatusOK, code, "%s", body)
	code, _, body = s.do(http.MethodGet, "/api/items", "", nil,
		http.Header{"Cs-Api-Arg": {`{"accessKey":"` + made.Secret + `"}`}})
	require.Equal(t, http.StatusOK, code, "as hc-caas clients send it: %s", body)
	code, _, body = s.do(http.MethodGet, "/admin/keys", made.Secret, nil, nil)
	requireRefusal(t, code, http.StatusForbidden, nil, body, "a user's key on the admin routes")
	code, _, body = s.do(http.MethodGet, "/admin/keys", s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), made.ID)
	code, _, _ = s.do(http.MethodDelete, "/admin/keys/"+made.ID, s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	code, h, body := s.do(http.MethodGet, "/api/items", made.Secret, nil, nil)
	requireRefusal(t, code, http.StatusUnauthorized, h, body, "a revoked key")
	code, _, _ = s.do(http.MethodDelete, "/admin/keys/"+made.ID+"x", s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusNotFound, code)
	require.NotEmpty(t, auditLines(s.logs.String(), "key_created"))

	// A read-only key, as an hc-caas client sends it: it lists and reads
	// its tenant's items, and cannot upload; nothing is stored.
	code, _, body = s.do(http.MethodPost, "/admin/keys", s.tokens["root"],
		strings.NewReader(`{"name":"reader","tenant":"tenant-a","read_only":true}`), http.Header{"Content-Type": {"application/json"}})
	require.Equal(t, http.StatusCreated, code, "%s", body)
	var reader manager.KeyCreated
	require.NoError(t, json.Unmarshal(body, &reader))
	s.mu.Lock()
	s.bodies = s.bodies[:len(s.bodies)-1]
	s.mu.Unlock()
	s.secrets = append(s.secrets, reader.Secret)
	asReader := http.Header{"Cs-Api-Arg": {`{"accessKey":"` + reader.Secret + `"}`}}
	aliceItem := s.upload(s.tokens["alice"], "shared.stl")
	code, _, body = s.do(http.MethodGet, "/api/items", "", nil, asReader)
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Contains(t, string(body), aliceItem, "a read-only key of tenant-a sees tenant-a's items")
	var up bytes.Buffer
	mw := multipart.NewWriter(&up)
	fw, err := mw.CreateFormFile("file", "refused.stl")
	require.NoError(t, err)
	_, _ = io.WriteString(fw, cubeSTL)
	require.NoError(t, mw.Close())
	hdr := asReader.Clone()
	hdr.Set("Content-Type", mw.FormDataContentType())
	code, _, body = s.do(http.MethodPost, "/api/upload", "", &up, hdr)
	require.Equal(t, http.StatusForbidden, code, "%s", body)
	require.Contains(t, string(body), "ERROR")
	code, _, body = s.do(http.MethodGet, "/api/items", s.tokens["root"], nil, nil)
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, string(body), "refused.stl", "the refused upload left an item")
	s.requireNoSecrets()
}

// requireNoSecrets greps every log line and answer body for the secrets
// and the tokens.
func (s *secured) requireNoSecrets() {
	s.t.Helper()
	secrets := slices.Clone(s.secrets)
	for _, tok := range s.tokens {
		secrets = append(secrets, tok)
	}
	// Both sides of /status, once more.
	s.do(http.MethodGet, "/status", s.tokens["root"], nil, nil)
	s.do(http.MethodGet, "/status", "", nil, nil)
	logs := s.logs.String()
	require.NotEmpty(s.t, logs)
	s.mu.Lock()
	bodies := slices.Clone(s.bodies)
	s.mu.Unlock()
	for _, secret := range secrets {
		require.NotContains(s.t, logs, secret, "a secret in the log")
		for _, b := range bodies {
			require.NotContains(s.t, b, secret, "a secret in an answer")
		}
	}
}

// /events is a user's too, scoped: a user sees the item changes of the
// user's tenant and none of the manager's own events (farms, sessions),
// which are an admin's.
func TestEventsScopedToTheUser(t *testing.T) {
	s := startSecured(t)
	events := func(token string) (<-chan string, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/events", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		return lines, func() { cancel(); _ = resp.Body.Close() }
	}
	alice, stopAlice := events(s.tokens["alice"])
	defer stopAlice()
	root, stopRoot := events(s.tokens["root"])
	defer stopRoot()

	// A session of Alice's makes manager events; Bob's upload and then
	// Alice's make item events.
	ws, _, err := s.dial("", bearerHeader(s.tokens["alice"]))
	require.NoError(t, err)
	welcome(t, ws)
	logout(t, ws)
	bobItem := s.upload(s.tokens["bob"], "bob.stl")
	aliceItem := s.upload(s.tokens["alice"], "alice.stl")

	var seen []string
	for line := range alice {
		seen = append(seen, line)
		if strings.Contains(line, aliceItem) {
			break
		}
	}
	for _, line := range seen {
		require.NotContains(t, line, bobItem, "Alice sees Bob's item")
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			require.True(t, strings.HasPrefix(ev, "item"), "a manager event reached a user: %s", ev)
		}
	}
	// The admin sees the manager's events and both tenants' items.
	var sawSession, sawBob bool
	for line := range root {
		if strings.HasPrefix(line, "event: session") {
			sawSession = true
		}
		if strings.Contains(line, bobItem) {
			sawBob = true
		}
		if sawSession && sawBob {
			break
		}
	}
	require.True(t, sawSession && sawBob)
}
