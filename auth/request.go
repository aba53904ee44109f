package auth

import (
	"net/http"

	"github.com/drover-dev/drover/session"
)

// RequestAuthenticator says who sent a request. A nil principal with a nil
// error means the request carries no credential and anonymous callers are
// not admitted: routes that need a principal answer 401. A non-nil error
// is a credential that does not check out (bad signature, expired, wrong
// audience, revoked key): 401 on every route but the public ones.
type RequestAuthenticator interface {
	Authenticate(r *http.Request) (*Principal, *Error)
}

// AuthenticatorFunc adapts a function to RequestAuthenticator.
type AuthenticatorFunc func(r *http.Request) (*Principal, *Error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(r *http.Request) (*Principal, *Error) { return f(r) }

type sessionKey struct{}

// SetSession records p as the principal of a session, for middleware (a
// task filter by role, per-user limits) to read with SessionPrincipal.
func SetSession(info *session.Info, p *Principal) { info.Set(sessionKey{}, p) }

// SessionPrincipal is the principal a session was opened by, or nil.
func SessionPrincipal(info *session.Info) *Principal {
	if info == nil {
		return nil
	}
	v, _ := info.Get(sessionKey{})
	p, _ := v.(*Principal)
	return p
}
