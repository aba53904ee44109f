package manager

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover-dev/drover/auth"
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
	restKey   string // the id REST clients use; a secret like the token
	// owner opened the session; only the same user of the same tenant
	// may resume it or run its REST tasks. nil for in-process sessions
	// opened without a principal.
	owner  *auth.Principal
	labels map[string]string // farm labels the session asked for
	// stream sessions get an idle instance that fits startOpts or a fresh
	// one started with them, and their client's bytes are relayed to it.
	stream    bool
	startOpts farmapi.StartOptions
	// byToken: a streaming session (OpenStreamSession), whose viewer
	// connects later with its key as ?token=; viewer is set while one is
	// relayed.
	byToken bool
	viewer  atomic.Bool
	inst    *placement.Instance
	// conn is inst's connection, taken once at bind; nil for a stream
	// session.
	conn    *instConn
	handler middleware.Handler
	ctx     context.Context
	// cancel ends ctx with the error a task in flight is answered with:
	// endErr, the Task of the session's Disconnect, set once before.
	cancel context.CancelCauseFunc
	endErr session.Error

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
	// draining: the session's farm drains; losing the instance then ends
	// the session as session.DisconnectFarmDrained.
	draining atomic.Bool
	endOnce  sync.Once
	// lim is the session's part of the manager's limits; nil without.
	lim *sessionLimits
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
	s.lim = m.newSessionLimits(remote)
	s.ctx, s.cancel = context.WithCancelCause(m.ctx)
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

// bind records the placement and registers the session. It reports false,
// and records nothing, when the session ended while it was being placed:
// the instance was never the session's, and the caller releases it. Once
// bind returned true, the session's end releases the instance.
func (s *Session) bind(inst *placement.Instance) bool {
	s.mu.Lock()
	if s.state != sessPlacing {
		s.mu.Unlock()
		return false
	}
	s.inst = inst
	s.conn, _ = inst.Conn().(*instConn)
	s.info.Instance = inst.ID()
	s.info.Farm = inst.Farm()
	s.boundAt = time.Now()
	s.touch() // idle time counts from the welcome, not from the queue
	s.state = sessActive
	s.mu.Unlock()
	close(s.bound)
	s.m.shared.publish(store.Event{Type: store.EventSessionOpened, Session: s.info.ID, Farm: s.info.Farm})
	return true
}

// serveInstance is the last handler of the chain: it sends the task to the
// session's instance.
func (s *Session) serveInstance(ctx context.Context, t *session.Task, w session.ResultWriter) error {
	switch t.Session {
	case &s.info:
	case nil:
		t.Session = &s.info // a task a middleware made runs in this session
	default:
		return errForeignTask
	}
	if s.conn == nil {
		return session.NewError(session.CodeBadRequest, "a stream session takes no tasks")
	}
	return s.conn.call(ctx, t.Data, w, s, s.timer, s.pool.cfg.TaskTimeout)
}

var errForeignTask = session.NewError(session.CodeInternal, "a middleware passed on a task of another session")

// run serves one task through the chain. The caller writes done or error.
//
// then, when set, runs before the next task may start: the WebSocket reader
// writes the done or error frame there. end waits for it, so the answer of
// a task in flight always comes before the event and the close that end
// sends.
//
// A task sent before the welcome waits here for the placement, holding the
// task lock like a running task: a session that ends before it is placed
// answers it too.
func (s *Session) run(t *session.Task, w session.ResultWriter, then func(error)) error {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	select {
	case <-s.bound:
	default:
		select {
		case <-s.bound:
		case <-s.ctx.Done():
		}
	}
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.touch()
	start := time.Now()
	var err error
	if s.ctx.Err() != nil {
		err = s.endError()
	} else if err = s.handler.ServeTask(s.ctx, t, w); err != nil {
		err = s.answerFor(err)
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
	if err := s.admitTask(); err != nil {
		return nil, err
	}
	var c collector
	t := session.Task{Data: data, Session: &s.info}
	done := make(chan error, 1)
	// The task runs under the session's context; ctx only bounds the wait.
	s.m.goTracked(func() {
		// The task is done before it is answered: the caller's next task
		// may come at once.
		err := func() error {
			defer s.taskDone()
			return s.run(&t, &c, nil)
		}()
		done <- err
	})
	select {
	case err := <-done:
		return c.results, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// endError is the answer of a task the end of the session cut off: the
// error of the session's Disconnect.
func (s *Session) endError() error {
	if e, ok := errors.AsType[*session.Error](context.Cause(s.ctx)); ok {
		return e
	}
	// The manager's context ended: it has shut down.
	return session.DisconnectShutdown.TaskError()
}

// answerFor turns the error of a task that the end of its session cut off
// into the answer the session's Disconnect gives.
func (s *Session) answerFor(err error) error {
	switch {
	case s.ctx.Err() != nil && errors.Is(err, context.Canceled):
		return s.endError()
	case errors.Is(err, errInstanceLost) && s.draining.Load():
		return errFarmDrained
	}
	return err
}

var errFarmDrained = session.DisconnectFarmDrained.TaskError()

// Close ends the session and releases its instance.
func (s *Session) Close() error {
	s.end(session.DisconnectLogout)
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
		s.end(session.DisconnectDroppedQueued)
		return
	}
	s.state = sessDetached
	grace := s.m.cfg.ResumeGrace
	s.graceTimer = time.AfterFunc(grace, func() { s.end(session.DisconnectResumeExpired) })
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
		old.close(session.DisconnectResumed)
	}
	s.touch()
	return true
}

func (s *Session) currentClient() *clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// instanceLost ends the session whose instance is gone: the task that was
// running (if any) reports its error, then the client gets the
// instance_lost event and the close. On a draining farm, the drain is the
// likely cause, and the session ends as session.DisconnectFarmDrained.
func (s *Session) instanceLost() {
	d := session.DisconnectInstanceLost
	if s.draining.Load() {
		d = session.DisconnectFarmDrained
	}
	s.end(d)
}

// farmDraining tells the session that its farm drains: the client gets the
// draining event. The session goes on until the farm stops its instance.
func (s *Session) farmDraining(farm string) {
	s.draining.Store(true)
	if c := s.currentClient(); c != nil {
		c.writeEvent(session.EventDraining, "farm", farm)
	}
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
	s.cancel(nil) // already cancelled by windDown, with the cause
	if prev == sessPlacing {
		close(s.bound)
	}
	return prev, c
}

// taskAnswerWait bounds how long the end of a session waits for the task
// in flight to give its answer. The instance connection lets go of a task
// at once when the session ends; only a middleware that ignores its
// context can make the end wait this long, and then the task's answer is
// dropped.
const taskAnswerWait = 2 * time.Second

// windDown starts the end of the session: its context is cancelled with
// the error of d, and a task in flight (or waiting for the placement)
// answers with it while the client is still attached. windDown returns
// once that answer is written.
func (s *Session) windDown(d session.Disconnect) {
	s.endErr = d.Task // read only by those who saw ctx end
	s.cancel(&s.endErr)
	if s.taskMu.TryLock() { // no task: the common case
		s.taskMu.Unlock()
		return
	}
	answered := make(chan struct{})
	go func() {
		s.taskMu.Lock()
		//nolint:staticcheck // an empty critical section waits for the running task
		s.taskMu.Unlock()
		close(answered)
	}()
	t := time.NewTimer(taskAnswerWait)
	defer t.Stop()
	select {
	case <-answered:
	case <-t.C:
		s.m.log.Warn("a task did not stop when its session ended", "session", s.info.ID, "reason", d.Reason)
	}
}

// sayGoodbye sends d's event and close frame to the session's last client
// connection, after windDown: a task in flight has had its answer.
func (s *Session) sayGoodbye(c *clientConn, d session.Disconnect) {
	if c == nil {
		return
	}
	switch d.Event {
	case "":
	case session.EventInstanceLost:
		c.writeEvent(d.Event, "instance", s.info.Instance)
	default:
		c.writeEvent(d.Event)
	}
	if d.Code != 0 {
		c.close(d)
	}
}

// reusable tells whether the instance of a session that ended this way may
// serve another one (pools with release: reuse): when the client ended the
// session, not a limit of the pool or a failure.
func reusable(d session.Disconnect) bool {
	switch d {
	case session.DisconnectLogout, session.DisconnectClientClosed, session.DisconnectResumeExpired,
		session.DisconnectBinaryFrame, session.DisconnectInvalidUTF8, session.DisconnectMessageTooBig,
		session.DisconnectBadOptions:
		return true
	}
	return false
}

// end finishes the session once, for the reason d: a task in flight is
// answered with d's error, the client gets d's event and close frame, the
// instance is released (kept for reuse only if reusable(d) and no task was
// cut off), and the disconnect hooks run.
func (s *Session) end(d session.Disconnect) {
	s.endOnce.Do(func() {
		s.windDown(d)
		prev, c := s.closeDown()
		s.releaseLimits() // before the goodbye: a client told of the end may open anew
		s.sayGoodbye(c, d)
		s.m.shared.deleteSession(s.m.sharedHash(s))
		s.m.removeSession(s)
		if prev != sessPlacing {
			s.m.shared.publish(store.Event{Type: store.EventSessionEnded, Session: s.info.ID, Farm: s.info.Farm})
		}
		if s.inst != nil {
			// A task still running (its wait just got cancelled) makes the
			// instance unclean; release checks that.
			s.m.place.Release(s.inst, reusable(d))
		}
		for _, h := range s.m.disconnectHooks {
			h.OnDisconnect(&s.info, d)
		}
		s.m.log.LogAttrs(s.ctx, slog.LevelInfo, "session ended", slog.String("session", s.info.ID),
			slog.String("instance", s.info.Instance), slog.String("reason", d.Reason), slog.Int("close_code", d.Code))
		if prev != sessPlacing {
			s.m.auditSession(context.Background(), s, "ended", slog.String("reason", d.Reason))
		}
	})
}

func (s *Session) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == sessClosed
}

// handOff lets go of a session another manager resumed: its client here is
// closed, the instance's connection dropped and its books cleared, but the
// instance lives on, and so does the session, elsewhere. No disconnect hook
// runs: the session has not ended.
func (s *Session) handOff(to string) {
	s.letGo(session.DisconnectResumed, to)
}

// leave lets go of a session as its manager shuts down: the client is told
// to resume elsewhere (1012, service restart), and the session stays in the
// store for another manager to claim.
func (s *Session) leave() {
	s.letGo(session.DisconnectRestart, "")
}

// letGo is end for a session that lives on elsewhere: a task in flight is
// answered and the client closed as d says, but the instance keeps running
// and no disconnect hook runs.
func (s *Session) letGo(d session.Disconnect, to string) {
	s.endOnce.Do(func() {
		s.windDown(d)
		_, c := s.closeDown()
		s.releaseLimits()
		s.sayGoodbye(c, d)
		s.m.removeSession(s)
		if s.inst != nil {
			s.m.place.Forget(s.inst)
		}
		s.m.log.Info("session left to another manager", "session", s.info.ID, "instance", s.info.Instance,
			"manager", to, "reason", d.Reason)
	})
}
