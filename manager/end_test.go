package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/middleware"
	"github.com/drover-dev/drover/proxy"
	"github.com/drover-dev/drover/session"
)

// Every task gets exactly one answer: a task in flight when its session
// ends gets an error frame, with a code that fits the cause, before the
// event and the close that end the session.

// startedMarker answers every "sleep" task with a "started" result before
// the instance sees it, so that a test knows the task is in flight.
var startedMarker = middleware.Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next middleware.Handler) error {
	var d struct{ Command string }
	if json.Unmarshal(t.Data, &d) == nil && d.Command == "sleep" {
		if err := w.WriteResult([]byte(`"started"`)); err != nil {
			return err
		}
	}
	return next.ServeTask(ctx, t, w)
})

// startSlow sends a task the instance works on for 10 s and waits until it
// is in flight.
func (c *client) startSlow() {
	c.t.Helper()
	c.send(`{"type":"task","id":"slow","data":{"command":"sleep","ms":10000}}`)
	r := c.expect("result")
	require.JSONEq(c.t, `"slow"`, string(r.ID))
	require.JSONEq(c.t, `"started"`, string(r.Data))
}

// expectEnd reads the end of a session whose slow task was in flight: the
// task's error frame with code, then the event (if any), then the close
// with closeCode, and nothing else: no late result or done of the task.
func (c *client) expectEnd(code, event string, closeCode int) {
	c.t.Helper()
	f := c.expect("error")
	require.JSONEq(c.t, `"slow"`, string(f.ID), "the answer is the slow task's")
	require.Equal(c.t, code, f.Error.Code)
	require.NotEmpty(c.t, f.Error.Message)
	if event != "" {
		require.Equal(c.t, event, c.expect("event").Event)
	}
	require.Equal(c.t, closeCode, c.closeCode(), "nothing after the answer but the close")
}

func TestEndAnswersTaskInFlight(t *testing.T) {
	withMarker := func(m *manager.Manager) { m.Use(startedMarker) }

	t.Run("max lifetime", func(t *testing.T) {
		// The case: a 10 s task on a session with a 1.5 s lifetime.
		st := newStack(t, stackOpts{janitor: 20 * time.Millisecond, setup: withMarker,
			pools: []manager.Pool{{Name: "default", MaxLifetime: 1500 * time.Millisecond}}})
		c, _ := st.open("")
		c.startSlow()
		c.expectEnd(session.CodeTimeout, "max_lifetime", websocket.CloseNormalClosure)
	})

	t.Run("idle timeout", func(t *testing.T) {
		// The janitor has found the session idle; a task comes in before
		// it ends the session.
		idle, proceed := make(chan struct{}), make(chan struct{})
		st := newStack(t, stackOpts{janitor: 20 * time.Millisecond, pools: []manager.Pool{{Name: "default",
			IdleTimeout: 200 * time.Millisecond}}, setup: func(m *manager.Manager) {
			withMarker(m)
			m.SetIdleEndHook(func(*session.Info) {
				close(idle)
				<-proceed
			})
		}})
		c, _ := st.open("")
		<-idle
		c.startSlow()
		close(proceed)
		c.expectEnd(session.CodeTimeout, "idle_timeout", websocket.CloseNormalClosure)
	})

	t.Run("shutdown", func(t *testing.T) {
		st := newStack(t, stackOpts{setup: withMarker})
		c, _ := st.open("")
		c.startSlow()
		shutdown(t, st.m)
		c.expectEnd(session.CodeShutdown, "shutdown", websocket.CloseGoingAway)
	})

	t.Run("drain", func(t *testing.T) {
		as := newAgentStack(t, withMarker)
		c, _ := as.open("")
		c.startSlow()
		as.agent.Drain()
		ev := c.expect("event")
		require.Equal(t, "draining", ev.Event)
		// The drain outlasts MaxDrain: the farm deregisters and stops the
		// instance.
		c.expectEnd(session.CodeShutdown, "instance_lost", websocket.CloseNormalClosure)
	})

	t.Run("hand-off on shutdown", func(t *testing.T) {
		ss := newSharedStack(t, sharedOpts{slots: 2, handOff: true, stopLast: true,
			setup: func(_ int, m *manager.Manager) { withMarker(m) }})
		c, w := ss.mgrs[0].open("")
		c.startSlow()
		shutdown(t, ss.mgrs[0].m)
		c.expectEnd(session.CodeShutdown, "shutdown", websocket.CloseServiceRestart)
		c2, w2 := ss.mgrs[1].open("resume=" + w.Resume)
		require.Equal(t, w.Session, w2.Session, "the session lives on")
		c2.one(`{"command":"echo"}`)
	})

	t.Run("resumed on another manager", func(t *testing.T) {
		ss := newSharedStack(t, sharedOpts{slots: 2, setup: func(_ int, m *manager.Manager) { withMarker(m) }})
		c, w := ss.mgrs[0].open("")
		c.startSlow()
		_, w2 := ss.mgrs[1].open("resume=" + w.Resume)
		require.Equal(t, w.Session, w2.Session)
		c.expectEnd(session.CodeInterrupted, "", websocket.ClosePolicyViolation)
	})
}

// An in-process (or REST) task cut off by a logout from elsewhere is
// answered "interrupted".
func TestLogoutInterruptsInProcessTask(t *testing.T) {
	started := make(chan struct{})
	st := newStack(t, stackOpts{setup: func(m *manager.Manager) {
		m.Use(middleware.Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next middleware.Handler) error {
			close(started)
			return next.ServeTask(ctx, t, w)
		}))
	}})
	s, err := st.m.Open(context.Background(), manager.OpenOptions{})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Execute(context.Background(), []byte(`{"command":"sleep","ms":10000}`))
		errc <- err
	}()
	<-started
	require.NoError(t, s.Close())
	var se *session.Error
	require.ErrorAs(t, <-errc, &se)
	require.Equal(t, session.CodeInterrupted, se.Code)
}

// A task sent before the welcome of a session that is never placed gets
// its answer too.
func TestQueuedTaskAnsweredWhenPlacementFails(t *testing.T) {
	st := newStack(t, stackOpts{slots: 1, pools: []manager.Pool{{Name: "default", Warm: 0,
		QueueTimeout: time.Second}}})
	st.open("")
	c := st.dial("")
	c.send(`{"type":"task","id":"early","data":{"command":"echo"}}`)
	require.Equal(t, "queued", c.read().Type)
	f := c.expect("error")
	require.Equal(t, "null", string(f.ID), "first the session's own error")
	require.Equal(t, session.CodeNoCapacity, f.Error.Code)
	f = c.expect("error")
	require.JSONEq(t, `"early"`, string(f.ID), "then the task's")
	require.Equal(t, session.CodeNoCapacity, f.Error.Code)
	require.Equal(t, websocket.CloseTryAgainLater, c.closeCode())
}

func shutdown(t *testing.T, m *manager.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, m.Shutdown(ctx))
}

// agentStack is a manager and a farm served over HTTP whose agent drains
// within 300 ms and then closes the farm, as `drover farm` does.
type agentStack struct {
	*stack
	agent *farm.Agent
}

func newAgentStack(t *testing.T, setup func(*manager.Manager)) *agentStack {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default"}}, FarmToken: sharedFarmToken,
		HeartbeatInterval: 100 * time.Millisecond, Logger: log})
	require.NoError(t, err)
	setup(m)
	f, err := farm.New(farm.Config{ID: "farm-d", Slots: 2, Pools: []farm.PoolSpec{workerSpec("default")}, Logger: log})
	require.NoError(t, err)
	relay := proxy.New(proxy.Options{Logger: log})
	fsrv, err := farm.NewServer(f, farm.ServerConfig{Token: sharedFarmToken, Relay: relay, Logger: log})
	require.NoError(t, err)
	farmHTTP := httptest.NewServer(fsrv)
	srv := httptest.NewServer(m.Handler())
	agent, err := farm.NewAgent(farm.AgentConfig{Farm: f, Managers: []string{srv.URL}, Token: sharedFarmToken,
		AdvertiseURL: farmHTTP.URL, MaxDrain: 300 * time.Millisecond, RetryMin: 20 * time.Millisecond,
		RetryMax: 100 * time.Millisecond, Logger: log})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		err := agent.Run(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- errors.Join(err, f.Close(ctx))
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
		srv.Close()
		agent.Drain() // Run returns once the farm is empty
		require.NoError(t, <-done)
		farmHTTP.Close()
		require.NoError(t, relay.Shutdown(ctx))
		require.NoError(t, fsrv.Close())
	})
	st := &stack{t: t, m: m, farm: f, srv: srv}
	eventually(t, "the farm to register", func() bool { return m.Capacity().Slots == 2 })
	return &agentStack{stack: st, agent: agent}
}
