package viewer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/worker/viewer"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		in   string
		want viewer.Request
		err  error
	}{
		{`{"type":"list"}`, viewer.Request{Type: "list"}, nil},
		{`{"type":"get","name":"cube"}`, viewer.Request{Type: "get", Name: "cube"}, nil},
		{`{"type":"get","name":"cube.glb","extra":[1]}`, viewer.Request{Type: "get", Name: "cube.glb"}, nil},
		{`{"type":"get","name":"a b ☃"}`, viewer.Request{Type: "get", Name: "a b ☃"}, nil},
		{`{"type":"get"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":"../etc/passwd"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":"a/b"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":".."}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":".hidden"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":"a\\b"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":"a\u0000b"}`, viewer.Request{}, viewer.ErrBadName},
		{`{"type":"get","name":7}`, viewer.Request{}, viewer.ErrBadRequest},
		{`{"type":"delete"}`, viewer.Request{}, viewer.ErrBadRequest},
		{`{}`, viewer.Request{}, viewer.ErrBadRequest},
		{`null`, viewer.Request{}, viewer.ErrBadRequest},
		{`[]`, viewer.Request{}, viewer.ErrBadRequest},
		{`{"type":`, viewer.Request{}, viewer.ErrBadRequest},
		{"\xff", viewer.Request{}, viewer.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := viewer.ParseRequest([]byte(tt.in))
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	_, err := viewer.ParseRequest(bytes.Repeat([]byte(" "), viewer.MaxRequest+1))
	require.ErrorIs(t, err, viewer.ErrBadRequest)
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"type":"list"}`, `{"type":"get","name":"cube"}`, `{"type":"get","name":"../x"}`,
		`{"type":"get","name":"a/b.glb"}`, `{"type":1}`, `nul`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := viewer.ParseRequest(data)
		if err != nil {
			return
		}
		switch r.Type {
		case viewer.TypeList:
		case viewer.TypeGet:
			// An accepted name stays in its directory.
			require.NoError(t, viewer.CheckName(r.Name))
			require.True(t, filepath.IsLocal(r.Name), "name %q", r.Name)
			require.Equal(t, r.Name, filepath.Base(r.Name))
		default:
			t.Fatalf("accepted type %q", r.Type)
		}
	})
}

// serve runs a viewer on dir; it returns its WebSocket URL.
func serve(t *testing.T, dir string) string {
	t.Helper()
	v, err := viewer.New(viewer.Config{Dir: dir})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "ws://" + ln.Addr().String() + "/"
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(20*time.Second)))
	return ws
}

func readReply(t *testing.T, ws *websocket.Conn) viewer.Reply {
	t.Helper()
	typ, data, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, websocket.TextMessage, typ, "a text frame, got %d bytes of binary", len(data))
	var r viewer.Reply
	require.NoError(t, json.Unmarshal(data, &r))
	return r
}

// Get fetches a model over ws as the protocol says: its header, binary
// frames of at most ChunkSize, the end frame.
func get(t *testing.T, ws *websocket.Conn, name string) []byte {
	t.Helper()
	require.NoError(t, ws.WriteJSON(viewer.Request{Type: viewer.TypeGet, Name: name}))
	h := readReply(t, ws)
	require.Equal(t, viewer.TypeModel, h.Type, "error: %s", h.Error)
	require.Equal(t, name, h.Name)
	var got []byte
	for int64(len(got)) < h.Size {
		typ, data, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, websocket.BinaryMessage, typ)
		require.LessOrEqual(t, len(data), viewer.ChunkSize)
		got = append(got, data...)
	}
	require.Equal(t, viewer.Reply{Type: viewer.TypeEnd, Name: name}, readReply(t, ws))
	return got
}

func TestViewer(t *testing.T) {
	dir := t.TempDir()
	small := []byte("glTF\x02\x00\x00\x00tiny")
	big := make([]byte, 2*viewer.ChunkSize+12345)
	_, _ = rand.Read(big)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cube.glb"), small, 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big.glb"), big, 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "empty.glb"), nil, 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a model"), 0o444))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.glb"), 0o755))
	outside := filepath.Join(t.TempDir(), "secret.glb")
	require.NoError(t, os.WriteFile(outside, []byte("secret"), 0o444))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "escape.glb")))

	ws := dial(t, serve(t, dir))

	require.NoError(t, ws.WriteJSON(viewer.Request{Type: viewer.TypeList}))
	require.Equal(t, viewer.Reply{Type: viewer.TypeList, Models: []string{"big", "cube", "empty"}}, readReply(t, ws))

	require.Equal(t, small, get(t, ws, "cube"))
	require.Equal(t, small, get(t, ws, "cube.glb"))
	require.True(t, bytes.Equal(big, get(t, ws, "big")), "the big model arrives byte for byte")
	require.Empty(t, get(t, ws, "empty"))

	bad := []struct {
		name string
		msg  []byte
		typ  int
	}{
		{"unknown model", []byte(`{"type":"get","name":"gear"}`), websocket.TextMessage},
		{"not a model", []byte(`{"type":"get","name":"notes.txt"}`), websocket.TextMessage},
		{"a directory", []byte(`{"type":"get","name":"sub"}`), websocket.TextMessage},
		{"a link out of the directory", []byte(`{"type":"get","name":"escape"}`), websocket.TextMessage},
		{"an escaping name", []byte(`{"type":"get","name":"../secret"}`), websocket.TextMessage},
		{"bad JSON", []byte(`{"type"`), websocket.TextMessage},
		{"a binary frame", []byte(`{"type":"list"}`), websocket.BinaryMessage},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			require.NoError(t, ws.WriteMessage(b.typ, b.msg))
			r := readReply(t, ws)
			require.Equal(t, viewer.TypeError, r.Type)
			require.NotEmpty(t, r.Error)
			require.NotContains(t, r.Error, dir, "no server path in an error")
		})
	}
	// The connection still serves after the errors.
	require.Equal(t, small, get(t, ws, "cube"))
}
