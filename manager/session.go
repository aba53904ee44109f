package manager

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/placement"
	"github.com/drover-dev/drover/session"
	"github.com/drover-dev/drover/store"
)

type sessState uint8

const (
	sessPlacing sessState = iota
	sessActive
	sessDetached
	sessClosed
)

func (s sessState) String() string {
	return [...]string{"placing", "active", "detached", "closed"}[s]
}

// Session is one client session bound to one instance. WebSocket clients,
// REST clients and in-process users (Open) all get one.
type Session struct {
	m     *Manager
	info  session.Info
	pool  *poolState
	token string // resume token for WebSocket clients
	// tokenHash is set (under Manager.mu) once the session is recorded in
	// the store, resumable through other managers.
	tokenHash string
	restKey   string            // the id REST clients use; a secret like the token
	labels    map[string]string // farm labels the session asked for
	// stream sessions get an idle instance that fits startOpts or a fresh
	// one started with them, and their client's bytes are relayed to it.
	stream    bool
	startOpts farmapi.StartOptions
	inst      *placement.Instance
	// conn is inst's connection, taken once at bind; nil for a stream
	// session.
	conn    *instConn
	handler middleware.Handler
	ctx     context.Context
	cancel  context.CancelFunc

	// taskMu makes the tasks of a session run one at a time, in order, even
	// across a resume that swaps the client connection.
	taskMu sync.Mutex
	timer  *time.Timer // guarded by taskMu

	mu         sync.Mutex
	state      sessState
	client     *clientConn
	graceTimer *time.Timer
	bound      chan struct{} // closed once placed (or ended)

	boundAt    time.Time // set by bind, before the session is active
	inFlight   atomic.Int32
	lastActive atomic.Int64 // unix nanos
	endOnce    sync.Once
}

// secret is what proves a client's right to the session: the resume token
// of a WebSocket session, the id of a REST one (kept apart by a prefix).
func (s *Session) secret() string {
	if s.restKey != "" {
		return restSecret(s.restKey)
	}
	return s.token
}

func restSecret(key string) string { return "rest:" + key }

func newToken() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (m *Manager) newSession(p *poolState, remote string) *Session {
	s := &Session{
		m:     m,
		pool:  p,
		token: newToken(),
		bound: make(chan struct{}),
		timer: stoppedTimer(),
	}
	s.info.ID = newID()
	s.info.Pool = p.cfg.Name
	s.info.Remote = remote
	s.info.Created = time.Now()
	s.ctx, s.cancel = context.WithCancel(m.ctx)
	s.handler = m.chain.Then(middleware.HandlerFunc(s.serveInstance))
	s.touch()
	return s
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// Info describes the session; middleware sees the same value in Task.Session.
func (s *Session) Info() *session.Info { return &s.info }

func (s *Session) touch() { s.lastActive.Store(time.Now().UnixNano()) }

// bind records the placement and registers the session.
func (s *Session) bind(inst *placement.Instance) {
	s.inst = inst
	s.conn, _ = inst.Conn().(*instConn)
	s.info.Instance = inst.ID()
	s.info.Farm = inst.Farm()
	s.boundAt = time.Now()
	s.touch() // idle time counts from the welcome, not from the queue
	s.mu.Lock()
	if s.state == sessPlacing {
		s.state = sessActive
	}
	s.mu.Unlock()
	close(s.bound)
	s.m.shared.publish(store.Event{Type: store.EventSessionOpened, Session: s.info.ID, Farm: s.info.Farm})
}

// serveInstance is the last handler of the chain: it sends the task to the
// session's instance.
func (s *Session) serveInstance(ctx context.Context, t *session.Task, w session.ResultWriter) error {
	if t.Session != &s.info {
		return session.NewError(session.CodeBadRequest, "task of another session")
	}
	if s.conn == nil {
		return session.NewError(session.CodeBadRequest, "a stream session takes no tasks")
	}
	return s.conn.call(ctx, t.Data, w, s, s.timer, s.pool.cfg.TaskTimeout)
}

// run serves one task through the chain. The caller writes done or error.
//
// then, when set, runs before the next task may start: the WebSocket reader
// writes the done or error frame there, so that an instance_lost event,
// which waits for the task in flight, always comes after it.
func (s *Session) run(t *session.Task, w session.ResultWriter, then func(error)) error {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.touch()
	start := time.Now()
	var err error
	if s.ctx.Err() != nil {
		err = session.NewError(session.CodeInstanceLost, "the session has ended")
	} else {
		err = s.handler.ServeTask(s.ctx, t, w)
	}
	s.touch()
	s.m.metrics.observeTask(s.pool, err, time.Since(start))
	if then != nil {
		then(err)
	}
	return err
}

// Result is one result of a task executed with Execute.
type Result struct {
	// Data is the JSON result; nil for a binary result.
	Data json.RawMessage
	// Binary is a binary result.
	Binary []byte
}

// MarshalJSON writes Data, or Binary as {"binary": base64}.
func (r Result) MarshalJSON() ([]byte, error) {
	if r.Data != nil {
		return r.Data, nil
	}
	return json.Marshal(struct {
		Binary []byte `json:"binary"`
	}{r.Binary})
}

type collector struct{ results []Result }

func (c *collector) WriteResult(data []byte) error {
	c.results = append(c.results, Result{Data: append(json.RawMessage(nil), data...)})
	return nil
}

func (c *collector) WriteBinary(data []byte) error {
	c.results = append(c.results, Result{Binary: append([]byte(nil), data...)})
	return nil
}

// Execute runs one task in the session and returns its results. data must
// be a JSON value.
func (s *Session) Execute(ctx context.Context, data []byte) ([]Result, error) {
	if !json.Valid(data) {
		return nil, session.NewError(session.CodeBadRequest, "task data is not valid JSON")
	}
	var c collector
	t := session.Task{Data: data, Session: &s.info}
	done := make(chan error, 1)
	// The task runs under the session's context; ctx only bounds the wait.
	s.m.goTracked(func() { done <- s.run(&t, &c, nil) })
	select {
	case err := <-done:
		return c.results, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close ends the session and releases its instance.
func (s *Session) Close() error {
	s.end("logout", websocket.CloseNormalClosure, true)
	return nil
}

// detach keeps the session alive for the resume grace window after its
// client dropped without a close frame.
func (s *Session) detach(c *clientConn) {
	s.mu.Lock()
	if s.client != c || s.state == sessClosed {
		s.mu.Unlock()
		return
	}
	s.client = nil
	if s.state != sessActive {
		// Dropped while still queued: nothing to resume.
		s.mu.Unlock()
		s.end("dropped while queued", 0, false)
		return
	}
	s.state = sessDetached
	grace := s.m.cfg.ResumeGrace
	s.graceTimer = time.AfterFunc(grace, func() { s.end("resume window expired", 0, true) })
	s.mu.Unlock()
	s.m.log.Info("session detached", "session", s.info.ID, "grace", grace)
	s.m.metrics.detached.Inc()
}

// attach makes c the session's client connection (a resume). An older
// connection still attached is closed: the new one proved the token.
func (s *Session) attach(c *clientConn) bool {
	s.mu.Lock()
	if s.state == sessClosed || s.state == sessPlacing {
		s.mu.Unlock()
		return false
	}
	old := s.client
	s.client = c
	if s.state == sessDetached {
		s.m.metrics.detached.Dec()
	}
	s.state = sessActive
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
	}
	s.mu.Unlock()
	if old != nil {
		old.closeWith(websocket.ClosePolicyViolation, "resumed elsewhere")
	}
	s.touch()
	return true
}

func (s *Session) currentClient() *clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// instanceLost tells the client its instance is gone, after the task that
// was running (if any) has reported its error, and ends the session.
func (s *Session) instanceLost() {
	s.taskMu.Lock()
	//nolint:staticcheck // an empty critical section orders this after the running task
	s.taskMu.Unlock()
	if c := s.currentClient(); c != nil {
		c.writeEvent("instance_lost", "instance", s.info.Instance)
	}
	s.end("instance lost", websocket.CloseNormalClosure, false)
}

// closeDown marks the session closed and cancels it; it returns the state
// it was in and the client connection it had. end and letGo call it once.
func (s *Session) closeDown() (sessState, *clientConn) {
	s.mu.Lock()
	prev := s.state
	s.state = sessClosed
	c := s.client
	s.client = nil
	if s.graceTimer != nil {
		s.graceTimer.Stop()
	}
	s.mu.Unlock()
	if prev == sessDetached {
		s.m.metrics.detached.Dec()
	}
	s.cancel()
	if prev == sessPlacing {
		close(s.bound)
	}
	return prev, c
}

// end finishes the session once: the client is closed with code (0 for
// none), the instance released (reusable tells whether it may serve again),
// and the disconnect hooks run.
func (s *Session) end(reason string, code int, reusable bool) {
	s.endOnce.Do(func() {
		prev, c := s.closeDown()
		if c != nil && code != 0 {
			c.closeWith(code, reason)
		}
		s.m.shared.deleteSession(s.m.sharedHash(s))
		s.m.removeSession(s)
		if prev != sessPlacing {
			s.m.shared.publish(store.Event{Type: store.EventSessionEnded, Session: s.info.ID, Farm: s.info.Farm})
		}
		if s.inst != nil {
			// A task still running (its wait just got cancelled) makes the
			// instance unclean; release checks that.
			s.m.place.Release(s.inst, reusable)
		}
		for _, h := range s.m.disconnectHooks {
			h.OnDisconnect(&s.info, reason)
		}
		s.m.log.Info("session ended", "session", s.info.ID, "instance", s.info.Instance, "reason", reason)
	})
}

func (s *Session) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == sessClosed
}

// errorOf turns an error from the chain into a code and a message a client
// may see.
func errorOf(err error) (code, msg string) {
	var se *session.Error
	if errors.As(err, &se) {
		return se.Code, se.Message
	}
	if errors.Is(err, context.Canceled) {
		return session.CodeInstanceLost, "the session has ended"
	}
	return errorCode(err), errorMessage(err)
}

// handOff lets go of a session another manager resumed: its client here is
// closed, the instance's connection dropped and its books cleared, but the
// instance lives on, and so does the session, elsewhere. No disconnect hook
// runs: the session has not ended.
func (s *Session) handOff(to string) {
	s.letGo(websocket.ClosePolicyViolation, "resumed on another manager", to)
}

// leave lets go of a session as its manager shuts down: the client is told
// to resume elsewhere (1012, service restart), and the session stays in the
// store for another manager to claim.
func (s *Session) leave() {
	if c := s.currentClient(); c != nil {
		c.writeEvent("shutdown")
	}
	s.letGo(websocket.CloseServiceRestart, "manager restarting: resume elsewhere", "")
}

func (s *Session) letGo(code int, reason, to string) {
	s.endOnce.Do(func() {
		_, c := s.closeDown()
		if c != nil {
			c.closeWith(code, reason)
		}
		s.m.removeSession(s)
		if s.inst != nil {
			s.m.place.Forget(s.inst)
		}
		s.m.log.Info("session left to another manager", "session", s.info.ID, "instance", s.info.Instance,
			"manager", to, "reason", reason)
	})
}
