package manager

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/session"
)

// API key management under /admin/keys, for admins, on the key store of
// the authenticator (auth.Authenticator.Keys). A key's secret is in the
// answer to its creation, once: the store keeps only its hash, and no log
// line or later answer holds it.

// keyStorer is an authenticator with an API key store.
type keyStorer interface{ Keys() auth.KeyStore }

// maxKeyRequest bounds the body of POST /admin/keys.
const maxKeyRequest = 16 << 10

// KeyRequest is the body of POST /admin/keys. Tenant defaults to
// auth.DefaultTenant, Roles to the user role.
type KeyRequest struct {
	Name     string   `json:"name"`
	Tenant   string   `json:"tenant,omitempty"`
	Roles    []string `json:"roles,omitempty"`
	ReadOnly bool     `json:"read_only,omitempty"`
}

// KeyCreated is the answer to POST /admin/keys: the key, and its secret,
// which is shown this once.
type KeyCreated struct {
	auth.APIKey
	Secret string `json:"secret"`
}

func (m *Manager) keyRoutes(g *gin.RouterGroup) {
	g.POST("", m.serveCreateKey)
	g.GET("", m.serveListKeys)
	g.DELETE("/:id", m.serveRevokeKey)
}

// keyStore is the key store of the authenticator; when it has none, the
// request is answered 404.
func (m *Manager) keyStore(c *gin.Context) auth.KeyStore {
	if ks, ok := m.cfg.Auth.(keyStorer); ok {
		if st := ks.Keys(); st != nil {
			return st
		}
	}
	restError(c, http.StatusNotFound, session.CodeNotFound, "no API key store is configured")
	return nil
}

func (m *Manager) serveCreateKey(c *gin.Context) {
	st := m.keyStore(c)
	if st == nil {
		return
	}
	var req KeyRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxKeyRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		restError(c, http.StatusBadRequest, session.CodeBadRequest,
			"the body must be a JSON object: name, and optionally tenant, roles, read_only")
		return
	}
	secret, key, err := st.Create(c.Request.Context(), auth.APIKey{Name: req.Name, Tenant: req.Tenant,
		Roles: req.Roles, ReadOnly: req.ReadOnly})
	switch {
	case errors.Is(err, auth.ErrInvalidKey):
		restError(c, http.StatusBadRequest, session.CodeBadRequest, err.Error()) // names the field, never a secret
		return
	case err != nil:
		m.log.Warn("create an API key", "err", err)
		restError(c, http.StatusServiceUnavailable, session.CodeUnavailable, "the key store cannot be reached")
		return
	}
	m.auditKey(c, "key_created", key)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, KeyCreated{APIKey: key, Secret: secret})
}

func (m *Manager) serveListKeys(c *gin.Context) {
	st := m.keyStore(c)
	if st == nil {
		return
	}
	keys, err := st.List(c.Request.Context())
	if err != nil {
		m.log.Warn("list the API keys", "err", err)
		restError(c, http.StatusServiceUnavailable, session.CodeUnavailable, "the key store cannot be reached")
		return
	}
	if keys == nil {
		keys = []auth.APIKey{}
	}
	c.JSON(http.StatusOK, keys)
}

func (m *Manager) serveRevokeKey(c *gin.Context) {
	st := m.keyStore(c)
	if st == nil {
		return
	}
	id := c.Param("id")
	err := st.Revoke(c.Request.Context(), id)
	switch {
	case errors.Is(err, auth.ErrUnknownKey):
		restError(c, http.StatusNotFound, session.CodeNotFound, "no such key")
		return
	case err != nil:
		m.log.Warn("revoke an API key", "key", id, "err", err)
		restError(c, http.StatusServiceUnavailable, session.CodeUnavailable, "the key store cannot be reached")
		return
	}
	m.auditKey(c, "key_revoked", auth.APIKey{ID: id})
	c.JSON(http.StatusOK, gin.H{"id": id, "revoked": true})
}

// auditKey writes the audit line of a key's creation or revocation: its
// id and name, and who did it; never its secret.
func (m *Manager) auditKey(c *gin.Context, event string, k auth.APIKey) {
	attrs := []slog.Attr{slog.String("event", event), slog.String("api_key", k.ID), slog.String("remote", m.clientAddr(c.Request))}
	if k.Name != "" {
		attrs = append(attrs, slog.String("name", k.Name), slog.String("key_tenant", k.Tenant))
	}
	p := auth.FromContext(c.Request.Context())
	m.audit(c.Request.Context(), append(attrs, who(p)...)...)
}
