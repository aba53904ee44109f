// Package auth decides who is calling. An Authenticator reads a
// credential from a request (an Authorization header, a "bearer.<token>"
// WebSocket subprotocol, a query parameter, or the accessKey of hc-caas's
// CS-API-Arg header), checks it (the admin token; an API key from a
// KeyStore, in a file or in Redis, stored as a hash; a JWT signed with
// HS256, RS256 or EdDSA by a key from a secret, PEM or JWKS file, with
// exp, nbf, aud and iss checked) and answers with a Principal: user,
// tenant, roles, read-only. Without user authentication configured it
// admits callers on this machine only, as Redis does without a password
// (protected mode), or anyone when told to. Keys are reloaded by Reload.
//
// Routes decide what a principal may do; this package does not know them,
// nor flags and configuration files.
//
// Credentials never leave it: errors name what was wrong in a plain
// sentence, never the token, log lines name where a credential was found
// and why it was refused, and Scrub removes credentials from URLs before
// they are logged.
package auth

import (
	"context"
	"slices"
	"strings"
)

// Roles a principal can hold. Applications may define more; a task filter
// or a route may ask for any role by name.
const (
	// RoleAdmin drives the cluster: drain, end sessions, manage keys, the
	// full /status.
	RoleAdmin = "admin"
	// RoleUser opens sessions and converts files.
	RoleUser = "user"
)

// Via says how a principal was authenticated.
type Via string

// The ways in.
const (
	ViaJWT        Via = "jwt"
	ViaAPIKey     Via = "api-key"
	ViaAdminToken Via = "admin-token"
	// ViaLoopback: no authentication is configured and the caller is on
	// this machine (protected mode, as Redis runs without a password).
	ViaLoopback Via = "loopback"
	// ViaAnonymous: no authentication is configured and anonymous callers
	// are allowed from anywhere, as the operator stated explicitly.
	ViaAnonymous Via = "anonymous"
)

// DefaultTenant is the tenant of principals whose credential names none.
const DefaultTenant = "default"

// Principal is an authenticated caller.
type Principal struct {
	// User identifies the caller: a JWT's subject, an API key's name
	// ("key:<name>"), "admin" for the admin token, "anonymous".
	User string
	// Tenant owns what the caller creates (conversion items); the caller
	// sees and touches only its tenant's.
	Tenant string
	// Roles are what the caller may do (RoleAdmin, RoleUser, others).
	Roles []string
	// ReadOnly: the caller may read but not upload, reconvert or delete
	// (an API key marked read-only).
	ReadOnly bool
	// Via is how the caller was authenticated.
	Via Via
	// KeyID is the id of the API key used, for audit; empty otherwise.
	KeyID string
}

// HasRole reports whether p holds role. Admins hold every role.
func (p *Principal) HasRole(role string) bool {
	if p == nil {
		return false
	}
	return slices.Contains(p.Roles, role) || slices.Contains(p.Roles, RoleAdmin)
}

// Admin reports whether p may drive the cluster.
func (p *Principal) Admin() bool { return p != nil && slices.Contains(p.Roles, RoleAdmin) }

// CanWrite reports whether p may create, change or delete.
func (p *Principal) CanWrite() bool { return p != nil && !p.ReadOnly }

// SeesTenant reports whether p may see what belongs to tenant: its own, or
// any tenant's for an admin.
func (p *Principal) SeesTenant(tenant string) bool {
	if p == nil {
		return false
	}
	return p.Admin() || p.Tenant == tenant
}

// String is what audit lines record of p: who, which tenant, how. Never
// a credential.
func (p *Principal) String() string {
	if p == nil {
		return "nobody"
	}
	var b strings.Builder
	b.WriteString(p.User)
	b.WriteString(" (tenant ")
	b.WriteString(p.Tenant)
	b.WriteString(", via ")
	b.WriteString(string(p.Via))
	b.WriteString(")")
	return b.String()
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}
