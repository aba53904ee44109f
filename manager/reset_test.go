package manager

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/drover-dev/drover/placement"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/session"
)

// The reset tests run the reference worker as a process of this test
// binary, which TestMain (harness_test.go) turns into the worker when
// DROVER_TEST_WORKER=1, on a farm of this process; the manager side is the
// instance connection the scheduler would hold.

func resetFarm(t *testing.T) *farm.Farm {
	t.Helper()
	f, err := farm.New(farm.Config{Name: "reset", Slots: 8, Pools: []farm.PoolSpec{{
		Name: "default", Command: os.Args[0], Env: []string{"DROVER_TEST_WORKER=1"}, Protocol: farm.ProtocolNative,
	}}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, f.Close(ctx))
	})
	return f
}

// resetManager is a Manager for its metrics, with no farm of its own.
func resetManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{Pools: []Pool{{Name: "default"}}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
	})
	return m
}

// testInstance is a fresh worker instance and the manager's connection to
// it; lost receives what the connection reports through onLost.
type testInstance struct {
	conn *instConn
	lost chan error
}

func startInstance(t *testing.T, f *farm.Farm) testInstance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	info, err := f.StartInstance(ctx, "default")
	require.NoError(t, err)
	ti := testInstance{lost: make(chan error, 1)}
	ti.conn, err = dialInstance(ctx, placement.InstanceURL(info), nil, nil, 1<<20, func(err error) { ti.lost <- err })
	require.NoError(t, err)
	t.Cleanup(ti.conn.close)
	return ti
}

// results records a task's results.
type results []string

func (r *results) WriteResult(data []byte) error { *r = append(*r, string(data)); return nil }
func (r *results) WriteBinary([]byte) error      { return nil }

// task runs one task as a session would and returns its only result.
func (ti testInstance) task(t *testing.T, data string) string {
	t.Helper()
	var r results
	timer := time.NewTimer(time.Hour)
	require.NoError(t, ti.conn.call(context.Background(), []byte(data), &r, nil, timer, 10*time.Second))
	require.Len(t, r, 1)
	return r[0]
}

// reusePool is a checked reuse pool whose reset is the given value.
func reusePool(t *testing.T, reset any, timeout time.Duration) *Pool {
	t.Helper()
	p := &Pool{Name: "default", Release: ReleaseReuse, Reset: reset, TaskTimeout: timeout}
	p.defaults()
	require.NoError(t, p.checkReset())
	return p
}

func TestResetInstanceClearsState(t *testing.T) {
	f, m := resetFarm(t), resetManager(t)
	tests := []struct {
		name  string
		reset any
		// after is what the next session's get finds.
		after string
	}{
		{"config file map", map[string]any{"command": "reset"}, `{"key":"a","value":null}`},
		{"raw JSON", json.RawMessage(`{"command":"reset"}`), `{"key":"a","value":null}`},
		// reset: none sends nothing: the next user sees the last one's state.
		{"none", ResetNone, `{"key":"a","value":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti := startInstance(t, f)
			p := reusePool(t, tt.reset, 0)
			require.Equal(t, `{"ok":true}`, ti.task(t, `{"command":"set","key":"a","value":1}`))

			require.NoError(t, m.resetInstance(context.Background(), ti.conn, p))
			require.True(t, ti.conn.clean(), "ready for the next session")
			require.Equal(t, tt.after, ti.task(t, `{"command":"get","key":"a"}`))
		})
	}
	require.Equal(t, 2.0, resets(t, m, "ok"))
}

// TestResetInstanceFails covers every way a reset can fail: each must be an
// error, which tells the release to stop the instance.
func TestResetInstanceFails(t *testing.T) {
	f, m := resetFarm(t), resetManager(t)
	tests := []struct {
		name    string
		reset   string
		timeout time.Duration
		before  func(ti testInstance)
		code    string // the session error's code; empty: not a session error
		is      error
		lost    bool // the connection reports the instance lost
	}{
		{name: "error frame", reset: `{"command":"fail"}`, code: session.CodeTaskFailed},
		{name: "task the instance does not know", reset: `{"command":"clear"}`, code: session.CodeBadRequest},
		{name: "no answer in time", reset: `{"command":"sleep","ms":60000}`, timeout: 200 * time.Millisecond,
			code: session.CodeTimeout},
		{name: "instance dies", reset: `{"command":"crash"}`, is: errInstanceLost, lost: true},
		{name: "connection closed", reset: `{"command":"reset"}`, is: errInstanceLost,
			before: func(ti testInstance) { ti.conn.close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti := startInstance(t, f)
			if tt.before != nil {
				tt.before(ti)
			}
			p := reusePool(t, json.RawMessage(tt.reset), tt.timeout)
			begin := time.Now()
			err := m.resetInstance(context.Background(), ti.conn, p)
			require.Error(t, err)
			require.Less(t, time.Since(begin), 10*time.Second)
			require.Contains(t, err.Error(), `pool "default"`)
			if tt.code != "" {
				var se *session.Error
				require.ErrorAs(t, err, &se)
				require.Equal(t, tt.code, se.Code, "err %v", err)
			}
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			if tt.lost {
				select {
				case <-ti.lost:
				case <-time.After(10 * time.Second):
					require.FailNow(t, "the loss was not reported")
				}
			}
		})
	}
	require.Equal(t, float64(len(tests)), resets(t, m, "error"))
}

func TestResetInstanceEndsWithContext(t *testing.T) {
	f, m := resetFarm(t), resetManager(t)
	ti := startInstance(t, f)
	p := reusePool(t, json.RawMessage(`{"command":"sleep","ms":60000}`), time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, m.resetInstance(ctx, ti.conn, p), context.DeadlineExceeded)
}

// TestResetInstanceWithoutTask checks that pools without a reset task send
// none: kill pools, whose instances are never handed on, and reset: none.
func TestResetInstanceWithoutTask(t *testing.T) {
	m := resetManager(t)
	for _, p := range []*Pool{{Name: "k", Release: ReleaseKill}, {Name: "n", Release: ReleaseReuse, Reset: ResetNone}} {
		require.NoError(t, p.checkReset())
		// A closed connection would fail any task sent on it.
		conn := &instConn{closed: true}
		require.NoError(t, m.resetInstance(context.Background(), conn, p), p.Name)
	}
	// A reset task the config never checked is no reason to skip it.
	unchecked := &Pool{Name: "u", Release: ReleaseReuse, Reset: map[string]any{"command": "reset"}}
	require.ErrorContains(t, m.resetInstance(context.Background(), &instConn{closed: true}, unchecked), "never checked")
}

func TestConfigReset(t *testing.T) {
	tests := []struct {
		name string
		pool Pool
		task string // the reset task kept, as JSON
		err  []string
	}{
		{name: "kill without reset", pool: Pool{Release: ReleaseKill}},
		{name: "default release without reset", pool: Pool{}},
		{name: "reuse with a map", pool: Pool{Release: ReleaseReuse, Reset: map[string]any{"command": "reset", "keep": []any{"a"}}},
			task: `{"command":"reset","keep":["a"]}`},
		{name: "reuse with raw JSON", pool: Pool{Release: ReleaseReuse, Reset: json.RawMessage(`{ "command" : "reset" }`)},
			task: `{"command":"reset"}`},
		{name: "reuse with bytes", pool: Pool{Release: ReleaseReuse, Reset: []byte(`{"command":"reset"}`)},
			task: `{"command":"reset"}`},
		{name: "reuse with none", pool: Pool{Release: ReleaseReuse, Reset: ResetNone}},
		{name: "reuse without reset", pool: Pool{Release: ReleaseReuse},
			err: []string{`pool "p"`, "release: reuse needs a reset", "{command: reset}", "reset: none"}},
		{name: "reset without reuse", pool: Pool{Reset: map[string]any{"command": "reset"}},
			err: []string{`pool "p"`, "reset applies to release: reuse only", "release: kill"}},
		{name: "none without reuse", pool: Pool{Release: ReleaseKill, Reset: ResetNone},
			err: []string{"reset applies to release: reuse only"}},
		{name: "quoted JSON", pool: Pool{Release: ReleaseReuse, Reset: `{"command":"reset"}`},
			err: []string{"reset must be none or the data of a reset task", "unquoted"}},
		{name: "bad raw JSON", pool: Pool{Release: ReleaseReuse, Reset: json.RawMessage(`{"command":`)},
			err: []string{"not JSON"}},
		{name: "null", pool: Pool{Release: ReleaseReuse, Reset: json.RawMessage(`null`)},
			err: []string{"reset: none for no reset"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pool.Name = "p"
			cfg := Config{Pools: []Pool{tt.pool}}
			err := cfg.defaults()
			if tt.err != nil {
				require.Error(t, err)
				for _, want := range tt.err {
					require.Contains(t, err.Error(), want)
				}
				return
			}
			require.NoError(t, err)
			if tt.task == "" {
				require.Nil(t, cfg.Pools[0].resetTask)
				return
			}
			require.Equal(t, tt.task, string(cfg.Pools[0].resetTask))
		})
	}
}

// resets reads drover_manager_instance_resets_total of pool "default" as
// the manager exports it.
func resets(t *testing.T, m *Manager, result string) float64 {
	t.Helper()
	mfs, err := m.cfg.Gatherer.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "drover_manager_instance_resets_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pool"] == "default" && labels["result"] == result {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}
