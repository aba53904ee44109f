package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/worker/viewer"
)

// TestClusterStreamingSession runs a streaming session across processes:
// drover manager, and drover farm with its default pools (the reference
// viewer among them) converting with the real converter. The farm fetches
// the item's files from the manager over the farm API, and the viewer's
// WebSocket reaches the farm's viewer process through both relays.
func TestClusterStreamingSession(t *testing.T) {
	if _, err := exec.LookPath("assimp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("assimp is not installed: scripts/setup.sh installs it")
		}
		t.Skip("assimp is not installed (scripts/setup.sh installs it)")
	}
	m := startManager(t)
	f := startFarm(t, m, "farm-s", 1, "--job-slots", "1")
	waitFarms(t, m, 20*time.Second, "farm-s")

	id := uploadFile(t, m.base, `{"waitUntilConversionDone":true}`, "cube.obj", []byte(convtest.CubeOBJ()))
	resp, err := http.Get("http://" + m.base + "/api/file/" + id + "/glb")
	require.NoError(t, err)
	glb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", glb)

	var s struct {
		ServerURL string `json:"serverurl"`
		Port      int    `json:"port"`
		SessionID string `json:"sessionid"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+m.base+"/caas_api/streamingSession", "", &s))
	var busy map[string]string
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, "http://"+m.base+"/caas_api/streamingSession", "", &busy))
	require.Equal(t, "No free streaming slot", busy["ERROR"])

	req, err := http.NewRequest(http.MethodPut, "http://"+m.base+"/caas_api/enableStreamAccess/"+s.SessionID, nil)
	require.NoError(t, err)
	req.Header.Set("items", `["`+id+`"]`)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)

	u := "ws://" + net.JoinHostPort(s.ServerURL, strconv.Itoa(s.Port)) + "?token=" + s.SessionID
	ws, wresp, err := websocket.DefaultDialer.Dial(u, nil)
	if wresp != nil {
		wresp.Body.Close()
	}
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(30*time.Second)))
	require.NoError(t, ws.WriteJSON(viewer.Request{Type: viewer.TypeGet, Name: "cube.obj"}))
	var h viewer.Reply
	_, msg, err := ws.ReadMessage()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(msg, &h))
	require.Equal(t, viewer.TypeModel, h.Type, "%s", msg)
	var got []byte
	for int64(len(got)) < h.Size {
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		got = append(got, data...)
	}
	require.True(t, bytes.Equal(glb, got), "the viewer got %d bytes, the GLB has %d", len(got), len(glb))

	// Neither the farm token nor the session's key is in a log line.
	requireNoSecrets(t, m, f)
	require.NotContains(t, m.out.String(), s.SessionID)
	require.NotContains(t, f.out.String(), s.SessionID)
}
