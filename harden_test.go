package drover_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/manager"
)

const hardenFarmToken = "farm-token-of-the-harden-test"

// Short limits, so that a slow client is cut off within the test.
var hardenLimits = manager.HTTPTimeouts{
	ReadHeader: 300 * time.Millisecond, Read: 300 * time.Millisecond, Write: 600 * time.Millisecond,
	Idle: 300 * time.Millisecond, Body: 300 * time.Millisecond, BodyMinBytes: 1024,
}

// startHardened runs a manager with a stdio pool behind the local farm's
// server, remote farms admitted, and conversions with a small upload
// limit and the default webhook policy; its HTTP limits are short.
func startHardened(t *testing.T) *drover.Server {
	t.Helper()
	return start(t, drover.Config{
		Farm: farm.Config{Slots: 2},
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "cat"}, PoolSpec: farm.PoolSpec{Command: catPath(t),
			Protocol: farm.ProtocolStdio, IdleGap: 50 * time.Millisecond}}},
		Manager: manager.Config{FarmToken: hardenFarmToken, MaxMessageSize: 1024, HTTP: hardenLimits},
		Conversion: &drover.Conversion{DataDir: t.TempDir(), JobSlots: -1, MaxUpload: 64 << 10,
			Webhook: webhook.Options{Secret: "s"}},
	})
}

// rawRequest sends head (request line and headers, without the blank
// line) and then body, which may be shorter than the Content-Length the
// head declares, and reads the response.
func rawRequest(t *testing.T, addr, head string, body []byte) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(conn, head+"\r\nHost: drover.test\r\n\r\n")
	require.NoError(t, err)
	_, _ = conn.Write(body) // the server may have answered and closed already
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// requirePlainBody fails if an error body holds an internal address or a
// Go error chain.
func requirePlainBody(t *testing.T, body string, forbidden ...string) {
	t.Helper()
	var fields map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &fields), body)
	for _, s := range append([]string{"127.0.0.1", "[::1]", "169.254", "dial tcp", "lookup ", "farm:", "conversion:", "webhook:"}, forbidden...) {
		require.NotContains(t, body, s)
	}
	for k, v := range fields {
		if k == "ERROR" || k == "message" {
			require.NotContains(t, v, ": ", "a Go error chain in %q", v)
		}
	}
}

func restLogin(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/login?pool=cat")
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct{ Status, ID string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, "permitted", r.Status)
	return r.ID
}

// leaseJob uploads a file and leases its conversion job as a farm would.
func leaseJob(t *testing.T, base string) farmapi.JobLease {
	t.Helper()
	h := hoops{t: t, base: base}
	h.upload("/api", "", "part.stl", "solid x\nendsolid x\n")
	body, err := json.Marshal(farmapi.LeaseRequest{Farm: "remote-farm", Max: 1, Slots: 1, WaitMS: 5000})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, base+farmapi.PathJobs+"/lease", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+hardenFarmToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var lr farmapi.LeaseResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&lr))
	require.Len(t, lr.Jobs, 1)
	return lr.Jobs[0]
}

// Over-limit bodies get 413 with a code and a plain sentence, in the
// format of the route's API, on every class of route that takes a body.
func TestBodyLimits(t *testing.T) {
	srv := startHardened(t)
	addr := srv.Addr().String()
	base := "http://" + addr
	rest := restLogin(t, base)
	job := leaseJob(t, base)
	auth := "\r\nAuthorization: Bearer " + hardenFarmToken

	tests := []struct {
		name     string
		head     string // request line and headers; the body declared at the end
		declared int
		want     string // a part of the body
	}{
		{"REST execute", "POST /execute/" + rest + " HTTP/1.1\r\nContent-Type: application/json", 1025, `"code":"too_large"`},
		{"farm registration", "POST " + farmapi.PathFarms + " HTTP/1.1\r\nContent-Type: application/json" + auth, 1<<20 + 1, `"code":"too_large"`},
		{"conversion upload", "POST /api/upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b", 64<<10 + 16<<20 + 1, `"ERROR":"the upload is larger than the server allows"`},
		{"conversion upload, caas prefix", "POST /caas_api/upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b", 64<<10 + 16<<20 + 1, `"ERROR"`},
		{"farm job output", "PUT " + farmapi.PathJobs + "/" + job.ID + "/output/part.glb HTTP/1.1\r\n" + farmapi.LeaseHeader + ": " + job.Token + auth, 64<<10 + 1, `"message":"the body is larger than the job API accepts"`},
		{"farm job lease", "POST " + farmapi.PathJobs + "/lease HTTP/1.1\r\nContent-Type: application/json" + auth, 1<<20 + 1, `"message"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := tt.head + fmt.Sprintf("\r\nContent-Length: %d", tt.declared)
			resp, body := rawRequest(t, addr, head, []byte(strings.Repeat("x", 512)))
			require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, body)
			require.Contains(t, body, tt.want)
			require.True(t, resp.Close, "the connection is closed after a 413")
			requirePlainBody(t, body, hardenFarmToken, job.Token)
		})
	}

	// A body streamed past the bound, without a declared length, too.
	resp, body := rawRequest(t, addr, "POST /execute/"+rest+" HTTP/1.1\r\nTransfer-Encoding: chunked",
		[]byte(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 2000, strings.Repeat("y", 2000))))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, body)
	require.Contains(t, body, `"too_large"`)
}

// A slowloris client, trickling its headers or its body, is cut off within
// about the server's timeouts.
func TestSlowlorisCutOff(t *testing.T) {
	srv := startHardened(t)
	addr := srv.Addr().String()
	rest := restLogin(t, "http://"+addr)
	tests := []struct{ name, head, piece string }{
		{"headers", "GET /status HTTP/1.1\r\nHost: x\r\n", "X-Slow: 1\r\n"},
		{"upload body", "POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 60000\r\n\r\n", "--"},
		{"execute body", "POST /execute/" + rest + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "{"},
		{"unread body", "POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n", "z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			stop := make(chan struct{})
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				if _, err := io.WriteString(conn, tt.head); err != nil {
					return
				}
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := io.WriteString(conn, tt.piece); err != nil {
							return
						}
					}
				}
			}()
			defer func() { close(stop); <-sent }()
			// The server closes the connection: reads end with EOF or a
			// reset, well before the generous bound.
			begin := time.Now()
			require.NoError(t, conn.SetReadDeadline(begin.Add(15*time.Second)))
			got, err := io.ReadAll(conn)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "still open after 15 s; read %q", got)
			require.Less(t, time.Since(begin), 10*time.Second)
			// What was answered before the cut names nothing internal.
			for _, f := range []string{"127.0.0.1", "dial tcp", "farm:", "conversion:", "httpguard"} {
				require.NotContains(t, string(got), f)
			}
		})
	}
}

// A WebSocket session lives on past the server's read, write and idle
// timeouts, through the public listener and the local farm's server.
func TestSessionOutlivesHTTPTimeouts(t *testing.T) {
	srv := startHardened(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, wsURL(srv, "/ws"), client.Options{Pool: "cat"})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Logout()) }()
	for i := range 2 {
		res, err := s.Execute(ctx, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)))
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(res[0].Data))
		if i == 0 {
			<-time.After(2 * hardenLimits.Write) // the condition under test: past every timeout
		}
	}
}

// A webhook URL in CS-API-Arg that points at loopback, link-local (the
// metadata service) or private addresses is refused at the request with
// 400 and a plain {"ERROR"} that names no address; nothing is created.
func TestWebhookRefusedAtRequest(t *testing.T) {
	srv := startHardened(t)
	base := "http://" + srv.Addr().String()
	h := hoops{t: t, base: base}
	for _, hook := range []string{
		"http://127.0.0.1:9/hook",
		"http://[::1]:9/hook",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.7/hook",
		"http://192.168.1.1/hook",
		"http://localhost:9/hook",
		"http://[::ffff:169.254.169.254]/",
		"gopher://127.0.0.1:6379/_",
		"http://user:pw@hooks.example.com/",
	} {
		t.Run(hook, func(t *testing.T) {
			arg, err := json.Marshal(map[string]string{"webhook": hook})
			require.NoError(t, err)
			code, b := h.call(http.MethodPut, "/api/create", string(arg), nil, "")
			require.Equal(t, http.StatusBadRequest, code, "%s", b)
			requirePlainBody(t, string(b), "10.0.0.7", "192.168", "localhost", "pw@")
			var e map[string]string
			require.NoError(t, json.Unmarshal(b, &e))
			require.Contains(t, e["ERROR"], "The webhook URL is not")
		})
	}
	var items struct{ ItemArray []json.RawMessage }
	require.Equal(t, http.StatusOK, h.json(http.MethodGet, "/api/items", "", &items))
	require.Empty(t, items.ItemArray)
}

// Error bodies of the farm API and REST are plain sentences.
func TestErrorBodiesArePlain(t *testing.T) {
	srv := startHardened(t)
	addr := srv.Addr().String()
	auth := "\r\nAuthorization: Bearer " + hardenFarmToken
	for _, tc := range []struct {
		name, head, body string
		status           int
	}{
		{"bad registration JSON", "POST " + farmapi.PathFarms + " HTTP/1.1\r\nContent-Type: application/json" + auth, `{"id": 5}`, http.StatusBadRequest},
		{"bad registration url", "POST " + farmapi.PathFarms + " HTTP/1.1\r\nContent-Type: application/json" + auth,
			`{"id":"f","url":"ftp://127.0.0.1:1/x","slots":1}`, http.StatusBadRequest},
		{"bad heartbeat", "POST " + farmapi.PathFarms + "/f/heartbeat HTTP/1.1\r\nContent-Type: application/json" + auth, `[`, http.StatusBadRequest},
		{"bad lease", "POST " + farmapi.PathJobs + "/lease HTTP/1.1\r\nContent-Type: application/json" + auth, `{"max":"x"}`, http.StatusBadRequest},
		{"lost lease", "PUT " + farmapi.PathJobs + "/nope/output/a.glb HTTP/1.1\r\n" + farmapi.LeaseHeader + ": t" + auth, `abc`, http.StatusConflict},
		{"bad upload", "POST /api/upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b", "--b\r\nbroken", http.StatusBadRequest},
		{"bad args", "PUT /api/create HTTP/1.1\r\nCS-API-Arg: {\"webhook\": 5}", "", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := tc.head + fmt.Sprintf("\r\nContent-Length: %d", len(tc.body))
			resp, body := rawRequest(t, addr, head, []byte(tc.body))
			require.Equal(t, tc.status, resp.StatusCode, body)
			requirePlainBody(t, body, hardenFarmToken)
		})
	}
}

// A relayed WebSocket (/stream, through the manager's relay and the local
// farm's) lives on past the read, write and idle timeouts too: the relay
// hijacks the connection itself and clears the deadlines net/http set.
func TestRelayOutlivesHTTPTimeouts(t *testing.T) {
	srv := start(t, drover.Config{
		Farm:    farm.Config{Slots: 1},
		Pools:   []drover.Pool{{PoolSpec: child("stream", farm.PoolSpec{Name: "stream", Protocol: farm.ProtocolStream})}},
		Manager: manager.Config{HTTP: hardenLimits},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(srv, "/stream?pool=stream"), nil)
	require.NoError(t, err)
	defer ws.Close()
	for i := range 2 {
		require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, []byte{byte(i)}))
		require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, msg)
		if i == 0 {
			<-time.After(2 * hardenLimits.Write) // the condition under test: past every timeout
		}
	}
}
