package drover_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/worker/viewer"
)

const cubeOBJ = `o cube
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
v 1 0 1
v 1 1 1
v 0 1 1
f 1 4 3 2
f 5 6 7 8
f 1 2 6 5
f 2 3 7 6
f 3 4 8 7
f 4 1 5 8
`

// streamStack is drover with conversions and a viewer pool of reference
// viewer processes, as many stream slots as slots.
type streamStack struct {
	srv      *drover.Server
	h        hoops
	sessions string // the farm's session directories
}

func startStreamStack(t *testing.T, slots int, initialUse time.Duration) *streamStack {
	t.Helper()
	needConverters(t)
	sessions := t.TempDir()
	cache, err := modelcache.Open(modelcache.Config{Dir: t.TempDir(), MaxBytes: 64 * modelcache.MB})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cache.Close()) }) // after the server's stop
	srv := start(t, drover.Config{
		Pools: []drover.Pool{
			{Pool: manager.Pool{Name: "default"}, PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})},
			{Pool: manager.Pool{Name: "viewer"}, PoolSpec: child("viewer", farm.PoolSpec{Protocol: farm.ProtocolStream,
				Env: []string{"VIEWER_MODELS={{.ModelDirs}}"}, InitialUse: initialUse})},
		},
		Farm:       farm.Config{Slots: slots, SessionsDir: sessions, Cache: cache},
		Conversion: &drover.Conversion{DataDir: t.TempDir(), JobSlots: 1},
	})
	return &streamStack{srv: srv, h: hoops{t: t, base: "http://" + srv.Addr().String()}, sessions: sessions}
}

type streamSession struct {
	ServerURL string `json:"serverurl"`
	Port      int    `json:"port"`
	SessionID string `json:"sessionid"`
}

func (st *streamStack) open(t *testing.T, arg string) (int, streamSession, map[string]string) {
	t.Helper()
	code, b := st.h.call(http.MethodGet, "/api/streamingSession", arg, nil, "")
	var s streamSession
	var e map[string]string
	if code == http.StatusOK {
		require.NoError(t, json.Unmarshal(b, &s), "%s", b)
	} else {
		require.NoError(t, json.Unmarshal(b, &e), "%s", b)
	}
	return code, s, e
}

// access calls enableStreamAccess with the header key (items or
// itemnames) set to value.
func (st *streamStack) access(t *testing.T, prefix, session, key, value string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, st.h.base+prefix+"/enableStreamAccess/"+session, nil)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set(key, value)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func (st *streamStack) dirs(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(st.sessions)
	require.NoError(t, err)
	var out []string
	for _, de := range des {
		if de.IsDir() {
			out = append(out, filepath.Join(st.sessions, de.Name()))
		}
	}
	return out
}

func (st *streamStack) viewers() []farm.Instance {
	var out []farm.Instance
	for _, in := range st.srv.Farm().Instances() {
		if in.Pool == "viewer" {
			out = append(out, in)
		}
	}
	return out
}

// dialViewer opens a viewer's WebSocket as the HOOPS client does:
// ws://serverurl:port?token=sessionid.
func dialViewer(t *testing.T, s streamSession) *websocket.Conn {
	t.Helper()
	u := "ws://" + net.JoinHostPort(s.ServerURL, strconv.Itoa(s.Port)) + "/?token=" + s.SessionID
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if resp != nil {
		resp.Body.Close()
	}
	require.NoError(t, err)
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(30*time.Second)))
	return ws
}

func readViewer(t *testing.T, ws *websocket.Conn) viewer.Reply {
	t.Helper()
	typ, data, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, websocket.TextMessage, typ)
	var r viewer.Reply
	require.NoError(t, json.Unmarshal(data, &r))
	return r
}

func getModel(t *testing.T, ws *websocket.Conn, name string) []byte {
	t.Helper()
	require.NoError(t, ws.WriteJSON(viewer.Request{Type: viewer.TypeGet, Name: name}))
	h := readViewer(t, ws)
	require.Equal(t, viewer.TypeModel, h.Type, "error: %s", h.Error)
	var got []byte
	for int64(len(got)) < h.Size {
		typ, data, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, websocket.BinaryMessage, typ)
		got = append(got, data...)
	}
	require.Equal(t, viewer.TypeEnd, readViewer(t, ws).Type)
	return got
}

// TestStreamingSession is issue 11's must-show: an OBJ converted by the
// real converter, a streaming session, stream access for the item, and a
// viewer WebSocket with ?token= that gets exactly the item's GLB from the
// reference viewer instance through the relay. With every stream slot
// busy the answer is "No free streaming slot"; a session's directory goes
// when its instance exits.
func TestStreamingSession(t *testing.T) {
	st := startStreamStack(t, 2, 30*time.Second)
	h := st.h

	up := h.upload("/api", `{"waitUntilConversionDone":true}`, "cube.obj", cubeOBJ)
	require.Equal(t, "SUCCESS", up["conversionState"], up["detailedError"])
	id := up["itemid"]
	code, glb := h.call(http.MethodGet, "/api/file/"+id+"/glb", "", nil, "")
	require.Equal(t, http.StatusOK, code)
	require.Greater(t, len(glb), 100)

	// A session: the answer says where the viewer connects.
	code, a, _ := st.open(t, `{"renderType":"client"}`)
	require.Equal(t, http.StatusOK, code)
	host, port, err := net.SplitHostPort(st.srv.Addr().String())
	require.NoError(t, err)
	require.Equal(t, host, a.ServerURL)
	require.Equal(t, port, strconv.Itoa(a.Port))
	require.NotEmpty(t, a.SessionID)
	dirs := st.dirs(t)
	require.Len(t, dirs, 1, "the session's model directory on the farm")
	aDir := dirs[0]
	require.Empty(t, entriesOf(t, aDir))

	// Stream access for the item: its files appear, read-only.
	cache := st.srv.Farm().Cache()
	before := cache.Stats()
	code, out := st.access(t, "/api", a.SessionID, "items", `["`+id+`"]`)
	require.Equal(t, http.StatusOK, code, "%v", out)
	first := cache.Stats()
	require.Equal(t, before.Hits, first.Hits, "the first session of the model fetches it")
	require.Greater(t, first.Misses, before.Misses)
	require.Equal(t, true, out["success"])
	require.Contains(t, entriesOf(t, aDir), "cube.obj.glb")
	fi, err := os.Stat(filepath.Join(aDir, "cube.obj.glb"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o444), fi.Mode().Perm())
	fi, err = os.Stat(aDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o555), fi.Mode().Perm())

	// The viewer asks for the model by the item's name and gets its GLB,
	// byte for byte.
	ws := dialViewer(t, a)
	require.NoError(t, ws.WriteJSON(viewer.Request{Type: viewer.TypeList}))
	require.Contains(t, readViewer(t, ws).Models, "cube.obj")
	got := getModel(t, ws, "cube.obj")
	require.True(t, bytes.Equal(glb, got), "the viewer got %d bytes, the GLB has %d", len(got), len(glb))

	// One viewer per session.
	u := "ws://" + net.JoinHostPort(a.ServerURL, strconv.Itoa(a.Port)) + "/?token=" + a.SessionID
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	require.Error(t, err)
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	resp.Body.Close()

	// A second session, given its model at once by accessItems and then by
	// name; a third finds every slot busy.
	code, b, _ := st.open(t, `{"accessItems":["`+id+`"]}`)
	require.Equal(t, http.StatusOK, code)
	require.NotEqual(t, a.SessionID, b.SessionID)
	second := cache.Stats()
	require.Equal(t, first.Misses, second.Misses, "the second session of the model downloads nothing")
	require.Equal(t, first.Hits+(first.Misses-before.Misses), second.Hits, "every file of it is a cache hit")
	code, _, e := st.open(t, "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, map[string]string{"ERROR": "No free streaming slot"}, e)
	code, out = st.access(t, "/caas_api", b.SessionID, "itemnames", `["cube.obj"]`)
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Len(t, st.dirs(t), 2)

	// Bad calls get the original's errors and change nothing.
	for _, tc := range []struct {
		name, session, key, value string
		code                      int
		msg                       string
	}{
		{"unknown session", "nope", "items", `["` + id + `"]`, http.StatusNotFound, "No session found"},
		{"not JSON", b.SessionID, "items", `[`, http.StatusBadRequest, "Invalid Stream Access Tokens"},
		{"no header", b.SessionID, "", "", http.StatusBadRequest, "Invalid Stream Access Tokens"},
		{"unknown item", b.SessionID, "items", `["0123456789abcdef"]`, http.StatusNotFound, ""},
		{"unknown name", b.SessionID, "itemnames", `["gear.step"]`, http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := st.access(t, "/api", tc.session, tc.key, tc.value)
			require.Equal(t, tc.code, code, "%v", out)
			require.NotEmpty(t, out["ERROR"])
			if tc.msg != "" {
				require.Equal(t, tc.msg, out["ERROR"])
			}
		})
	}

	// No session key in /status.
	_, status := h.call(http.MethodGet, "/status", "", nil, "")
	require.NotContains(t, string(status), a.SessionID)
	require.NotContains(t, string(status), b.SessionID)

	// The viewer leaves: its session ends and its directory goes.
	require.NoError(t, ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)))
	_, _, _ = ws.ReadMessage()
	require.NoError(t, ws.Close())
	require.Eventually(t, func() bool {
		_, err := os.Stat(aDir)
		return os.IsNotExist(err)
	}, 20*time.Second, 20*time.Millisecond, "the directory of the ended session is removed")

	// b's instance exits (killed): its session ends, its directory goes,
	// and its token opens nothing.
	vs := st.viewers()
	require.Len(t, vs, 1)
	require.NoError(t, syscall.Kill(vs[0].PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return len(st.dirs(t)) == 0 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		code, _ := st.access(t, "/api", b.SessionID, "items", `["`+id+`"]`)
		return code == http.StatusNotFound
	}, 20*time.Second, 20*time.Millisecond, "the session ended with its instance")
	u = "ws://" + net.JoinHostPort(b.ServerURL, strconv.Itoa(b.Port)) + "/?token=" + b.SessionID
	_, resp, err = websocket.DefaultDialer.Dial(u, nil)
	require.Error(t, err)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp.Body.Close()

	// The slots are free again.
	code, c, _ := st.open(t, "")
	require.Equal(t, http.StatusOK, code)
	require.NotEmpty(t, c.SessionID)
}

// TestStreamingSessionInitialUse: a session no viewer connects to within
// its pool's initial-use time ends, and its directory goes.
func TestStreamingSessionInitialUse(t *testing.T) {
	st := startStreamStack(t, 1, 2*time.Second)
	code, s, _ := st.open(t, "")
	require.Equal(t, http.StatusOK, code)
	opened := time.Now()
	require.Len(t, st.dirs(t), 1)
	require.Eventually(t, func() bool { return len(st.dirs(t)) == 0 }, 30*time.Second, 20*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(opened), 2*time.Second-100*time.Millisecond, "not before the initial-use time")
	t.Logf("directory removed %s after the session opened", time.Since(opened).Round(time.Millisecond))
	require.Eventually(t, func() bool { return len(st.srv.Manager().Status().Sessions) == 0 },
		20*time.Second, 20*time.Millisecond, "the session ended with its instance")
	require.Empty(t, st.viewers())
	u := "ws://" + net.JoinHostPort(s.ServerURL, strconv.Itoa(s.Port)) + "/?token=" + s.SessionID
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	require.Error(t, err)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp.Body.Close()
}

func entriesOf(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err, fmt.Sprintf("read %s", dir))
	names := []string{}
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// A viewer of a local stream pool crosses one relay, the manager's, to the
// instance's own port, and the farm, which that relay does not pass, is
// told of the viewer: it does not stop the instance for want of one.
func TestStreamOneRelayHop(t *testing.T) {
	const initialUse = 300 * time.Millisecond
	srv := start(t, drover.Config{
		Farm: farm.Config{Slots: 1},
		Pools: []drover.Pool{{PoolSpec: child("stream", farm.PoolSpec{Name: "stream", Protocol: farm.ProtocolStream,
			InitialUse: initialUse})}},
	})
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(srv, "/stream?pool=stream"), nil)
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(30*time.Second)))
	hops := func() string {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("hops")))
		_, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		return string(msg)
	}
	require.Equal(t, "127.0.0.1", hops(), "X-Forwarded-For names one relay's client")

	// Three initial-use periods: a farm that saw no viewer would have
	// stopped the instance, and with it the connection.
	deadline := time.Now().Add(3 * initialUse)
	for time.Now().Before(deadline) {
		insts := srv.Farm().Instances()
		require.Len(t, insts, 1)
		require.Equal(t, farm.StateReady, insts[0].State)
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "127.0.0.1", hops(), "the connection outlived the initial-use time")
}
