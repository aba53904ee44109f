package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/classcad"
)

// classcadEnv makes the test binary a ClassCAD-style instance.
const classcadEnv = "DROVER_TEST_CLASSCAD"

// The test binary is also drover itself: with DROVER_TEST_MAIN=1 it runs
// main with the arguments after "--". The farm starts workers from the same
// executable, and they inherit the variable.
func TestMain(m *testing.M) {
	if os.Getenv(classcadEnv) == "1" {
		// An instance of a dial pool (TestUpDialPool); it inherited
		// DROVER_TEST_MAIN from drover up too.
		os.Exit(classcad.Main(os.Args[1:]))
	}
	if os.Getenv("DROVER_TEST_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"drover"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type upProc struct {
	cmd    *exec.Cmd
	base   string // host:port
	banner string // the lines up to the WebSocket URL
}

var bannerRE = regexp.MustCompile(`ws://([0-9.:]+)/ws`)

func startUp(t *testing.T, args ...string) *upProc {
	t.Helper()
	// Conversions keep their files in a directory of the test's.
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--", "up", "--addr", "127.0.0.1:0",
		"--data", t.TempDir()}, args...)...)
	cmd.Env = append(os.Environ(), "DROVER_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var banner strings.Builder
	for sc.Scan() {
		banner.WriteString(sc.Text() + "\n")
		if m := bannerRE.FindStringSubmatch(sc.Text()); m != nil {
			go func() { // keep draining stdout
				for sc.Scan() {
				}
			}()
			return &upProc{cmd: cmd, base: m[1], banner: banner.String()}
		}
	}
	t.Fatalf("drover up printed no banner: %v", sc.Err())
	return nil
}

type statusDoc struct {
	Instances []struct {
		PID   int    `json:"pid"`
		State string `json:"state"`
	} `json:"instances"`
}

// session opens a session and returns the client and its worker's pid.
func (u *upProc) session(t *testing.T) (*websocket.Conn, int) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+u.base+"/ws", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	var f struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	for f.Type != "welcome" {
		require.NoError(t, ws.ReadJSON(&f))
	}
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"task","id":1,"data":{"command":"pid"}}`)))
	require.NoError(t, ws.ReadJSON(&f))
	require.Equal(t, "result", f.Type)
	var r struct{ PID int }
	require.NoError(t, json.Unmarshal(f.Data, &r))
	return ws, r.PID
}

func (u *upProc) pids(t *testing.T) []int {
	t.Helper()
	resp, err := http.Get("http://" + u.base + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st statusDoc
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	var pids []int
	for _, in := range st.Instances {
		if in.PID > 0 {
			pids = append(pids, in.PID)
		}
	}
	return pids
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func requireAllGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("instance process %d is still alive", pid)
			}
			time.Sleep(10 * time.Millisecond) // the kernel delivers the death signal asynchronously
		}
	}
}

func TestUpStopsEveryInstance(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		within time.Duration
	}{
		{"SIGTERM", syscall.SIGTERM, 0},
		{"SIGKILL", syscall.SIGKILL, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUp(t, "--instances", "3", "--warm", "2")
			ws, pid := u.session(t)
			var pids []int
			// The warm instance starts in the background; /status is the only
			// place that tells when it is up.
			deadline := time.Now().Add(10 * time.Second)
			for pids = u.pids(t); len(pids) < 2; pids = u.pids(t) {
				require.True(t, time.Now().Before(deadline), "want a bound and a warm instance, have %v", pids)
				time.Sleep(20 * time.Millisecond)
			}
			require.Contains(t, pids, pid)

			require.NoError(t, u.cmd.Process.Signal(tc.sig))
			err := u.cmd.Wait()
			if tc.sig == syscall.SIGTERM {
				require.NoError(t, err, "drover up exits 0 on SIGTERM")
				// The client was told: a close frame, not a dropped connection.
				_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				var ce *websocket.CloseError
				for {
					_, _, rerr := ws.ReadMessage()
					if rerr != nil {
						require.True(t, errors.As(rerr, &ce), "want a close frame, got %v", rerr)
						break
					}
				}
				require.Equal(t, websocket.CloseGoingAway, ce.Code)
			}
			requireAllGone(t, pids, tc.within+time.Millisecond)
		})
	}
}

func TestUpDefaults(t *testing.T) {
	u := startUp(t) // no flags but the test's --addr
	st := u.status(t)
	require.Equal(t, 8, st.Capacity.Slots)
	require.Equal(t, 0.9, st.Capacity.Threshold)
	require.Equal(t, 2, st.Pools[0].Warm)
}

type upStatus struct {
	Capacity struct {
		Slots     int     `json:"slots"`
		Threshold float64 `json:"threshold"`
	} `json:"capacity"`
	Pools []struct {
		Warm int `json:"warm"`
	} `json:"pools"`
}

func (u *upProc) status(t *testing.T) upStatus {
	t.Helper()
	resp, err := http.Get("http://" + u.base + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st upStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func TestUpConfigFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/drover.yaml"
	require.NoError(t, os.WriteFile(path, []byte("instances: 2\nwarm: 0\nhealth_threshold: 0.5\n"), 0o600))
	t.Setenv("DROVER_WARM", "1")
	u := startUp(t, "--config", path, "--instances", "3")
	st := u.status(t)
	require.Equal(t, 3, st.Capacity.Slots, "a typed flag beats the file")
	require.Equal(t, 0.5, st.Capacity.Threshold, "from the file")
	require.Equal(t, 1, st.Pools[0].Warm, "the environment beats the file")
}

// A pool of any stdio program (here cat, websocketd style) works under
// drover up: its instances are reached through the local farm's server.
func TestUpStdioPool(t *testing.T) {
	dir := t.TempDir()
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	cfg := "instances: 2\npools:\n" +
		"  - name: cat\n    command: " + cat + "\n    protocol: stdio\n    idle_gap: 50ms\n    warm: 0\n"
	require.NoError(t, os.WriteFile(dir+"/drover.yaml", []byte(cfg), 0o600))
	u := startUp(t, "--config", dir+"/drover.yaml")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, "ws://"+u.base+"/ws", client.Options{Pool: "cat"})
	require.NoError(t, err)
	defer func() { _ = s.Logout() }()
	res, err := s.Execute(ctx, json.RawMessage(`{"hello": "cat"}`))
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.JSONEq(t, `{"hello":"cat"}`, string(res[0].Data))
}

// A ClassCAD-style dial instance that says nothing until the farm's
// configuration came, as a real one does, serves sessions under drover up.
func TestUpDialPool(t *testing.T) {
	dir := t.TempDir()
	args, err := json.Marshal(classcad.Args)
	require.NoError(t, err)
	cfg := "instances: 2\npools:\n" +
		"  - name: cad\n    command: " + os.Args[0] + "\n    args: " + string(args) + "\n" +
		"    env: [" + classcadEnv + "=1]\n    protocol: dial\n    warm: 0\n"
	require.NoError(t, os.WriteFile(dir+"/drover.yaml", []byte(cfg), 0o600))
	u := startUp(t, "--config", dir+"/drover.yaml")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, "ws://"+u.base+"/ws", client.Options{Pool: "cad"})
	require.NoError(t, err)
	defer func() { _ = s.Logout() }()
	res, err := s.Execute(ctx, json.RawMessage(`[{"command":"add","a":40,"b":2},{"command":"pid"}]`))
	require.NoError(t, err)
	require.Len(t, res, 2)
	var add, pid struct {
		Command, From string
		Result        int
	}
	require.NoError(t, json.Unmarshal(res[0].Data, &add))
	require.NoError(t, json.Unmarshal(res[1].Data, &pid))
	require.Equal(t, "Result", add.Command)
	require.Equal(t, "add", add.From)
	require.Equal(t, 42, add.Result)
	require.Equal(t, "pid", pid.From)
	require.Contains(t, u.pids(t), pid.Result, "the task ran on the session's instance")
}
