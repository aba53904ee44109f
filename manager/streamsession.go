package manager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/session"
)

// Streaming sessions, HOOPS conversion server style: a stream instance is
// placed first (OpenStreamSession, behind GET /api/streamingSession),
// with a session directory of its own on its farm; files are put into
// that directory while it runs (AddStreamFiles, behind
// enableStreamAccess); the viewer connects later, on any path of the
// manager, with the session's key as ?token=, and is relayed byte for
// byte to the instance. The session ends when that connection ends, when
// the instance exits, or when the farm kills an instance nobody connected
// to within its pool's initial-use time.
//
// The key is a secret like a REST session's id (it is one): it is never
// in /status or the log.

// ErrViewerConnected means a streaming session has its viewer already.
var ErrViewerConnected = errors.New("the streaming session has a viewer already")

// StreamOptions are the options of a streaming session.
type StreamOptions struct {
	// Pool is a stream pool; "" for the default pool.
	Pool string
	// Labels restrict placement to farms that carry them all.
	Labels map[string]string
	// Remote is shown in status and logs.
	Remote string
	// HTTP is the request the session is opened for, if any: the connect
	// hooks see it.
	HTTP *http.Request
}

// OpenStreamSession places a streaming session on a fresh instance of a
// stream pool, started with a session directory, without waiting for a
// free slot: ErrNoCapacity when there is none. It returns the session's
// key, the viewer's ?token=.
func (m *Manager) OpenStreamSession(ctx context.Context, opts StreamOptions) (string, error) {
	r := openRequest{opts: session.ConnectOptions{Pool: cmp.Or(opts.Pool, m.cfg.DefaultPool), Labels: opts.Labels},
		remote: opts.Remote, http: opts.HTTP, stream: true, sessionDir: true, byToken: true, restKey: newToken()}
	if opts.HTTP != nil {
		r.query = opts.HTTP.URL.Query()
	}
	s, err := m.openNow(ctx, r)
	if err != nil {
		return "", err
	}
	if s.inst.Info().Protocol != farmapi.ProtocolStream {
		s.end(session.DisconnectBadOptions)
		return "", session.NewError(session.CodeBadRequest, fmt.Sprintf("pool %q is not a stream pool", s.info.Pool))
	}
	return s.restKey, nil
}

// streamSession is the streaming session of key; nil when there is none.
func (m *Manager) streamSession(key string) *Session {
	if key == "" {
		return nil
	}
	m.mu.Lock()
	s := m.restKeys[key]
	m.mu.Unlock()
	if s == nil || !s.byToken || s.ended() {
		return nil
	}
	return s
}

// AddStreamFiles has the farm of the streaming session of key put files
// into its instance's session directory. ErrSessionNotFound: no such
// session (or it ended).
func (m *Manager) AddStreamFiles(ctx context.Context, key string, files []farmapi.ModelFile) error {
	s := m.streamSession(key)
	if s == nil {
		return ErrSessionNotFound
	}
	if err := s.inst.AddSessionFiles(ctx, files); err != nil {
		return fmt.Errorf("session %s: %w", s.info.ID, err)
	}
	return nil
}

// EndStreamSession ends the streaming session of key, if there is one.
func (m *Manager) EndStreamSession(key string) {
	if s := m.streamSession(key); s != nil {
		s.end(session.DisconnectLogout)
	}
}

// viewerDoor serves a viewer's WebSocket that names a streaming session
// with ?token= on a path no route takes (HOOPS viewers open
// ws://host:port?token=…). It reports whether it took the request.
func (m *Manager) viewerDoor(c *gin.Context) bool {
	r := c.Request
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) || !r.URL.Query().Has("token") {
		return false
	}
	s := m.streamSession(r.URL.Query().Get("token"))
	if s == nil {
		restError(c, http.StatusNotFound, session.CodeNotFound, noSuchSession)
		return true
	}
	if !s.viewer.CompareAndSwap(false, true) {
		restError(c, http.StatusConflict, session.CodeBadRequest, ErrViewerConnected.Error())
		return true
	}
	m.relayStream(c, s)
	return true
}
