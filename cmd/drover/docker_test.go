package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/dockertest"
)

// TestFarmDockerRestart: a `drover farm --runtime docker` killed with
// SIGKILL leaves its containers running (nothing ties a container to the
// process that made it); the farm restarted with the same id removes them
// before it takes any work, and serves sessions again.
func TestFarmDockerRestart(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	img := dockertest.WorkerImage(t, cli)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := "farm-docker-" + hex.EncodeToString(b)
	containers := func() map[string]bool {
		out := map[string]bool{}
		for _, c := range dockertest.Containers(t, cli, farm.LabelFarm, id) {
			out[c.ID] = true
		}
		return out
	}
	t.Cleanup(func() { // whatever a failure left: this farm id is never used again
		for c := range containers() {
			_ = cli.ContainerRemove(context.Background(), c, container.RemoveOptions{Force: true})
		}
	})

	m := startManager(t, "--warm", "2")
	f := startFarm(t, m, id, 3, "--runtime", "docker", "--image", img)
	waitFarms(t, m, 10*time.Second, id)
	ts := openSession(t, m)
	ts.echo(t)
	var before map[string]bool
	require.Eventually(t, func() bool { before = containers(); return len(before) == 3 },
		waitFor, 20*time.Millisecond, "a container for the session and two warm ones")

	require.NoError(t, f.cmd.Process.Signal(syscall.SIGKILL))
	require.Error(t, f.wait(t, 10*time.Second))
	// One may have been created but not yet started: the daemon starts it
	// all the same.
	require.Equal(t, before, containers(), "the killed farm's containers live on")

	// The restarted farm (same id) has removed them once it is up.
	f2 := startFarm(t, m, id, 3, "--runtime", "docker", "--image", img)
	for c := range before {
		require.True(t, dockertest.Gone(t, cli, c), "container %s of the previous run", c[:12])
	}
	require.Contains(t, f2.out.String(), "removed containers left by the farm's previous run")
	require.Contains(t, f2.out.String(), "containers=3")

	// It serves again, from new containers, once the manager has its new
	// address: until the registration the manager still knows the old one.
	require.Eventually(t, func() bool { return strings.Contains(f2.out.String(), "registered with manager") },
		waitFor, 20*time.Millisecond, "the restarted farm registers")
	waitFarms(t, m, 10*time.Second, id)
	ts2 := openSessionOpts(t, m, false)
	ts2.echo(t)
	for c := range containers() {
		_, old := before[c]
		require.False(t, old)
	}
	require.NoError(t, ts2.s.Logout())
	f2.stop(t)
	m.stop(t)
	require.Empty(t, containers(), "a farm that stops removes its containers")
	requireNoSecrets(t, m, f, f2)
}

const waitFor = 20 * time.Second

// TestUpDocker: drover up with a docker pool from the config file. A
// session runs in its own limited container; the container killed under it
// ends the session with instance_lost, the warm pool gets a new container,
// and drover up removes its containers when it stops.
func TestUpDocker(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	img := dockertest.WorkerImage(t, cli)
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`instances: 2
runtime: docker
image: %s
pools:
  - name: box
    warm: 1
    memory: 64m
    read_only: true
`, img)), 0o600))
	u := startUp(t, "--config", path)

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+u.base+"/ws?pool=box", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(waitFor)))
	var welcome struct{ Type, Instance string }
	require.NoError(t, ws.ReadJSON(&welcome))
	require.Equal(t, "welcome", welcome.Type)
	victim := dockertest.Containers(t, cli, farm.LabelInstance, welcome.Instance)
	require.Len(t, victim, 1)
	info, err := cli.ContainerInspect(context.Background(), victim[0].ID)
	require.NoError(t, err)
	require.Equal(t, int64(64<<20), info.HostConfig.Memory)
	require.True(t, info.HostConfig.ReadonlyRootfs)

	killed := time.Now()
	require.NoError(t, cli.ContainerKill(context.Background(), victim[0].ID, "KILL"))
	var ev struct{ Type, Event, Instance string }
	require.NoError(t, ws.ReadJSON(&ev))
	require.Equal(t, "event", ev.Type)
	require.Equal(t, "instance_lost", ev.Event)
	t.Logf("instance_lost %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The warm pool refills: an idle instance that is not the victim.
	var spare string
	require.Eventually(t, func() bool {
		spare = ""
		for _, in := range u.instances(t) {
			if in.ID != welcome.Instance && in.State == "idle" {
				spare = in.ID
			}
		}
		return spare != ""
	}, waitFor, 20*time.Millisecond)
	require.Eventually(t, func() bool { return dockertest.Gone(t, cli, victim[0].ID) }, waitFor, 20*time.Millisecond,
		"the dead container is removed")
	spareContainer := dockertest.Containers(t, cli, farm.LabelInstance, spare)
	require.Len(t, spareContainer, 1)

	require.NoError(t, u.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, u.cmd.Wait())
	require.True(t, dockertest.Gone(t, cli, spareContainer[0].ID), "drover up removes its containers as it stops")
}

type upInstance struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func (u *upProc) instances(t *testing.T) []upInstance {
	t.Helper()
	resp, err := http.Get("http://" + u.base + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st struct {
		Instances []upInstance `json:"instances"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st.Instances
}
