package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/drover-dev/drover/placement"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/session"
)

// Opening a session is one sequence for every door (GET /ws, GET /login,
// GET /stream and Open): the connect options are parsed once
// (session.ParseConnectOptions), then admit (pool, connect hooks, the
// session on the books), then place (an instance, bind). A WebSocket
// client is admitted before its read loop starts and placed while it runs,
// so that it hears its queue position; the other doors wait for both.

// openRequest is a request for a new session.
type openRequest struct {
	opts   session.ConnectOptions
	remote string
	http   *http.Request // nil for in-process sessions
	query  url.Values
	// client is the connection of a WebSocket session; restKey the id of
	// a REST one.
	client  *clientConn
	restKey string
	// stream: a stream session, relayed to a fresh instance started with
	// opts.Model, or with a session directory of its own (sessionDir).
	stream     bool
	sessionDir bool
	// byToken: a streaming session; see Session.byToken.
	byToken bool
}

// connectDefaults are the connect options of a query that says nothing:
// the default pool; wait is the door's own default.
func (m *Manager) connectDefaults(wait bool) session.ConnectOptions {
	return session.ConnectOptions{Pool: m.cfg.DefaultPool, Wait: wait}
}

// errRefused marks a connect hook's refusal; errRefusedPlain is what the
// client gets for a refusal without a code.
var (
	errRefused      = errors.New("refused by a connect hook")
	errRefusedPlain = session.NewError(session.CodeRejected, "the session was refused")
)

// admit finds the pool, makes the session and runs the connect hooks; the
// session is then on the manager's books, not yet placed. Errors: an
// unknown pool (ErrUnknownPool), or a hook's refusal (errRefused, joined
// with a *session.Error that says what the client sees).
func (m *Manager) admit(ctx context.Context, r openRequest) (*Session, error) {
	p, err := m.pool(r.opts.Pool)
	if err != nil {
		return nil, err
	}
	s := m.newSession(p, r.remote)
	if who := requestPrincipal(ctx, r.http); who != nil {
		s.owner = who
		s.info.User = who.User
		auth.SetSession(&s.info, who)
	}
	s.client = r.client
	s.restKey = r.restKey
	s.labels = r.opts.Labels
	if r.stream {
		s.stream = true
		s.startOpts = farmapi.StartOptions{Model: r.opts.Model, SessionDir: r.sessionDir}
		s.byToken = r.byToken
	}
	if err := m.admitAddress(ctx, s, r.http); err != nil {
		s.cancel(nil)
		m.auditSession(ctx, s, "refused", slog.String("code", errorCode(err)))
		return nil, fmt.Errorf("%w: %w", errRefused, err)
	}
	if err := m.connect(ctx, &middleware.ConnectRequest{Info: &s.info, HTTP: r.http, Query: r.query,
		Options: r.opts}); err != nil {
		s.cancel(nil)
		m.auditSession(ctx, s, "refused", slog.String("code", errorCode(err)))
		var se *session.Error
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: %w", errRefused, err)
		}
		// A hook's own words may hold anything: they go to the log, and
		// the client gets a plain refusal.
		m.log.Info("session refused", "pool", s.info.Pool, "remote", r.remote, "err", err)
		return nil, fmt.Errorf("%w: %w: %w", errRefused, errRefusedPlain, err)
	}
	if err := m.admitUser(ctx, s); err != nil {
		s.cancel(nil)
		m.auditSession(ctx, s, "refused", slog.String("code", errorCode(err)))
		return nil, fmt.Errorf("%w: %w", errRefused, err)
	}
	m.addSession(s)
	return s, nil
}

// refusal is the Disconnect of an admit error.
func refusal(err error) session.Disconnect {
	if d, ok := limitDisconnect(err); ok {
		return d
	}
	switch {
	case errors.Is(err, ErrUnknownPool):
		return session.DisconnectUnknownPool
	case errors.Is(err, errRefused):
		return session.DisconnectRejected
	}
	return session.DisconnectInternal
}

// placeSession puts an admitted session on an instance and binds it. queued, when
// set, hears the queue position while the session waits. On an error the
// session is left to the caller to end (placementFailure says how).
func (m *Manager) placeSession(ctx context.Context, s *Session, wait bool, queued func(int)) error {
	ch := make(chan error, 1)
	m.placeSessionFunc(ctx, s, wait, queued, func(err error) { ch <- err })
	return <-ch
}

// placeSessionFunc is placeSession that calls done with its outcome. A
// session that waits in the queue holds no goroutine meanwhile: done then
// runs in one of placement's.
func (m *Manager) placeSessionFunc(ctx context.Context, s *Session, wait bool, queued func(int), done func(error)) {
	m.place.AcquireFunc(ctx, s.holder(), wait, queued, func(inst *placement.Instance, err error) {
		done(m.placed(ctx, s, inst, err))
	})
}

// placed binds a session to the instance placement found for it.
func (m *Manager) placed(ctx context.Context, s *Session, inst *placement.Instance, err error) error {
	if err != nil {
		m.log.Info("session not placed", "session", s.info.ID, "pool", s.info.Pool, "err", err)
		m.auditSession(ctx, s, "not placed", slog.String("code", errorCode(err)))
		return err
	}
	if !s.bind(inst) {
		// The session ended while it waited: the instance goes back.
		m.place.Release(inst, true)
		return s.endError()
	}
	if s.ended() {
		// Ending now: its end releases the instance.
		return s.endError()
	}
	m.metrics.sessionsOpened.WithLabelValues(s.pool.cfg.Name).Inc()
	m.auditSession(ctx, s, "started")
	return nil
}

// placementFailure is the Disconnect of a session that could not be placed,
// by the error code its client gets.
func placementFailure(code string) session.Disconnect {
	switch code {
	case session.CodeNoCapacity, session.CodeTimeout:
		return session.DisconnectNoCapacity
	case session.CodeUnavailable:
		return session.DisconnectUnavailable
	case session.CodeShutdown:
		return session.DisconnectShutdown
	}
	return session.DisconnectInternal
}

// openNow admits and places a session before it returns: REST, stream and
// in-process sessions. Placement stops when ctx or the session ends.
func (m *Manager) openNow(ctx context.Context, r openRequest) (*Session, error) {
	s, err := m.admit(ctx, r)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	if err := m.placeSession(pctx, s, r.opts.Wait, nil); err != nil {
		if ctx.Err() != nil { // the caller gave up waiting
			s.end(session.DisconnectDroppedQueued)
			if errors.Is(err, context.Canceled) {
				err = ctx.Err()
			}
			return nil, err
		}
		s.end(placementFailure(errorCode(err)))
		return nil, err
	}
	return s, nil
}

// publicErrors are the errors whose words a client may read, whatever
// they were wrapped in: the wrapping holds addresses, farm ids and Go error
// chains, which go to the log only. The more specific come first.
var publicErrors = []struct {
	err error
	msg string
}{
	{farmapi.ErrStartTimeout, "could not start an instance: not ready within start timeout"},
	{farmapi.ErrBadModel, "could not start an instance: the model was refused"},
	{farmapi.ErrUnknownPool, "could not start an instance: no farm serves the pool"},
	{farmapi.ErrNoSlot, "could not start an instance: no free slot"},
	{farmapi.ErrDraining, "could not start an instance: the farm is draining"},
	{ErrNoCapacity, ErrNoCapacity.Error()},
	{ErrQueueTimeout, ErrQueueTimeout.Error()},
	{ErrUnknownPool, ErrUnknownPool.Error()},
	{ErrNoFarm, ErrNoFarm.Error()},
	{ErrFarmNotFound, ErrFarmNotFound.Error()},
	{ErrSessionNotFound, ErrSessionNotFound.Error()},
	{ErrSpawnFailed, ErrSpawnFailed.Error()},
	{ErrShutdown, ErrShutdown.Error()},
	{ErrStoreUnavailable, "sessions cannot be placed while the shared state is unreachable"},
}

// errorOf is the code and the plain sentence a client gets for err. A
// *session.Error speaks for itself (middleware, connect hooks and
// instances choose their words); the manager's own errors are reduced to
// their sentinel; anything else is "internal error".
func errorOf(err error) (code, msg string) {
	code = errorCode(err)
	msg, _ = publicMessage(err, code)
	return code, msg
}

// clientError is errorOf, logging the details of an error a client sees
// only as "internal error".
func (m *Manager) clientError(err error) (code, msg string) {
	code = errorCode(err)
	msg, ok := publicMessage(err, code)
	if !ok {
		m.log.Warn("internal error answered to a client", "code", code, "err", err)
	}
	return code, msg
}

// publicMessage is the sentence a client may read for err; ok is false when
// err says nothing a client may read.
func publicMessage(err error, code string) (msg string, ok bool) {
	var se *session.Error
	if errors.As(err, &se) && se.Code == code {
		return se.Message, true
	}
	var pe *placement.PoolError
	if errors.As(err, &pe) {
		return pe.Error(), true // names the pool the client asked for, nothing else
	}
	for _, pe := range publicErrors {
		if errors.Is(err, pe.err) {
			return pe.msg, true
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the request took too long", true
	case errors.Is(err, context.Canceled):
		return "the request was cancelled", true
	}
	return "internal error", false
}
