package farm

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/classcad"
	"github.com/drover-dev/drover/session"
)

// adapterPool is a pool of this test binary in mode, speaking protocol.
func adapterPool(name, mode, protocol string, env ...string) PoolSpec {
	p := childPool(name, mode, env...)
	p.Protocol = protocol
	if protocol == ProtocolDial {
		p.Args = slices.Clone(classcad.Args)
	}
	return p
}

// exitLog records OnExit calls.
type exitLog struct {
	ch chan exitEvent
}

type exitEvent struct {
	inst Instance
	err  error
}

func newExitLog() *exitLog { return &exitLog{ch: make(chan exitEvent, 16)} }

func (e *exitLog) onExit(inst Instance, err error) { e.ch <- exitEvent{inst, err} }

func (e *exitLog) wait(t *testing.T, id string) error {
	t.Helper()
	select {
	case ev := <-e.ch:
		require.Equal(t, id, ev.inst.ID)
		return ev.err
	case <-time.After(waitFor):
		t.Fatalf("no OnExit for %s", id)
	}
	return nil
}

func (e *exitLog) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case ev := <-e.ch:
		t.Fatalf("unexpected OnExit for %s: %v", ev.inst.ID, ev.err)
	case <-time.After(within):
	}
}

// hostClient plays the manager on an adapted instance's endpoint.
type hostClient struct {
	t    *testing.T
	ws   *websocket.Conn
	next int
}

func connectEndpoint(t *testing.T, f *Farm, id string) *hostClient {
	t.Helper()
	h, upstream, err := f.Endpoint(id)
	require.NoError(t, err)
	require.NotNil(t, h, "adapted instances are served by the farm")
	require.Empty(t, upstream)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return dialHost(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/")
}

// dialHost opens a native-protocol WebSocket at url.
func dialHost(t *testing.T, url string) *hostClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	return &hostClient{t: t, ws: ws}
}

type outcome struct {
	results  []string
	binaries [][]byte
	typ      session.FrameType // done or error
	code     string
	message  string
}

// task sends one task and reads its frames up to done or error.
func (c *hostClient) task(data string) outcome {
	t := c.t
	t.Helper()
	c.next++
	id := strconv.Itoa(c.next)
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage,
		fmt.Appendf(nil, `{"type":"task","id":%s,"data":%s}`, id, data)))
	require.NoError(t, c.ws.SetReadDeadline(time.Now().Add(waitFor)))
	var out outcome
	for {
		typ, msg, err := c.ws.ReadMessage()
		require.NoError(t, err, "reading the answer to task %s", id)
		if typ == websocket.BinaryMessage {
			out.binaries = append(out.binaries, msg)
			continue
		}
		var fr session.Frame
		require.NoError(t, session.Decode(msg, &fr), "frame %s", msg)
		require.Equal(t, id, string(fr.ID), "frame %s", msg)
		switch fr.Type {
		case session.FrameResult:
			out.results = append(out.results, string(fr.Data))
		case session.FrameDone:
			out.typ = fr.Type
			return out
		case session.FrameError:
			out.typ = fr.Type
			var e struct{ Code, Message string }
			require.NoError(t, json.Unmarshal(fr.Error, &e))
			out.code, out.message = e.Code, e.Message
			return out
		default:
			t.Fatalf("unexpected frame %s", msg)
		}
	}
}

// reply is a dial instance's Result as it reaches the manager: the whole
// object is the data.
type reply struct {
	Command       string          `json:"command"`
	From          string          `json:"from"`
	TransactionID uint64          `json:"transactionID"`
	Result        json.RawMessage `json:"result"`
}

// replies decodes the results of a dial task, and checks that each is a
// Result of the task's frame.
func replies(t *testing.T, out outcome) []reply {
	t.Helper()
	rs := make([]reply, len(out.results))
	for i, data := range out.results {
		require.NoError(t, json.Unmarshal([]byte(data), &rs[i]), data)
		require.Equal(t, "Result", rs[i].Command, data)
		require.Equal(t, rs[0].TransactionID, rs[i].TransactionID, "one frame: %s", data)
	}
	return rs
}

// values returns "from=result" of each reply.
func values(t *testing.T, out outcome) []string {
	t.Helper()
	var vs []string
	for _, r := range replies(t, out) {
		vs = append(vs, r.From+"="+string(r.Result))
	}
	return vs
}

// TestDialTasks runs tasks on a ClassCAD-style instance that waits for the
// farm's configuration before it says anything, as a real one does, and on
// one that sends its Handshake at once.
func TestDialTasks(t *testing.T) {
	t.Parallel()
	for _, order := range []struct {
		name  string
		extra []string
	}{
		{"configuration first", nil},
		{"handshake early", []string{"--early"}},
	} {
		t.Run(order.name, func(t *testing.T) {
			t.Parallel()
			p := adapterPool("cad", "dial", ProtocolDial)
			p.Args = append(p.Args, order.extra...)
			f := newTestFarm(t, Config{ID: "farm-d", Slots: 1, Pools: []PoolSpec{p}})
			inst, err := f.StartInstance(startCtx(t), "cad")
			require.NoError(t, err)
			killOnCleanup(t, inst.PID)
			require.Equal(t, StateReady, inst.State)
			require.Equal(t, ProtocolDial, inst.Protocol)
			require.Empty(t, inst.Addr, "dial instances have no port of their own")
			testDialTasks(t, f, inst)
		})
	}
}

func testDialTasks(t *testing.T, f *Farm, inst Instance) {
	c := connectEndpoint(t, f, inst.ID)

	out := c.task(`{"command":"echo","value":1}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{"echo=1"}, values(t, out), "BeginFrame and EndFrame replies are framing")
	first := replies(t, out)[0].TransactionID
	require.NotZero(t, first, "the instance answers in the frame's transaction")

	out = c.task(`[{"command":"echo","value":"a"}, {"command":"echo","value":"b"}]`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{`echo="a"`, `echo="b"`}, values(t, out))
	require.Greater(t, replies(t, out)[0].TransactionID, first, "each task is a frame of its own")

	out = c.task(`{"command":"config"}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{`config={"command":"configuration","farm":"farm-d"}`}, values(t, out),
		"the configuration the farm sent first")

	// An error ends the task; the rest of its frame is dropped, and the
	// next task sees only its own replies.
	out = c.task(`[{"command":"echo","value":1}, {"command":"fail"}, {"command":"echo","value":2}]`)
	require.Equal(t, session.FrameError, out.typ)
	require.Equal(t, session.CodeTaskFailed, out.code)
	require.Equal(t, "it failed", out.message)
	require.Equal(t, []string{"echo=1"}, values(t, out))
	out = c.task(`{"command":"echo","value":3}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{"echo=3"}, values(t, out))

	out = c.task(`{"command":"blob"}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, [][]byte{{1, 2, 3}}, out.binaries)
	require.Equal(t, []string{"blob="}, values(t, out))

	out = c.task(`[]`)
	require.Equal(t, session.FrameDone, out.typ, "an empty frame is a task too")
	require.Empty(t, out.results)

	for _, bad := range []string{`"echo"`, `[1]`, `null`} {
		out = c.task(bad)
		require.Equal(t, session.FrameError, out.typ, bad)
		require.Equal(t, session.CodeBadRequest, out.code, bad)
	}
	out = c.task(`{"command":"echo","value":4}`)
	require.Equal(t, []string{"echo=4"}, values(t, out))

	// A second manager connection shares the instance.
	c2 := connectEndpoint(t, f, inst.ID)
	out = c2.task(`{"command":"echo","value":5}`)
	require.Equal(t, []string{"echo=5"}, values(t, out))
}

// TestDialHandshake plays the instance on the farm's private port, in the
// orders a ClassCAD instance may use and in some it must not.
func TestDialHandshake(t *testing.T) {
	t.Parallel()
	// readConfiguration reads what the farm says first.
	readConfiguration := func(t *testing.T, ws *websocket.Conn) {
		t.Helper()
		typ, msg, err := ws.ReadMessage()
		require.NoError(t, err, "the farm speaks first")
		require.Equal(t, websocket.TextMessage, typ)
		require.JSONEq(t, `{"command":"configuration","farm":"farm-h"}`, string(msg))
	}
	send := func(t *testing.T, ws *websocket.Conn, typ int, msg string) {
		t.Helper()
		require.NoError(t, ws.WriteMessage(typ, []byte(msg)))
	}
	requireRefused := func(t *testing.T, ws *websocket.Conn, reason string) {
		t.Helper()
		for {
			_, _, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				require.ErrorAs(t, err, &ce)
				require.Equal(t, websocket.ClosePolicyViolation, ce.Code)
				require.Equal(t, reason, ce.Text)
				return
			}
		}
	}
	for _, tc := range []struct {
		name string
		// play is the instance's side; id is the one it was started with.
		play func(t *testing.T, ws *websocket.Conn, id string)
		// wantErr is what the start fails with; nil: it succeeds.
		wantErr error
		errText string
	}{
		{name: "silent until the configuration", play: func(t *testing.T, ws *websocket.Conn, id string) {
			// Nothing is sent before the configuration has come: a farm
			// waiting for the instance to speak first fails here.
			require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
			readConfiguration(t, ws)
			send(t, ws, websocket.TextMessage, `{"response":"Handshake","id":"`+id+`"}`)
			send(t, ws, websocket.TextMessage, `{"response":"Loading","progress":0.5}`)
			send(t, ws, websocket.TextMessage, `{"response":"Ready"}`)
		}},
		{name: "handshake before the configuration", play: func(t *testing.T, ws *websocket.Conn, id string) {
			send(t, ws, websocket.TextMessage, `{"response":"Handshake","id":"`+id+`"}`)
			readConfiguration(t, ws)
			send(t, ws, websocket.TextMessage, `{"response":"Ready"}`)
		}},
		{name: "handshake in binary messages", play: func(t *testing.T, ws *websocket.Conn, id string) {
			readConfiguration(t, ws)
			send(t, ws, websocket.BinaryMessage, `{"response":"Handshake","id":"`+id+`"}`)
			send(t, ws, websocket.BinaryMessage, `{"response":"Ready"}`)
		}},
		{name: "ready before the handshake", wantErr: ErrStartTimeout, play: func(t *testing.T, ws *websocket.Conn, id string) {
			readConfiguration(t, ws)
			send(t, ws, websocket.TextMessage, `{"response":"Ready"}`)
			requireRefused(t, ws, "expected a Handshake")
		}},
		{name: "handshake of another instance", wantErr: ErrStartTimeout, play: func(t *testing.T, ws *websocket.Conn, _ string) {
			readConfiguration(t, ws)
			send(t, ws, websocket.TextMessage, `{"response":"Handshake","id":"someone-else"}`)
			requireRefused(t, ws, "unknown instance id")
		}},
		{name: "error before ready", wantErr: ErrHandshake, errText: "licence expired",
			play: func(t *testing.T, ws *websocket.Conn, id string) {
				readConfiguration(t, ws)
				send(t, ws, websocket.TextMessage, `{"response":"Handshake","id":"`+id+`"}`)
				send(t, ws, websocket.TextMessage, `{"response":"Ready","error":{"message":"licence expired"}}`)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The process never connects: the test is the instance.
			p := adapterPool("cad", "never", ProtocolDial)
			p.SpawnRetries = -1
			if errors.Is(tc.wantErr, ErrStartTimeout) {
				p.StartTimeout = time.Second
			}
			f := newTestFarm(t, Config{ID: "farm-h", Slots: 1, Pools: []PoolSpec{p}})
			ids := make(chan string, 1)
			f.hookSpawned = func(inst Instance) {
				killOnCleanup(t, inst.PID)
				ids <- inst.ID
			}
			started := make(chan startResultT, 1)
			go func() {
				inst, err := f.StartInstance(startCtx(t), "cad")
				started <- startResultT{inst, err}
			}()
			var id string
			select {
			case id = <-ids:
			case <-time.After(waitFor):
				t.Fatal("no spawn")
			}
			ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/", f.dialSrv.port), nil)
			require.NoError(t, err)
			defer ws.Close()
			tc.play(t, ws, id)

			res := <-started
			if tc.wantErr != nil {
				require.ErrorIs(t, res.err, tc.wantErr)
				require.ErrorContains(t, res.err, tc.errText)
				return
			}
			require.NoError(t, res.err)
			require.Equal(t, StateReady, res.inst.State)

			// The instance is served: a task goes out as a frame.
			c := connectEndpoint(t, f, id)
			frame := make(chan []string, 1)
			go func() {
				var got []string
				defer func() { frame <- got }()
				for range 3 {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					got = append(got, string(msg))
				}
				for _, r := range []string{"BeginFrame", "echo", "EndFrame"} {
					reply := `{"command":"Result","from":"` + r + `","transactionID":1,"result":"` + r + `"}`
					if ws.WriteMessage(websocket.TextMessage, []byte(reply)) != nil {
						return
					}
				}
			}()
			out := c.task(`{"command":"echo"}`)
			require.Equal(t, []string{`{"command":"BeginFrame","transactionID":1}`, `{"command":"echo"}`,
				`{"command":"EndFrame","transactionID":1}`}, <-frame)
			require.Equal(t, session.FrameDone, out.typ)
			require.Equal(t, []string{`{"command":"Result","from":"echo","transactionID":1,"result":"echo"}`}, out.results)
		})
	}
}

func TestDialSpawnRetries(t *testing.T) {
	t.Parallel()
	p := adapterPool("cad", "never", ProtocolDial)
	p.StartTimeout = 300 * time.Millisecond
	p.SpawnRetries = 2
	p.SpawnBackoff = 200 * time.Millisecond
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{p}})
	var (
		mu      sync.Mutex
		spawned []Instance
		at      []time.Time
	)
	f.hookSpawned = func(inst Instance) {
		killOnCleanup(t, inst.PID)
		mu.Lock()
		spawned = append(spawned, inst)
		at = append(at, time.Now())
		mu.Unlock()
	}
	begin := time.Now()
	_, err := f.StartInstance(startCtx(t), "cad")
	took := time.Since(begin)
	require.ErrorIs(t, err, ErrStartTimeout)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, spawned, 3, "one spawn and two retries")
	require.GreaterOrEqual(t, took, 3*p.StartTimeout+2*p.SpawnBackoff)
	ids := map[string]bool{}
	for i, inst := range spawned {
		ids[inst.ID] = true
		requireGone(t, inst.PID)
		if i > 0 {
			gap := at[i].Sub(at[i-1])
			// Each attempt waits out its start timeout, then the backoff. The
			// timeout starts a little before the spawn, by however long a
			// spawn takes on a loaded machine, so only half of it is sure to
			// show between spawns; the total above checks the full waits.
			require.GreaterOrEqual(t, gap, p.StartTimeout/2+p.SpawnBackoff, "attempt %d came too soon", i+1)
		}
	}
	require.Len(t, ids, 3, "every attempt has its own id")
	require.Empty(t, f.Instances())
	f.mu.Lock()
	used := f.used
	f.mu.Unlock()
	require.Zero(t, used, "the slot is free")
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.dialWait) == 0
	}, waitFor, 5*time.Millisecond, "no dial instance is waited for")
}

func TestDialNoRetries(t *testing.T) {
	t.Parallel()
	// A process that exits before its handshake fails its start; with
	// retries off there is one attempt.
	p := adapterPool("cad", "crash", ProtocolDial)
	p.SpawnRetries = -1
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{p}})
	n := 0
	f.hookSpawned = func(Instance) { n++ }
	_, err := f.StartInstance(startCtx(t), "cad")
	require.ErrorIs(t, err, errExitedEarly)
	require.Equal(t, 1, n)
}

func TestDialWrongID(t *testing.T) {
	t.Parallel()
	p := adapterPool("cad", "dial", ProtocolDial)
	p.Args = append(p.Args, "--handshake-id", "someone-else")
	p.StartTimeout = 2 * time.Second
	p.SpawnRetries = -1
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{p}})
	_, err := f.StartInstance(startCtx(t), "cad")
	// The farm refuses the handshake; the child gives up and exits.
	require.ErrorIs(t, err, errExitedEarly)
}

func TestDialConnectionDropped(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := newTestFarm(t, Config{Slots: 1, OnExit: exits.onExit,
		Pools: []PoolSpec{adapterPool("cad", "dial", ProtocolDial)}})
	inst, err := f.StartInstance(startCtx(t), "cad")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	c := connectEndpoint(t, f, inst.ID)

	out := c.task(`{"command":"drop"}`)
	require.Equal(t, session.FrameError, out.typ)
	require.Equal(t, session.CodeInstanceLost, out.code)
	err = exits.wait(t, inst.ID)
	require.ErrorContains(t, err, "dial connection dropped")
	requireGone(t, inst.PID)

	// The manager's connection goes with the instance.
	_, _, err = c.ws.ReadMessage()
	require.Error(t, err)
	_, _, err = f.Endpoint(inst.ID)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestDialInstanceExits(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := newTestFarm(t, Config{Slots: 1, OnExit: exits.onExit,
		Pools: []PoolSpec{adapterPool("cad", "dial", ProtocolDial)}})
	inst, err := f.StartInstance(startCtx(t), "cad")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	c := connectEndpoint(t, f, inst.ID)
	out := c.task(`{"command":"exit"}`)
	require.Equal(t, session.CodeInstanceLost, out.code)
	require.ErrorContains(t, exits.wait(t, inst.ID), "exit status 3")
}

func TestStdio(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &logs), nil))
	p := adapterPool("sh", "stdio", ProtocolStdio)
	// Long enough for a -race child on a loaded machine to answer a line.
	p.IdleGap = time.Second
	f := newTestFarm(t, Config{Slots: 1, Logger: log, Pools: []PoolSpec{p}})
	inst, err := f.StartInstance(startCtx(t), "sh")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Equal(t, ProtocolStdio, inst.Protocol)
	require.Empty(t, inst.Addr)
	c := connectEndpoint(t, f, inst.ID)

	// Each line is a result: JSON as it is, anything else as a string.
	out := c.task(`{"print": ["{\"a\": 1}", "hello \"world\"", "[1,2]", "", "tab\there"]}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{`{"a": 1}`, `"hello \"world\""`, `[1,2]`, `""`, `"tab\there"`}, out.results)

	// The task goes in as one line of compact JSON.
	out = c.task("{\n  \"echo\": true,\n  \"x\": [1, 2]\n}")
	require.Equal(t, []string{`{"echo":true,"x":[1,2]}`}, out.results)

	// Lines closer together than the idle gap belong to one task.
	out = c.task(`{"print": ["1", "2", "3"], "sleep": 50}`)
	require.Equal(t, []string{"1", "2", "3"}, out.results)

	// A longer pause ends the task; what comes after is no task's.
	begin := time.Now()
	out = c.task(`{"print": ["4", "late"], "sleep": 2500}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{"4"}, out.results)
	require.GreaterOrEqual(t, time.Since(begin), p.IdleGap)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "msg=late") },
		waitFor, 10*time.Millisecond, "output outside a task is logged")

	out = c.task(`{"stderr": "something to say"}`)
	require.Empty(t, out.results)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "something to say") },
		waitFor, 10*time.Millisecond, "stderr goes to the log")
}

func TestStdioDelimiter(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	p := adapterPool("sh", "stdio", ProtocolStdio, "STDIO_DELIM=--END--")
	p.Delimiter = "--END--"
	f := newTestFarm(t, Config{Slots: 1, OnExit: exits.onExit, Pools: []PoolSpec{p}})
	inst, err := f.StartInstance(startCtx(t), "sh")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	c := connectEndpoint(t, f, inst.ID)

	// Pauses far longer than the default idle gap do not end the task.
	out := c.task(`{"print": ["a", "{\"b\":2}"], "sleep": 300}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{`"a"`, `{"b":2}`}, out.results)
	out = c.task(`{}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Empty(t, out.results)

	// A program that exits loses its task and is reported.
	out = c.task(`{"exit": 4}`)
	require.Equal(t, session.FrameError, out.typ)
	require.Equal(t, session.CodeInstanceLost, out.code)
	require.ErrorContains(t, exits.wait(t, inst.ID), "exit status 4")
}

// TestStdioWhileTaskRuns: the connection's reader does not wait for a
// stdio task, so a ping is answered while one runs; a task sent before the
// last one ended waits for it, and each answer carries its own task's id
// (the reader reuses its buffer for the next frame).
func TestStdioWhileTaskRuns(t *testing.T) {
	t.Parallel()
	p := adapterPool("sh", "stdio", ProtocolStdio, "STDIO_DELIM=--END--")
	p.Delimiter = "--END--"
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{p}})
	inst, err := f.StartInstance(startCtx(t), "sh")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	c := connectEndpoint(t, f, inst.ID)

	send := func(frame string) {
		require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, []byte(frame)))
	}
	send(`{"type":"task","id":"first","data":{"print":["a","b"],"sleep":300}}`)
	send(`{"type":"ping"}`)
	send(`{"type":"task","id":"second","data":{"print":["c"]}}`)
	require.NoError(t, c.ws.SetReadDeadline(time.Now().Add(waitFor)))
	var got []string
	pong := -1
	for len(got) < 5 {
		_, msg, err := c.ws.ReadMessage()
		require.NoError(t, err)
		var fr session.Frame
		require.NoError(t, session.Decode(msg, &fr), "frame %s", msg)
		if fr.Type == session.FramePong {
			pong = len(got)
			continue
		}
		got = append(got, fr.Type.String()+" "+string(fr.ID)+" "+string(fr.Data))
	}
	require.Equal(t, []string{
		`result "first" "a"`,
		`result "first" "b"`,
		`done "first" `,
		`result "second" "c"`,
		`done "second" `,
	}, got)
	// The first task sleeps 300 ms between its lines: the pong came before b.
	require.GreaterOrEqual(t, pong, 0, "the ping was answered")
	require.Less(t, pong, 2, "the ping was answered while the task ran")

	out := c.task(`{"print":["d"]}`)
	require.Equal(t, session.FrameDone, out.typ)
	require.Equal(t, []string{`"d"`}, out.results)
}

func TestStdioClosedStdout(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := newTestFarm(t, Config{Slots: 1, OnExit: exits.onExit,
		Pools: []PoolSpec{adapterPool("sh", "stdio", ProtocolStdio)}})
	inst, err := f.StartInstance(startCtx(t), "sh")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	c := connectEndpoint(t, f, inst.ID)
	out := c.task(`{"hush": true}`)
	require.Empty(t, out.results) // the idle gap ends it (done) before the kill (instance_lost)
	require.ErrorContains(t, exits.wait(t, inst.ID), "stdout closed")
	requireGone(t, inst.PID)
	_, _, err = c.ws.ReadMessage()
	require.Error(t, err, "the manager's connection goes with the instance")
}

// streamFarm makes a farm with one stream pool of listening children.
func streamFarm(t *testing.T, exits *exitLog, slots, portMin int, edit func(*PoolSpec)) *Farm {
	t.Helper()
	p := adapterPool("sc", "listen", ProtocolStream)
	edit(&p)
	cfg := Config{Slots: slots, OnExit: exits.onExit, Pools: []PoolSpec{p}}
	if portMin != 0 {
		cfg.PortMin, cfg.PortMax = portMin, portMin+slots-1
	}
	return newTestFarm(t, cfg)
}

func TestStreamLiveliness(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := streamFarm(t, exits, 1, 0, func(p *PoolSpec) {
		p.Readiness = ReadinessLiveliness
		p.Liveliness = 100 * time.Millisecond
	})
	res, starting := startWatched(startCtx(t), t, f, "sc")

	// Listening is not enough: the instance is ready when it says so.
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, StateStarting, f.Instances()[0].State)
	require.NoError(t, f.Liveliness(starting.ID, LivelinessReady))
	r := <-res
	require.NoError(t, r.err)
	inst := r.inst
	require.Equal(t, ProtocolStream, inst.Protocol)

	h, upstream, err := f.Endpoint(inst.ID)
	require.NoError(t, err)
	require.Nil(t, h)
	require.Equal(t, "ws://"+inst.Addr+"/", upstream)

	// Pings keep it alive well past three intervals.
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, f.Liveliness(inst.ID, LivelinessPing))
	}
	exits.none(t, 0)
	require.Equal(t, StateReady, f.Instances()[0].State)

	// Silence kills it.
	silent := time.Now()
	err = exits.wait(t, inst.ID)
	require.ErrorContains(t, err, "no liveliness report")
	require.GreaterOrEqual(t, time.Since(silent), 250*time.Millisecond)
	requireGone(t, inst.PID)
	require.ErrorIs(t, f.Liveliness(inst.ID, LivelinessPing), ErrNotFound)
}

func TestStreamInitialUseAndPorts(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	base := freePortRange(t, 2)
	f := streamFarm(t, exits, 2, base, func(p *PoolSpec) {
		p.InitialUse = time.Second
	})
	// A client reaches a at once (before b starts, which may take longer
	// than the initial use on a loaded host); nobody reaches b, which is
	// killed.
	a, err := f.StartInstance(startCtx(t), "sc")
	require.NoError(t, err)
	killOnCleanup(t, a.PID)
	_, _, err = f.Endpoint(a.ID)
	require.NoError(t, err)
	b, err := f.StartInstance(startCtx(t), "sc")
	require.NoError(t, err)
	killOnCleanup(t, b.PID)
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(base), a.Addr, "slot 0's port")
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(base+1), b.Addr, "slot 1's port")

	require.ErrorContains(t, exits.wait(t, b.ID), "no client connected within 1s")
	requireGone(t, b.PID)
	exits.none(t, 300*time.Millisecond)
	require.Equal(t, []string{a.ID}, ids(f.Instances()))

	// A slot's port is the slot's again.
	c, err := f.StartInstance(startCtx(t), "sc")
	require.NoError(t, err)
	killOnCleanup(t, c.PID)
	require.Equal(t, b.Addr, c.Addr)
	require.NoError(t, f.StreamConnected(c.ID))
	exits.none(t, 1200*time.Millisecond)
}

// TestStreamWarmStartHasNoInitialUse: a stream instance started warm waits
// for its client as long as the manager's warm pool holds it; one started
// for a client that never came is killed after InitialUse.
func TestStreamWarmStartHasNoInitialUse(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := streamFarm(t, exits, 2, 0, func(p *PoolSpec) {
		p.InitialUse = 300 * time.Millisecond
	})
	w, err := f.StartInstanceWith(startCtx(t), "sc", StartOptions{Warm: true})
	require.NoError(t, err)
	killOnCleanup(t, w.PID)
	b, err := f.StartInstance(startCtx(t), "sc")
	require.NoError(t, err)
	killOnCleanup(t, b.PID)

	require.ErrorContains(t, exits.wait(t, b.ID), "no client connected within 300ms")
	exits.none(t, 600*time.Millisecond)
	require.Equal(t, []string{w.ID}, ids(f.Instances()))
}

func TestStreamDisconnect(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	f := streamFarm(t, exits, 1, 0, func(*PoolSpec) {})
	inst, err := f.StartInstance(startCtx(t), "sc")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)

	require.ErrorIs(t, f.Liveliness(inst.ID, "sleepy"), ErrBadLiveliness)
	require.ErrorIs(t, f.Liveliness("sc-00000000", LivelinessPing), ErrNotFound)
	require.NoError(t, f.Liveliness(inst.ID, LivelinessPing))
	require.NoError(t, f.Liveliness(inst.ID, LivelinessDisconnect))
	requireGone(t, inst.PID)
	require.Eventually(t, func() bool { return len(f.Instances()) == 0 }, waitFor, 5*time.Millisecond)
	exits.none(t, 100*time.Millisecond)
}

func TestLivelinessOfNativeInstance(t *testing.T) {
	t.Parallel()
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}})
	inst, err := f.StartInstance(startCtx(t), "p")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Equal(t, ProtocolNative, inst.Protocol)
	require.ErrorIs(t, f.Liveliness(inst.ID, LivelinessPing), ErrBadLiveliness)
	h, upstream, err := f.Endpoint(inst.ID)
	require.NoError(t, err)
	require.Nil(t, h)
	require.Equal(t, "ws://"+inst.Addr+"/", upstream)
}

func ids(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, inst := range insts {
		out[i] = inst.ID
	}
	return out
}

func TestModelNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "models", "m1"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "models", "sub", "m2"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "models", "file"), nil, 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "secret"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(dir, "secret"), filepath.Join(dir, "models", "abs-link")))
	require.NoError(t, os.Symlink("../secret", filepath.Join(dir, "models", "rel-link")))
	require.NoError(t, os.Symlink("m1", filepath.Join(dir, "models", "inner-link")))
	f := newTestFarm(t, Config{Slots: 1, ModelsDir: filepath.Join(dir, "models")})

	for _, good := range []string{"m1", "sub/m2", "sub", "inner-link"} {
		got, err := f.resolveModel(good)
		require.NoError(t, err, good)
		require.Equal(t, filepath.Join(dir, "models", good), got)
	}
	for _, bad := range []string{
		"", "..", "../x", "/etc", "a/../../b", "a/../b", "./m1", "m1/", "sub//m2", `sub\m2`,
		"m1\x00", "m1\n", "missing", "file", "abs-link", "rel-link", "../secret",
	} {
		_, err := f.resolveModel(bad)
		require.ErrorIs(t, err, ErrBadModel, "%q", bad)
	}

	nomodels := newTestFarm(t, Config{Slots: 1})
	_, err := nomodels.resolveModel("m1")
	require.ErrorIs(t, err, ErrBadModel)
}

func TestStartWithModel(t *testing.T) {
	t.Parallel()
	models := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(models, "gear"), 0o755))
	p := childPool("view", "listen", "MODEL={{.Model}}", "MODEL_DIRS={{.ModelDirs}}")
	f := newTestFarm(t, Config{Slots: 1, ModelsDir: models, Pools: []PoolSpec{p}})

	for _, bad := range []string{"../x", "/etc", "a/../../b"} {
		_, err := f.StartInstanceWith(startCtx(t), "view", StartOptions{Model: bad})
		require.ErrorIs(t, err, ErrBadModel, bad)
	}
	inst, err := f.StartInstanceWith(startCtx(t), "view", StartOptions{Model: "gear"})
	require.NoError(t, err, "refused models took no slot")
	killOnCleanup(t, inst.PID)
	require.Equal(t, "gear", ask(t, inst.Addr, "env MODEL"))
	require.Equal(t, filepath.Join(models, "gear"), ask(t, inst.Addr, "env MODEL_DIRS"))
	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))

	inst, err = f.StartInstance(startCtx(t), "view")
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Equal(t, models, ask(t, inst.Addr, "env MODEL_DIRS"), "without a model: the models directory")
}

// zipEntry is one entry of a test archive.
type zipEntry struct {
	name string
	mode fs.FileMode
	body []byte
}

func writeZip(t *testing.T, path string, entries ...zipEntry) {
	t.Helper()
	fh, err := os.Create(path)
	require.NoError(t, err)
	zw := zip.NewWriter(fh)
	for _, e := range entries {
		hdr := &zip.FileHeader{Name: e.name, Method: zip.Store}
		hdr.SetMode(e.mode)
		w, err := zw.CreateHeader(hdr)
		require.NoError(t, err)
		_, err = w.Write(e.body)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, fh.Close())
}

func TestBinaries(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	body, err := os.ReadFile(exe)
	require.NoError(t, err)
	dir := t.TempDir()
	archive := filepath.Join(dir, "bin.zip")
	writeZip(t, archive,
		zipEntry{name: "app/", mode: fs.ModeDir | 0o755},
		zipEntry{name: "app/bin/child", mode: 0o755, body: body},
		zipEntry{name: "app/share/readme.txt", mode: 0o644, body: []byte("hi")},
	)
	p := childPool("tool", "listen")
	p.Command = "app/bin/child"
	p.Binaries = archive
	state := filepath.Join(dir, "state")

	f := newTestFarm(t, Config{Slots: 2, StateDir: state, Pools: []PoolSpec{p}})
	binDir := f.pools["tool"].binDir
	require.Equal(t, filepath.Join(state, "binaries"), filepath.Dir(binDir))
	fi, err := os.Stat(filepath.Join(binDir, "app/bin/child"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o755), fi.Mode().Perm())
	fi, err = os.Stat(filepath.Join(binDir, "app/share/readme.txt"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())

	for range 2 {
		inst, err := f.StartInstance(startCtx(t), "tool")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)
		exePath, err := os.Readlink("/proc/" + strconv.Itoa(inst.PID) + "/exe")
		require.NoError(t, err)
		require.Equal(t, filepath.Join(binDir, "app/bin/child"), exePath)
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(inst.PID) + "/cwd")
		require.NoError(t, err)
		require.Equal(t, binDir, cwd)
	}

	// Unpacked once: a farm started again with the same state directory
	// and archive uses the directory as it is.
	marker := filepath.Join(binDir, "marker")
	require.NoError(t, os.WriteFile(marker, nil, 0o644))
	again := newTestFarm(t, Config{Slots: 1, StateDir: state, Pools: []PoolSpec{p}})
	require.Equal(t, binDir, again.pools["tool"].binDir)
	require.FileExists(t, marker)
	entries, err := os.ReadDir(filepath.Join(state, "binaries"))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no leftovers of unpacking")

	// Without a state directory the binaries live as long as the farm.
	temp, err := New(Config{Slots: 1, Pools: []PoolSpec{p}})
	require.NoError(t, err)
	tempDir := temp.pools["tool"].binDir
	require.FileExists(t, filepath.Join(tempDir, "app/share/readme.txt"))
	require.NoError(t, temp.Close(startCtx(t)))
	require.NoDirExists(t, tempDir)
}

func TestBinariesUnsafe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		entry zipEntry
	}{
		{"parent", zipEntry{name: "../evil", mode: 0o644}},
		{"deep parent", zipEntry{name: "a/../../evil", mode: 0o644}},
		{"absolute", zipEntry{name: "/tmp/evil", mode: 0o644}},
		{"dot path", zipEntry{name: "a/./evil", mode: 0o644}},
		{"backslash", zipEntry{name: `..\evil`, mode: 0o644}},
		{"symlink", zipEntry{name: "link", mode: fs.ModeSymlink | 0o777, body: []byte("/etc")}},
		{"device", zipEntry{name: "dev", mode: fs.ModeDevice | 0o644}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			work := filepath.Join(dir, "work")
			require.NoError(t, os.Mkdir(work, 0o755))
			archive := filepath.Join(work, "bin.zip")
			writeZip(t, archive, zipEntry{name: "ok", mode: 0o644, body: []byte("fine")}, tt.entry)
			p := childPool("tool", "listen")
			p.Binaries = archive
			state := filepath.Join(work, "state")
			_, err := New(Config{Slots: 1, StateDir: state, Pools: []PoolSpec{p}})
			require.ErrorIs(t, err, errUnsafeArchive)
			require.NoFileExists(t, filepath.Join(dir, "evil"))
			require.NoFileExists(t, filepath.Join(work, "evil"))
			entries, _ := os.ReadDir(filepath.Join(state, "binaries"))
			require.Empty(t, entries, "nothing unpacked")
		})
	}
}

func TestAdapterPoolValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"liveliness readiness on native", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Readiness: ReadinessLiveliness}}}, "for stream pools"},
		{"unknown readiness", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: ProtocolStream, Readiness: "vibes"}}}, "unknown readiness"},
		{"delimiter on dial", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: ProtocolDial, Delimiter: "END"}}}, "delimiter"},
		{"negative idle gap", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: ProtocolStdio, IdleGap: -1}}}, "negative idle_gap"},
		{"stream ports short", Config{Slots: 3, PortMin: 20000, PortMax: 20001,
			Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: ProtocolStream}}}, "one port per slot"},
		{"stream and native ports short", Config{Slots: 2, PortMin: 20000, PortMax: 20001,
			Pools: []PoolSpec{{Name: "p", Command: "x", Protocol: ProtocolStream}, {Name: "q", Command: "x"}}}, "one port per slot"},
		{"models dir missing", Config{ModelsDir: "/nonexistent/models"}, "models directory"},
		{"binaries missing", Config{Pools: []PoolSpec{{Name: "p", Command: "x", Binaries: "/nonexistent.zip"}}}, "binaries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// logBuffer is a log sink a test can read while the logger writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
