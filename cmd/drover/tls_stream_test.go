package main

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/certtest"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/worker/viewer"
)

// A streaming session over mutual TLS everywhere: the farm leases the
// conversion job and fetches the model from the manager with its client
// certificate, and the viewer's wss reaches the farm's viewer through the
// manager's relay, which dials the farm over wss.
func TestClusterTLSStreamingSession(t *testing.T) {
	if _, err := exec.LookPath("assimp"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("assimp is not installed: scripts/setup.sh installs it")
		}
		t.Skip("assimp is not installed (scripts/setup.sh installs it)")
	}
	t.Parallel()
	managerCA, farmCA := certtest.NewCA(t, "drover test managers"), certtest.NewCA(t, "drover test farms")
	mcert, fcert, fclient := managerCA.Server(t), farmCA.Server(t), farmCA.Client(t, "farm-s")
	m := startDrover(t, "manager", nil, managerTLSBanner, "manager", "--addr", "127.0.0.1:0",
		"--farm-token", farmToken, "--admin-token", adminToken, "--data", t.TempDir(), "--log-level", "debug",
		"--tls-cert", mcert.CertFile, "--tls-key", mcert.KeyFile, "--farm-ca", farmCA.File)
	f := startDrover(t, "farm-s", nil, farmTLSBanner, "farm", "--manager", "https://"+m.base, "--token", farmToken,
		"--addr", "127.0.0.1:0", "--id", "farm-s", "--instances", "1", "--job-slots", "1", "--state-dir", t.TempDir(),
		"--log-level", "debug", "--tls-cert", fcert.CertFile, "--tls-key", fcert.KeyFile, "--manager-ca", managerCA.File,
		"--tls-client-cert", fclient.CertFile, "--tls-client-key", fclient.KeyFile)
	cfg := trusting(managerCA)
	require.Eventually(t, func() bool { return len(tlsStatus(t, m.base, cfg).Farms) == 1 }, 20*time.Second, 50*time.Millisecond)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 60 * time.Second}

	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", "cube.obj")
	require.NoError(t, err)
	_, _ = fw.Write([]byte(convtest.CubeOBJ()))
	require.NoError(t, w.Close())
	req, err := http.NewRequest(http.MethodPost, "https://"+m.base+"/api/upload", &buf)
	require.NoError(t, err)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("CS-API-Arg", `{"waitUntilConversionDone":true}`)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	var up struct {
		ItemID string `json:"itemid"`
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &up), "%s", body)

	resp, err = hc.Get("https://" + m.base + "/api/file/" + up.ItemID + "/glb")
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
	resp, err = hc.Get("https://" + m.base + "/caas_api/streamingSession")
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	resp.Body.Close()
	req, err = http.NewRequest(http.MethodPut, "https://"+m.base+"/caas_api/enableStreamAccess/"+s.SessionID, nil)
	require.NoError(t, err)
	req.Header.Set("items", `["`+up.ItemID+`"]`)
	resp, err = hc.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)

	d := &websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 20 * time.Second}
	ws, wresp, err := d.Dial("wss://"+net.JoinHostPort(s.ServerURL, strconv.Itoa(s.Port))+"?token="+s.SessionID, nil)
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
	requireNoSecrets(t, m, f)
}
