// Package middleware defines how tasks pass from a client to an instance: a
// Handler serves a task, a Middleware wraps the next Handler. Composition
// follows Caddy's HTTP handlers: each middleware returns an error and decides
// whether, how often and with which task to call next.
//
// A middleware can change a task (edit t.Data, then call next), discard it
// (return nil without calling next: the client gets "done"), answer it itself
// (write results to w), run extra tasks in the same session (call next again
// with another Task: their results reach the client under the original id,
// or a private ResultWriter collects them; a Task without Session runs in
// the session of the task it came with), and observe results (wrap w).
//
// The package owns the types, the chain and the built-in middlewares. It does
// not know about connections or instances: the manager supplies the final
// Handler that sends a task to the session's instance.
package middleware

import (
	"context"
	"net/http"
	"net/url"

	"github.com/drover-dev/drover/session"
)

// Handler serves one task: it writes zero or more results to w and returns
// nil when the task is done, or an error (a *session.Error carries its code).
type Handler interface {
	ServeTask(ctx context.Context, t *session.Task, w session.ResultWriter) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *session.Task, w session.ResultWriter) error

// ServeTask calls f.
func (f HandlerFunc) ServeTask(ctx context.Context, t *session.Task, w session.ResultWriter) error {
	return f(ctx, t, w)
}

// Middleware is one link of the chain.
type Middleware interface {
	ServeTask(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error
}

// Func adapts a function to Middleware.
type Func func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error

// ServeTask calls f.
func (f Func) ServeTask(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
	return f(ctx, t, w, next)
}

// Chain is an ordered list of middleware; the first one sees a task first.
type Chain []Middleware

// Then builds the handler that runs the chain in front of h. It is built once
// per session: serving a task through it allocates nothing of its own.
func (c Chain) Then(h Handler) Handler {
	for i := len(c) - 1; i >= 0; i-- {
		h = link{m: c[i], next: h}
	}
	return h
}

type link struct {
	m    Middleware
	next Handler
}

func (l link) ServeTask(ctx context.Context, t *session.Task, w session.ResultWriter) error {
	return l.m.ServeTask(ctx, t, w, l.next)
}

// ConnectRequest is what connect hooks see of a session being opened.
type ConnectRequest struct {
	// Info is the new session; a hook may set Info.User.
	Info *session.Info
	// HTTP is the upgrade or REST request; nil for in-process sessions.
	HTTP *http.Request
	// Query is the request's query: the connect options and any
	// parameters of the application's own; nil for in-process sessions.
	Query url.Values
	// Options are the connect options the session was asked with, as
	// session.ParseConnectOptions read them (for in-process sessions, as
	// given to Open). Changing them has no effect.
	Options session.ConnectOptions
}

// ConnectHook runs before a session is placed. A non-nil error refuses the
// session; a *session.Error chooses the code the client sees.
type ConnectHook interface {
	OnConnect(ctx context.Context, r *ConnectRequest) error
}

// ConnectFunc adapts a function to ConnectHook.
type ConnectFunc func(ctx context.Context, r *ConnectRequest) error

// OnConnect calls f.
func (f ConnectFunc) OnConnect(ctx context.Context, r *ConnectRequest) error { return f(ctx, r) }

// DisconnectHook runs once when a session ends, with why: one of the
// session.Disconnect values (session.DisconnectLogout,
// session.DisconnectIdleTimeout, …). It does not run for a session handed
// to another manager: that session has not ended.
type DisconnectHook interface {
	OnDisconnect(info *session.Info, d session.Disconnect)
}

// DisconnectFunc adapts a function to DisconnectHook.
type DisconnectFunc func(info *session.Info, d session.Disconnect)

// OnDisconnect calls f.
func (f DisconnectFunc) OnDisconnect(info *session.Info, d session.Disconnect) { f(info, d) }

var (
	_ Handler        = HandlerFunc(nil)
	_ Middleware     = Func(nil)
	_ ConnectHook    = ConnectFunc(nil)
	_ DisconnectHook = DisconnectFunc(nil)
)
