package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	dclient "github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/dockertest"
)

// Sessions on docker pools: the farm runs the reference worker image, one
// container per instance, and the manager reaches them through the farm as
// it reaches processes.

// dockerStack starts a manager and a farm whose pools are the reference
// worker image: "box" (native, warm as given) and "viewer" (stream, one
// container per viewer with the model's directory mounted).
func dockerStack(t *testing.T, warm int) (*stack, *client.Client) {
	t.Helper()
	cli := dockertest.Client(t)
	img := dockertest.WorkerImage(t, cli)
	models := t.TempDir()
	require.NoError(t, os.Chmod(models, 0o755)) // the worker runs as nobody
	for _, m := range []string{"gear", "bolt"} {
		require.NoError(t, os.Mkdir(filepath.Join(models, m), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(models, m, m+".step"), []byte("ISO-10303-21;"), 0o644))
	}
	id := "e2e-docker-" + randomHex(t)
	// Runs after the stack's cleanup, which closes the farm: a closed farm
	// leaves no container, whatever it was starting when it closed.
	t.Cleanup(func() {
		require.Empty(t, dockertest.Containers(t, cli, farm.LabelFarm, id), "containers left by the closed farm")
	})
	st := newStackWith(t, stackOptions{
		farmID:    id,
		modelsDir: models,
		warm:      map[string]int{"box": warm},
		pools: func(string) []farm.PoolSpec {
			return []farm.PoolSpec{
				{Name: "box", Runtime: farm.RuntimeDocker, Image: img, StartTimeout: 20 * time.Second},
				{Name: "viewer", Runtime: farm.RuntimeDocker, Image: img, Protocol: farm.ProtocolStream,
					Args: []string{"--model-dir", "{{.ModelDirs}}"}, StartTimeout: 20 * time.Second},
			}
		},
	})
	return st, cli
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// requireContainerGone waits until the container no longer exists.
func (st *stack) requireContainerGone(cli *client.Client, id string) {
	st.t.Helper()
	require.NotEmpty(st.t, id)
	st.eventually("container "+id+" to be removed", func() bool { return dockertest.Gone(st.t, cli, id) })
}

// TestDockerSessions: each session gets its own container, keeps it for
// all its tasks, and the container is removed once the session ends.
func TestDockerSessions(t *testing.T) {
	t.Parallel()
	st, cli := dockerStack(t, 0)
	ctx := st.ctx()

	a, err := dclient.Dial(ctx, st.wsURL("/ws?pool=box"), dclient.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Drop() })
	b, err := dclient.Dial(ctx, st.wsURL("/ws?pool=box"), dclient.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Drop() })

	fa, ok := st.farmInstance(a.Instance)
	require.True(t, ok)
	fb, ok := st.farmInstance(b.Instance)
	require.True(t, ok)
	require.Zero(t, fa.PID)
	require.NotEmpty(t, fa.Container)
	require.NotEqual(t, fa.Container, fb.Container, "a container per session")
	shown := map[string]string{}
	for _, mi := range st.m.Status().Instances {
		shown[mi.ID] = mi.Container
	}
	require.Equal(t, fa.Container, shown[a.Instance], "the manager's status names the container")
	require.Equal(t, fb.Container, shown[b.Instance])

	// set and get stick to the session's container.
	_, err = a.Execute(ctx, json.RawMessage(`{"command":"set","key":"k","value":"a's"}`))
	require.NoError(t, err)
	_, err = b.Execute(ctx, json.RawMessage(`{"command":"set","key":"k","value":"b's"}`))
	require.NoError(t, err)
	for range 3 {
		res, err := a.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`))
		require.NoError(t, err)
		require.Equal(t, []string{`{"key":"k","value":"a's"}`}, data(t, res))
		res, err = b.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`))
		require.NoError(t, err)
		require.Equal(t, []string{`{"key":"k","value":"b's"}`}, data(t, res))
	}
	res, err := a.Execute(ctx, json.RawMessage(`{"command":"pid"}`))
	require.NoError(t, err)
	require.Equal(t, []string{`{"pid":1,"instance":"` + a.Instance + `"}`}, data(t, res),
		"the worker is its container's first process")

	// The session ends: its container goes, the other's stays.
	require.NoError(t, a.Logout())
	st.requireContainerGone(cli, fa.Container)
	require.False(t, dockertest.Gone(t, cli, fb.Container))
	res, err = b.Execute(ctx, json.RawMessage(`{"command":"get","key":"k"}`))
	require.NoError(t, err)
	require.Equal(t, []string{`{"key":"k","value":"b's"}`}, data(t, res))
	require.NoError(t, b.Logout())
	st.requireContainerGone(cli, fb.Container)
	st.requireEmpty()
	require.Empty(t, dockertest.Containers(t, cli, farm.LabelFarm, st.farm.ID()))
}

// TestDockerKill: a warm container killed behind the manager's back is
// replaced in the warm pool within a few seconds; a container killed under
// a session ends the session with instance_lost at once, and is replaced
// too.
func TestDockerKill(t *testing.T) {
	t.Parallel()
	st, cli := dockerStack(t, 1)
	ctx := st.ctx()
	// readyOther waits until the manager has an idle instance other than
	// the one given (ready on the farm and connected) and returns the
	// farm's record of it.
	readyOther := func(not string) farm.Instance {
		var found farm.Instance
		st.eventually("an idle instance other than "+not, func() bool {
			for _, mi := range st.m.Status().Instances {
				if mi.ID == not || mi.State != "idle" {
					continue
				}
				fi, ok := st.farmInstance(mi.ID)
				found = fi
				return ok
			}
			return false
		})
		return found
	}
	warm := readyOther("")

	// An idle container dies: the warm pool gets a new one.
	killed := time.Now()
	require.NoError(t, cli.ContainerKill(ctx, warm.Container, "KILL"))
	bound := readyOther(warm.ID)
	replacedAfter := time.Since(killed)
	require.NotEqual(t, warm.Container, bound.Container)
	st.requireContainerGone(cli, warm.Container)

	// A session takes it, and its container dies under it.
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, st.wsURL("/ws?pool=box"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	var welcome struct{ Type, Instance string }
	require.NoError(t, ws.ReadJSON(&welcome))
	require.Equal(t, "welcome", welcome.Type)
	require.Equal(t, bound.ID, welcome.Instance, "the warm instance")
	killed = time.Now()
	require.NoError(t, cli.ContainerKill(ctx, bound.Container, "KILL"))
	var ev struct{ Type, Event, Instance string }
	require.NoError(t, ws.ReadJSON(&ev))
	lostAfter := time.Since(killed)
	require.Equal(t, "event", ev.Type)
	require.Equal(t, "instance_lost", ev.Event)
	require.Equal(t, bound.ID, ev.Instance)
	next := readyOther(bound.ID)
	t.Logf("idle container killed: replaced after %s; bound container killed: instance_lost after %s",
		replacedAfter.Round(time.Millisecond), lostAfter.Round(time.Millisecond))
	require.Less(t, replacedAfter, 5*time.Second)
	require.Less(t, lostAfter, 3*time.Second)
	st.requireContainerGone(cli, bound.Container)

	// The replacement serves the next session.
	s, err := dclient.Dial(ctx, st.wsURL("/ws?pool=box"), dclient.Options{})
	require.NoError(t, err)
	require.Equal(t, next.ID, s.Instance)
	_, err = s.Execute(ctx, json.RawMessage(`{"command":"echo"}`))
	require.NoError(t, err)
	require.NoError(t, s.Logout())
}

// TestDockerStreamModels: a stream pool on docker starts a container per
// viewer with the model it asked for mounted read-only, relays the viewer's
// WebSocket to it byte for byte, and removes it when the viewer leaves.
func TestDockerStreamModels(t *testing.T) {
	t.Parallel()
	st, cli := dockerStack(t, 0)

	gear := st.openStream("viewer&model=gear")
	bolt := st.openStream("viewer&model=bolt")

	// The relay is byte for byte: the worker behind it speaks the native
	// protocol, and the viewer speaks it through the relay.
	model := func(ws *websocket.Conn) string {
		t.Helper()
		require.NoError(t, ws.WriteMessage(websocket.TextMessage,
			[]byte(`{"type":"task","id":7,"data":{"command":"model"}}`)))
		require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
		var res struct {
			Type string
			Data json.RawMessage
		}
		require.NoError(t, ws.ReadJSON(&res))
		require.Equal(t, "result", res.Type)
		var done struct{ Type string }
		require.NoError(t, ws.ReadJSON(&done))
		require.Equal(t, "done", done.Type)
		return string(res.Data)
	}
	require.Equal(t, `{"dir":"/models/gear","files":[{"name":"gear.step","size":13}]}`, model(gear))
	require.Equal(t, `{"dir":"/models/bolt","files":[{"name":"bolt.step","size":13}]}`, model(bolt))

	insts := st.farm.Instances()
	require.Len(t, insts, 2)
	var containers []string
	for _, inst := range insts {
		require.Equal(t, farm.ProtocolStream, inst.Protocol)
		containers = append(containers, inst.Container)
		info, err := cli.ContainerInspect(context.Background(), inst.Container)
		require.NoError(t, err)
		require.Len(t, info.Mounts, 1)
		require.False(t, info.Mounts[0].RW, "the model is mounted read-only")
	}
	require.NotEqual(t, containers[0], containers[1], "a container per viewer")

	// A viewer leaves: its container goes.
	for _, ws := range []*websocket.Conn{gear, bolt} {
		require.NoError(t, ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)))
		_, _, err := ws.ReadMessage()
		require.True(t, websocket.IsCloseError(err, websocket.CloseNormalClosure), "%v", err)
		require.NoError(t, ws.Close())
	}
	for _, c := range containers {
		st.requireContainerGone(cli, c)
	}
	st.requireEmpty()
}
