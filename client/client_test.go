package client_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/session"
)

// fakeManager greets, queues once, and answers every task with two
// results, a binary frame and done; task data "fail" gets an error.
func fakeManager(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(httpHandler(func(ws *websocket.Conn, pool string) {
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"queued","position":1}`))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"welcome","session":"s1","instance":"`+pool+`","resume":"tok"}`))
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f session.Frame
			require.NoError(t, session.Decode(b, &f))
			if f.Type == session.FrameLogout {
				_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
				return
			}
			if string(f.Data) == `"fail"` {
				_ = ws.WriteMessage(websocket.TextMessage, session.AppendError(nil, f.ID, "task_failed", "no"))
				continue
			}
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"event","event":"draining"}`))
			_ = ws.WriteMessage(websocket.TextMessage, session.AppendResult(nil, f.ID, f.Data))
			_ = ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2})
			_ = ws.WriteMessage(websocket.TextMessage, session.AppendResult(nil, f.ID, []byte(`2`)))
			_ = ws.WriteMessage(websocket.TextMessage, session.AppendDone(nil, f.ID))
		}
	}, &up))
	t.Cleanup(srv.Close)
	return srv
}

func TestSession(t *testing.T) {
	srv := fakeManager(t)
	var queued []int
	var events []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", client.Options{
		Pool:     "cad",
		OnQueued: func(p int) { queued = append(queued, p) },
		OnEvent:  func(name string, _ json.RawMessage) { events = append(events, name) },
	})
	require.NoError(t, err)
	require.Equal(t, "s1", s.ID)
	require.Equal(t, "cad", s.Instance, "the pool option reached the server")
	require.Equal(t, "tok", s.Resume)
	require.Equal(t, []int{1}, queued)

	res, err := s.Execute(ctx, json.RawMessage(`{"x":1}`))
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.JSONEq(t, `{"x":1}`, string(res[0].Data))
	require.Equal(t, []byte{1, 2}, res[1].Binary)
	require.Equal(t, []string{"draining"}, events)

	_, err = s.Execute(ctx, json.RawMessage(`"fail"`))
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "task_failed", ce.Code)

	_, err = s.Execute(ctx, json.RawMessage(`{bad`))
	require.Error(t, err)
	require.NoError(t, s.Logout())
}
