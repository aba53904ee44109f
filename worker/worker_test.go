package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/internal/lib/wsframe"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// msg is one frame as the manager sees it.
type msg struct {
	bin   []byte
	Type  string          `json:"type"`
	ID    json.RawMessage `json:"id"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func startWorker(t testing.TB, cfg Config) string {
	t.Helper()
	srv := httptest.NewServer(New(cfg).Handler())
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func dial(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}

func send(t testing.TB, ws *websocket.Conn, frame string) {
	t.Helper()
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(frame)))
}

func recv(t testing.TB, ws *websocket.Conn) msg {
	t.Helper()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
	typ, b, err := ws.ReadMessage()
	require.NoError(t, err)
	if typ == websocket.BinaryMessage {
		return msg{bin: b}
	}
	var m msg
	require.NoError(t, json.Unmarshal(b, &m), "frame %s", b)
	return m
}

// collect reads the frames of one task, up to its done or error frame.
func collect(t testing.TB, ws *websocket.Conn) []msg {
	t.Helper()
	var out []msg
	for {
		m := recv(t, ws)
		out = append(out, m)
		if m.Type == "done" || m.Type == "error" {
			return out
		}
	}
}

func runTask(t testing.TB, ws *websocket.Conn, id, data string) []msg {
	t.Helper()
	send(t, ws, `{"type":"task","id":`+id+`,"data":`+data+`}`)
	return collect(t, ws)
}

// results returns the result data of a task that ended with done.
func results(t testing.TB, id string, frames []msg) []string {
	t.Helper()
	last := frames[len(frames)-1]
	require.Equal(t, "done", last.Type, "task failed: %+v", last.Error)
	require.Equal(t, id, string(last.ID))
	out := []string{}
	for _, m := range frames[:len(frames)-1] {
		require.Equal(t, "result", m.Type)
		require.Equal(t, id, string(m.ID))
		out = append(out, string(m.Data))
	}
	return out
}

func requireError(t testing.TB, frames []msg, id, code string) string {
	t.Helper()
	require.Len(t, frames, 1)
	m := frames[0]
	require.Equal(t, "error", m.Type)
	require.Equal(t, id, string(m.ID))
	require.NotNil(t, m.Error)
	require.Equal(t, code, m.Error.Code)
	return m.Error.Message
}

func TestCommands(t *testing.T) {
	url := startWorker(t, Config{InstanceID: "inst-1"})
	ws := dial(t, url)

	tests := []struct {
		name    string
		data    string
		want    []string
		code    string // an error frame instead of results
		message string
	}{
		{name: "echo", data: `{"command":"echo","x":1}`, want: []string{`{"command":"echo","x":1}`}},
		{
			name: "echo keeps bytes",
			data: `{ "x" : [1, 2.5e3, {"y":"\u00e9\"}"}], "command" : "echo" ,"z":null}`,
			want: []string{`{ "x" : [1, 2.5e3, {"y":"\u00e9\"}"}], "command" : "echo" ,"z":null}`},
		},
		{name: "sleep", data: `{"command":"sleep","ms":5}`, want: []string{`{"slept":5}`}},
		{name: "sleep without ms", data: `{"command":"sleep"}`, want: []string{`{"slept":0}`}},
		{name: "pid", data: `{"command":"pid"}`, want: []string{fmt.Sprintf(`{"pid":%d,"instance":"inst-1"}`, os.Getpid())}},
		{name: "results", data: `{"command":"results","n":3}`, want: []string{`{"i":0}`, `{"i":1}`, `{"i":2}`}},
		{name: "no results", data: `{"command":"results","n":0}`, want: []string{}},
		{name: "get unset", data: `{"command":"get","key":"never set"}`, want: []string{`{"key":"never set","value":null}`}},
		{name: "reset empty", data: `{"command":"reset"}`, want: []string{`{"cleared":0}`}},
		{name: "fail", data: `{"command":"fail"}`, code: "task_failed", message: "failed on request"},
		{name: "unknown command", data: `{"command":"nope"}`, code: "bad_request", message: `unknown command "nope"`},
		{name: "escaped command", data: `{"command":"\u0065cho"}`, want: []string{`{"command":"\u0065cho"}`}},
		{name: "escaped member name", data: `{"comm\u0061nd":"echo"}`, want: []string{`{"comm\u0061nd":"echo"}`}},
		{name: "last command wins", data: `{"command":"echo","command":"fail"}`, code: "task_failed"},
		{name: "last command not a string", data: `{"command":"echo","command":null}`, code: "bad_request"},
		{name: "long command", data: `{"command":"echo-with-a-long-name"}`, code: "bad_request", message: `unknown command "echo-with-a-long-name"`},
		{name: "data not an object", data: `[1]`, code: "bad_request"},
		{name: "data a string", data: `"echo"`, code: "bad_request"},
		{name: "no command", data: `{"x":1}`, code: "bad_request"},
		{name: "command not a string", data: `{"command":1}`, code: "bad_request"},
		{name: "sleep bad ms", data: `{"command":"sleep","ms":"x"}`, code: "bad_request"},
		{name: "sleep negative", data: `{"command":"sleep","ms":-1}`, code: "bad_request"},
		{name: "results negative", data: `{"command":"results","n":-1}`, code: "bad_request"},
		{name: "stream negative", data: `{"command":"stream","bytes":-1}`, code: "bad_request"},
		{name: "set without value", data: `{"command":"set","key":"k"}`, code: "bad_request"},
		{name: "set without key", data: `{"command":"set","value":1}`, code: "bad_request"},
		{name: "get key not a string", data: `{"command":"get","key":1}`, code: "bad_request"},
		{name: "crash bad code", data: `{"command":"crash","code":"x"}`, code: "bad_request"},
		{name: "model without a directory", data: `{"command":"model"}`, code: "task_failed",
			message: "the worker was started without a model directory"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := strconv.Itoa(i)
			frames := runTask(t, ws, id, tt.data)
			if tt.code != "" {
				message := requireError(t, frames, id, tt.code)
				if tt.message != "" {
					require.Equal(t, tt.message, message)
				}
				return
			}
			require.Equal(t, tt.want, results(t, id, frames))
		})
	}
}

func TestModel(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "part.step"), []byte("ISO-10303-21;"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	ws := dial(t, startWorker(t, Config{ModelDir: dir}))
	frames := runTask(t, ws, "1", `{"command":"model"}`)
	want := fmt.Sprintf(`{"dir":%q,"files":[{"name":"part.step","size":13}]}`, dir)
	require.Equal(t, []string{want}, results(t, "1", frames), "regular files only")

	ws = dial(t, startWorker(t, Config{ModelDir: filepath.Join(dir, "missing")}))
	require.Contains(t, requireError(t, runTask(t, ws, "1", `{"command":"model"}`), "1", "task_failed"),
		"read the model directory")
}

func TestIDsEchoedVerbatim(t *testing.T) {
	ws := dial(t, startWorker(t, Config{}))
	for _, id := range []string{`0`, `-12.5e3`, `"abc"`, `"with \"quotes\" and \u00e9"`, `""`} {
		t.Run(id, func(t *testing.T) {
			frames := runTask(t, ws, id, `{"command":"results","n":2}`)
			require.Equal(t, []string{`{"i":0}`, `{"i":1}`}, results(t, id, frames))
			requireError(t, runTask(t, ws, id, `{"command":"fail"}`), id, "task_failed")
		})
	}
}

func TestStateSharedAcrossConnections(t *testing.T) {
	url := startWorker(t, Config{})
	a, b := dial(t, url), dial(t, url)

	steps := []struct {
		conn *websocket.Conn
		data string
		want string
	}{
		{a, `{"command":"get","key":"k"}`, `{"key":"k","value":null}`},
		{a, `{"command":"set","key":"k","value":{"n":[1,2]}}`, `{"ok":true}`},
		{b, `{"command":"get","key":"k"}`, `{"key":"k","value":{"n":[1,2]}}`},
		{b, `{"command":"set","key":"k","value":"second"}`, `{"ok":true}`},
		{a, `{"command":"get","key":"k"}`, `{"key":"k","value":"second"}`},
		{a, `{"command":"set","key":"k","value":null}`, `{"ok":true}`},
		{b, `{"command":"get","key":"k"}`, `{"key":"k","value":null}`},
		{a, `{"command":"set","key":"é\"<","value":true}`, `{"ok":true}`},
		{b, `{"command":"get","key":"é\"<"}`, `{"key":"é\"\u003c","value":true}`},
	}
	for i, s := range steps {
		frames := runTask(t, s.conn, "1", s.data)
		require.Equal(t, []string{s.want}, results(t, "1", frames), "step %d", i)
	}

	// Another Worker is another process: it has its own state.
	other := dial(t, startWorker(t, Config{}))
	frames := runTask(t, other, "1", `{"command":"get","key":"é\"<"}`)
	require.Equal(t, []string{`{"key":"é\"\u003c","value":null}`}, results(t, "1", frames))
}

// TestReset checks the command a reuse pool sends between sessions: it
// empties the state of every connection of the process, and its answer comes
// only once the state is empty, so a task sent after it, even pipelined
// before the answer arrived, finds nothing.
func TestReset(t *testing.T) {
	url := startWorker(t, Config{})
	a, b := dial(t, url), dial(t, url)

	for i, kv := range []string{`"x","value":1`, `"y","value":{"deep":[1]}`, `"x","value":2`} {
		frames := runTask(t, a, strconv.Itoa(i), `{"command":"set","key":`+kv+`}`)
		require.Equal(t, []string{`{"ok":true}`}, results(t, strconv.Itoa(i), frames))
	}
	// Another connection resets: the state is the process's, as a new
	// session's connection to a reused instance would find it.
	frames := runTask(t, b, `"r"`, `{"command":"reset"}`)
	require.Equal(t, []string{`{"cleared":2}`}, results(t, `"r"`, frames))
	for _, key := range []string{"x", "y"} {
		frames := runTask(t, a, "1", `{"command":"get","key":"`+key+`"}`)
		require.Equal(t, []string{`{"key":"` + key + `","value":null}`}, results(t, "1", frames))
	}

	t.Run("pipelined", func(t *testing.T) {
		send(t, a, `{"type":"task","id":1,"data":{"command":"set","key":"k","value":true}}`)
		send(t, a, `{"type":"task","id":2,"data":{"command":"reset","extra":"ignored"}}`)
		send(t, a, `{"type":"task","id":3,"data":{"command":"get","key":"k"}}`)
		require.Equal(t, []string{`{"ok":true}`}, results(t, "1", collect(t, a)))
		require.Equal(t, []string{`{"cleared":1}`}, results(t, "2", collect(t, a)))
		require.Equal(t, []string{`{"key":"k","value":null}`}, results(t, "3", collect(t, a)))
	})
	t.Run("twice", func(t *testing.T) {
		frames := runTask(t, a, "1", `{"command":"reset"}`)
		require.Equal(t, []string{`{"cleared":0}`}, results(t, "1", frames))
	})
}

func TestStream(t *testing.T) {
	ws := dial(t, startWorker(t, Config{}))
	tests := []struct {
		name  string
		data  string
		sizes []int
	}{
		{"empty", `{"command":"stream"}`, nil},
		{"small chunks", `{"command":"stream","bytes":10,"chunk":3}`, []int{3, 3, 3, 1}},
		{"default chunk", `{"command":"stream","bytes":131077}`, []int{65536, 65536, 5}},
		{"exact chunks", `{"command":"stream","bytes":512,"chunk":256}`, []int{256, 256}},
		{"large chunks", `{"command":"stream","bytes":200000,"chunk":150001}`, []int{150001, 49999}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames := runTask(t, ws, `"s"`, tt.data)
			last := frames[len(frames)-1]
			require.Equal(t, "done", last.Type)
			require.Equal(t, `"s"`, string(last.ID))
			var sizes []int
			var all []byte
			for _, m := range frames[:len(frames)-1] {
				require.NotNil(t, m.bin, "a binary frame")
				sizes = append(sizes, len(m.bin))
				all = append(all, m.bin...)
			}
			require.Equal(t, tt.sizes, sizes)
			for i, c := range all {
				if c != byte(i) {
					require.Failf(t, "wrong content", "byte %d is %d", i, c)
				}
			}
		})
	}
}

func TestStreamSize(t *testing.T) {
	tests := []struct {
		n, chunk         int64
		wantN, wantChunk int64
		wantOK           bool
	}{
		{0, 0, 0, defaultChunk, true},
		{10, 3, 10, 3, true},
		{2 << 30, 0, 1 << 30, defaultChunk, true},
		{100, 1 << 40, 100, maxChunk, true},
		{-1, 0, 0, 0, false},
		{1, -1, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n, "/", tt.chunk), func(t *testing.T) {
			n, chunk, ok := streamSize(tt.n, tt.chunk)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				require.Equal(t, tt.wantN, n)
				require.Equal(t, tt.wantChunk, chunk)
			}
		})
	}
}

func TestTasksInOrder(t *testing.T) {
	ws := dial(t, startWorker(t, Config{}))
	// All sent before any answer: the echo arrives while the sleep runs.
	tasks := []string{
		`{"type":"task","id":1,"data":{"command":"sleep","ms":50}}`,
		`{"type":"task","id":2,"data":{"command":"echo"}}`,
		`{"type":"task","id":3,"data":{"command":"results","n":2}}`,
		`{"type":"task","id":4,"data":{"command":"sleep","ms":1}}`,
		`{"type":"task","id":5,"data":{"command":"stream","bytes":5,"chunk":2}}`,
		`{"type":"task","id":6,"data":{"command":"fail"}}`,
		`{"type":"task","id":7,"data":{"command":"echo"}}`,
	}
	for _, task := range tasks {
		send(t, ws, task)
	}
	want := []string{
		"result 1", "done 1",
		"result 2", "done 2",
		"result 3", "result 3", "done 3",
		"result 4", "done 4",
		"binary", "binary", "binary", "done 5",
		"error 6",
		"result 7", "done 7",
	}
	var got []string
	for range want {
		m := recv(t, ws)
		if m.bin != nil {
			got = append(got, "binary")
			continue
		}
		got = append(got, m.Type+" "+string(m.ID))
	}
	require.Equal(t, want, got)
}

func TestBadFrames(t *testing.T) {
	ws := dial(t, startWorker(t, Config{}))
	tests := []struct {
		name   string
		binary bool
		frame  string
		id     string
	}{
		{name: "not json", frame: `hello`, id: "null"},
		{name: "truncated", frame: `{"type":"task","id":1,"data":{`, id: "null"},
		{name: "no type", frame: `{"id":1}`, id: "null"},
		{name: "invalid utf8", frame: "{\"type\":\"task\",\"id\":\"\xff\",\"data\":{}}", id: "null"},
		{name: "bad id", frame: `{"type":"task","id":[1],"data":{"command":"echo"}}`, id: "null"},
		{name: "task without id", frame: `{"type":"task","data":{"command":"echo"}}`, id: "null"},
		{name: "task without data", frame: `{"type":"task","id":7}`, id: "7"},
		{name: "result from manager", frame: `{"type":"result","id":3,"data":1}`, id: "3"},
		{name: "unknown type", frame: `{"type":"bogus","id":"x"}`, id: `"x"`},
		{name: "binary frame", binary: true, frame: "\x00\x01\x02", id: "null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := websocket.TextMessage
			if tt.binary {
				typ = websocket.BinaryMessage
			}
			require.NoError(t, ws.WriteMessage(typ, []byte(tt.frame)))
			requireError(t, collect(t, ws), tt.id, "bad_request")

			// The connection is still served.
			frames := runTask(t, ws, "1", `{"command":"echo"}`)
			require.Equal(t, []string{`{"command":"echo"}`}, results(t, "1", frames))
		})
	}
}

func TestOversizedMessageEndsConnection(t *testing.T) {
	url := startWorker(t, Config{})
	ws := dial(t, url)
	// The write may fail as the worker drops the connection mid-message.
	_ = ws.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte{' '}, maxMessageSize+1))
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, _, err := ws.ReadMessage()
	require.Error(t, err)
	var netErr net.Error
	require.False(t, errors.As(err, &netErr) && netErr.Timeout(), "connection still open: %v", err)

	// The worker itself is still up.
	frames := runTask(t, dial(t, url), "1", `{"command":"echo"}`)
	require.Equal(t, []string{`{"command":"echo"}`}, results(t, "1", frames))
}

func TestCrash(t *testing.T) {
	tests := []struct {
		name string
		data string
		code int
	}{
		{"given code", `{"command":"crash","code":3}`, 3},
		{"default code", `{"command":"crash"}`, 1},
		{"zero code", `{"command":"crash","code":0}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exits := make(chan int, 1)
			url := startWorker(t, Config{Exit: func(code int) { exits <- code }})
			ws, other := dial(t, url), dial(t, url)

			send(t, ws, `{"type":"task","id":1,"data":`+tt.data+`}`)
			select {
			case code := <-exits:
				require.Equal(t, tt.code, code)
			case <-time.After(10 * time.Second):
				require.FailNow(t, "exit not called")
			}
			// The connection drops without an answer, as with a real crash.
			require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
			_, b, err := ws.ReadMessage()
			require.Error(t, err, "got frame %s", b)
			require.False(t, websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway))

			frames := runTask(t, other, "2", `{"command":"echo"}`)
			require.Equal(t, []string{`{"command":"echo"}`}, results(t, "2", frames))
		})
	}
}

func TestSleepEndsWhenConnectionCloses(t *testing.T) {
	w := New(Config{})
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		defer close(returned)
		w.Handler().ServeHTTP(rw, r)
	}))
	defer srv.Close()

	ws := dial(t, "ws"+strings.TrimPrefix(srv.URL, "http"))
	send(t, ws, `{"type":"task","id":1,"data":{"command":"sleep","ms":3600000}}`)
	time.Sleep(50 * time.Millisecond) // let the sleep begin
	require.NoError(t, ws.Close())
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "sleep outlived its connection")
	}
}

func TestServeShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- New(Config{}).Serve(ctx, ln) }()

	url := "ws://" + ln.Addr().String() + "/any/path"
	idle, busy, streaming := dial(t, url), dial(t, url), dial(t, url)
	for _, ws := range []*websocket.Conn{idle, busy, streaming} {
		frames := runTask(t, ws, "1", `{"command":"echo"}`)
		require.Equal(t, []string{`{"command":"echo"}`}, results(t, "1", frames))
	}
	send(t, busy, `{"type":"task","id":2,"data":{"command":"sleep","ms":3600000}}`)
	send(t, streaming, `{"type":"task","id":2,"data":{"command":"stream","bytes":1073741824,"chunk":1024}}`)
	time.Sleep(50 * time.Millisecond) // let the tasks begin
	cancel()

	for name, ws := range map[string]*websocket.Conn{"idle": idle, "busy": busy, "streaming": streaming} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
			for {
				// The streaming client reads its chunks up to the close.
				typ, _, err := ws.ReadMessage()
				if err != nil {
					require.True(t, websocket.IsCloseError(err, websocket.CloseGoingAway), "err %v", err)
					return
				}
				require.Equal(t, websocket.BinaryMessage, typ)
			}
		})
	}
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Serve did not return")
	}
	_, _, err = websocket.DefaultDialer.Dial(url, nil)
	require.Error(t, err, "listener still open")
}

func TestServeListenerFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	err = New(Config{}).Serve(context.Background(), ln)
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestRun(t *testing.T) {
	t.Run("from environment", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		require.NoError(t, ln.Close())
		t.Setenv("DROVER_PORT", port)
		t.Setenv("DROVER_INSTANCE_ID", "env-inst")

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ran := make(chan error, 1)
		go func() { ran <- Run(ctx, Config{}) }()

		var ws *websocket.Conn
		require.Eventually(t, func() bool {
			c, resp, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+port, nil)
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			ws = c
			return true
		}, 5*time.Second, 10*time.Millisecond)
		defer ws.Close()
		frames := runTask(t, ws, "1", `{"command":"pid"}`)
		want := fmt.Sprintf(`{"pid":%d,"instance":"env-inst"}`, os.Getpid())
		require.Equal(t, []string{want}, results(t, "1", frames))

		cancel()
		require.NoError(t, <-ran)
	})
	t.Run("host and environment port", func(t *testing.T) {
		t.Setenv("DROVER_PORT", "8080")
		require.Equal(t, "0.0.0.0:8080", New(Config{Host: "0.0.0.0"}).addr)
		require.Equal(t, "127.0.0.1:8080", New(Config{}).addr)
		require.Equal(t, "127.0.0.1:9", New(Config{Addr: "127.0.0.1:9", Host: "0.0.0.0"}).addr)
	})
	t.Run("no address", func(t *testing.T) {
		t.Setenv("DROVER_PORT", "")
		require.ErrorIs(t, Run(context.Background(), Config{}), ErrNoAddr)
	})
	t.Run("bad address", func(t *testing.T) {
		require.Error(t, Run(context.Background(), Config{Addr: "256.0.0.1:x"}))
	})
}

// discard is a net.Conn that keeps only the last write, or with all set
// everything written.
type discard struct {
	net.Conn
	all  bool
	last []byte
}

func (d *discard) Write(b []byte) (int, error) {
	if !d.all {
		d.last = d.last[:0]
	}
	d.last = append(d.last, b...)
	return len(b), nil
}

func newTestConn(out *discard) *conn {
	return New(Config{}).newConn(context.Background(), out)
}

var echoTask = []byte(`{"type":"task","id":1,"data":{"command":"echo","payload":"0123456789abcdef"}}`)

func TestEchoPathDoesNotAllocate(t *testing.T) {
	out := &discard{}
	c := newTestConn(out)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.serve(wsframe.OpText, echoTask); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
	// The result and the done frame go out in one write.
	want := wsframe.AppendFrame(nil, wsframe.OpText,
		[]byte(`{"type":"result","id":1,"data":{"command":"echo","payload":"0123456789abcdef"}}`), nil)
	want = wsframe.AppendFrame(want, wsframe.OpText, []byte(`{"type":"done","id":1}`), nil)
	require.Equal(t, string(want), string(out.last))
}

// TestStreamWritesLargeChunksWhole checks that a chunk larger than the
// pattern table still goes out as one frame of the right content.
func TestStreamWritesLargeChunksWhole(t *testing.T) {
	out := &discard{all: true}
	c := newTestConn(out)
	require.NoError(t, c.writeChunk(7, 3*defaultChunk+5))
	hdr := wsframe.AppendHeader(nil, wsframe.OpBinary, 3*defaultChunk+5, nil)
	require.Equal(t, hdr, out.last[:len(hdr)])
	body := out.last[len(hdr):]
	require.Len(t, body, 3*defaultChunk+5)
	for i, b := range body {
		if b != byte(7+i) {
			require.Failf(t, "wrong content", "byte %d is %d", i, b)
		}
	}
}

// BenchmarkEchoRoundTrip is the direct-to-worker baseline: one client
// connection, one echo task and its result and done frames per iteration.
func BenchmarkEchoRoundTrip(b *testing.B) {
	ws := dial(b, startWorker(b, Config{}))
	frames := runTask(b, ws, "1", `{"command":"echo","payload":"0123456789abcdef"}`)
	require.Len(b, results(b, "1", frames), 1)
	require.NoError(b, ws.SetReadDeadline(time.Time{}))

	buf := make([]byte, bufSize)
	b.ReportAllocs()
	for b.Loop() {
		if err := ws.WriteMessage(websocket.TextMessage, echoTask); err != nil {
			b.Fatal(err)
		}
		for range 2 { // result, done
			_, r, err := ws.NextReader()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadAtLeast(r, buf, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEchoServe is the worker's own share of an echo: decode, dispatch
// and encode, without the network.
func BenchmarkEchoServe(b *testing.B) {
	c := newTestConn(&discard{})
	b.ReportAllocs()
	b.SetBytes(int64(len(echoTask)))
	for b.Loop() {
		if err := c.serve(wsframe.OpText, echoTask); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzMembers checks the object scanner behind command against
// encoding/json: same keys, same raw values, in order, and the same command.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"command":"echo"}`, `{"a":1,"command":"x"}`, ` { "a" : [1,{"b":"}"}] , "c":"\"" } `,
		`{"a":-1.5e3,"b":true,"c":null,"d":false}`, `{"a\"b":{"c":[[]]}}`, `[1]`, `{"a":`, `"x"`,
		`{"comm\u0061nd":"\u0065cho\n","command":1,"command":"x\\"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := members{b: data}
		var keys, vals [][]byte
		for range len(data) + 1 {
			k, v, ok := m.next()
			if !ok {
				break
			}
			keys, vals = append(keys, k), append(vals, v)
		}
		var buf [16]byte
		name, ok := command(data, &buf)
		if !json.Valid(data) || bytes.TrimLeft(data, " \t\r\n")[0] != '{' {
			return
		}

		dec := json.NewDecoder(bytes.NewReader(data))
		_, err := dec.Token()
		require.NoError(t, err)
		for i := 0; dec.More(); i++ {
			tok, err := dec.Token()
			require.NoError(t, err)
			var raw json.RawMessage
			require.NoError(t, dec.Decode(&raw))
			require.Less(t, i, len(keys), "member %d missed", i)
			var key string
			require.NoError(t, json.Unmarshal(append(append([]byte{'"'}, keys[i]...), '"'), &key))
			require.Equal(t, tok, key)
			require.Equal(t, string(raw), string(vals[i]))
		}

		var obj map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(data, &obj))
		v := obj["command"]
		if len(v) == 0 || v[0] != '"' {
			require.False(t, ok, "command %q", name)
			return
		}
		require.True(t, ok)
		var want string
		require.NoError(t, json.Unmarshal(v, &want))
		if len(want) <= len(buf) && !strings.ContainsFunc(want, func(r rune) bool { return r >= utf8.RuneSelf }) {
			require.Equal(t, want, string(name))
		}
	})
}
