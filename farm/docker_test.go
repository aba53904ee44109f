package farm

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/dockertest"
	"github.com/drover-dev/drover/session"
)

// The docker runtime against the real daemon, with the reference worker
// image built from this tree (internal/testkit/dockertest).

// dockerSetup returns a daemon client and the worker image, or skips the
// test (fails it under CI=true) without a daemon.
func dockerSetup(t testing.TB) (*client.Client, string) {
	t.Helper()
	cli := dockertest.Client(t)
	return cli, dockertest.WorkerImage(t, cli)
}

// containerPool is a docker pool of the reference worker.
func containerPool(name, img string) PoolSpec {
	return PoolSpec{Name: name, Runtime: RuntimeDocker, Image: img, StartTimeout: 20 * time.Second}
}

// testFarmID is a farm id no other test uses: the containers of a farm are
// found by it.
func testFarmID() string { return "dockertest-" + randHex(4) }

// farmContainers lists the containers of the farm id, in any state.
func farmContainers(t testing.TB, cli *client.Client, id string) []container.Summary {
	t.Helper()
	return dockertest.Containers(t, cli, LabelFarm, id)
}

func inspect(t testing.TB, cli *client.Client, id string) container.InspectResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := cli.ContainerInspect(ctx, id)
	require.NoError(t, err)
	return info
}

// cgroupValue reads a container's cgroup v1 file of controller, as the
// cgroupfs driver lays them out; ok is false where that layout is not.
func cgroupValue(t *testing.T, controller, fullID, file string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, "docker", fullID, file))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	require.NoError(t, err)
	return v, true
}

// requireKernelHardening reads the container's main process status from
// the kernel, where the daemon shares the test's PID namespace: its
// capability bounding set is bnd and no-new-privileges is set.
func requireKernelHardening(t *testing.T, info container.InspectResponse, bnd string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.State.Pid))
	if err != nil || info.State.Pid == 0 {
		t.Logf("the container's process is not visible here (%v); hardening checked in its configuration only", err)
		return
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	require.Equal(t, bnd, fields["CapBnd"], "capability bounding set")
	require.Equal(t, "0000000000000000", fields["CapEff"], "no effective capabilities")
	require.Equal(t, "1", fields["NoNewPrivs"])
}

// TestDockerInstance starts a container instance with everything a pool can
// set and checks it from the outside (the daemon, the kernel) and from the
// inside (the worker's answers), then stops it.
func TestDockerInstance(t *testing.T) {
	cli, img := dockerSetup(t)
	// The farm's own environment holds a secret; no container may see it.
	t.Setenv("DROVER_TOKEN", "farm-secret-0b7e")

	models := t.TempDir()
	require.NoError(t, os.Chmod(models, 0o755)) // the worker runs as nobody
	require.NoError(t, os.MkdirAll(filepath.Join(models, "gear"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(models, "gear", "gear.step"), []byte("ISO-10303-21;"), 0o644))

	pool := containerPool("w", img)
	pool.Args = []string{"--model-dir", "{{.ModelDirs}}"}
	pool.Env = []string{"GREETING=hello {{.ID}} on {{.Addr}}"}
	pool.Memory = "64m"
	pool.CPUs = 0.5
	pool.ReadOnly = true
	logs := &logBuffer{}
	id := testFarmID()
	f := newTestFarm(t, Config{ID: id, Slots: 2, Pools: []PoolSpec{pool}, ModelsDir: models,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	inst, err := f.StartInstanceWith(startCtx(t), "w", StartOptions{Model: "gear"})
	require.NoError(t, err)
	require.Zero(t, inst.PID, "no process of the farm's host")
	require.Len(t, inst.Container, 12)
	host, port, err := net.SplitHostPort(inst.Addr)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host, "published on the instance host")

	// From the inside: the worker answers at once on the published port,
	// sees the model, and knows its id.
	c := dialHost(t, "ws://"+inst.Addr+"/")
	out := c.task(`{"command":"model"}`)
	require.Equal(t, []string{`{"dir":"/models/gear","files":[{"name":"gear.step","size":13}]}`}, out.results)
	out = c.task(`{"command":"pid"}`)
	require.Len(t, out.results, 1)
	require.Contains(t, out.results[0], `"instance":"`+inst.ID+`"`)

	// From the outside.
	info := inspect(t, cli, inst.Container)
	for k, v := range map[string]string{LabelFarm: id, LabelInstance: inst.ID, LabelPool: "w"} {
		require.Equal(t, v, info.Config.Labels[k], "label %s", k)
	}
	require.Contains(t, info.Config.Env, "GREETING=hello "+inst.ID+" on 0.0.0.0:"+port)
	require.Contains(t, info.Config.Env, "DROVER_INSTANCE_ID="+inst.ID)
	require.Contains(t, info.Config.Env, "DROVER_PORT="+port)
	for _, kv := range info.Config.Env {
		require.NotContains(t, kv, "farm-secret", "the farm's environment stays out")
	}
	require.Equal(t, []string{"--model-dir", "/models/gear"}, []string(info.Config.Cmd))
	require.Equal(t, int64(64<<20), info.HostConfig.Memory)
	require.Equal(t, int64(5e8), info.HostConfig.NanoCPUs)
	require.True(t, info.HostConfig.ReadonlyRootfs)
	require.Len(t, info.Mounts, 1)
	require.Equal(t, filepath.Join(models, "gear"), info.Mounts[0].Source)
	require.Equal(t, "/models/gear", info.Mounts[0].Destination)
	require.False(t, info.Mounts[0].RW)
	// Hardened without asking: no capabilities, no new privileges, a
	// bounded number of tasks.
	require.Equal(t, []string{"ALL"}, []string(info.HostConfig.CapDrop))
	require.Empty(t, info.HostConfig.CapAdd)
	require.Equal(t, []string{"no-new-privileges"}, info.HostConfig.SecurityOpt)
	require.NotNil(t, info.HostConfig.PidsLimit)
	require.Equal(t, int64(DefaultPidsLimit), *info.HostConfig.PidsLimit)
	requireKernelHardening(t, info, "0000000000000000")
	if limit, ok := cgroupValue(t, "pids", info.ID, "pids.max"); ok {
		require.Equal(t, int64(DefaultPidsLimit), limit)
	}
	// The kernel enforces the limits (cgroup v1 with the cgroupfs driver,
	// as on this project's CI host).
	if limit, ok := cgroupValue(t, "memory", info.ID, "memory.limit_in_bytes"); ok {
		require.Equal(t, int64(64<<20), limit)
		quota, ok := cgroupValue(t, "cpu", info.ID, "cpu.cfs_quota_us")
		require.True(t, ok)
		period, _ := cgroupValue(t, "cpu", info.ID, "cpu.cfs_period_us")
		require.Equal(t, period/2, quota, "half a CPU")
	} else {
		t.Logf("no cgroup v1 files for the container; the limits are checked in its configuration only")
	}

	require.NoError(t, f.StopInstance(startCtx(t), inst.ID))
	require.True(t, dockertest.Gone(t, cli, info.ID), "removed once stopped")
	require.Empty(t, farmContainers(t, cli, id))
	require.NotContains(t, logs.String(), "farm-secret")
}

// TestDockerExitIsReported: a container killed behind the farm's back is
// reported to OnExit at once, like a crashed process, and removed.
func TestDockerExitIsReported(t *testing.T) {
	t.Parallel()
	cli, img := dockerSetup(t)
	exits := newExitLog()
	id := testFarmID()
	f := newTestFarm(t, Config{ID: id, Slots: 1, Pools: []PoolSpec{containerPool("w", img)}, OnExit: exits.onExit})
	inst, err := f.StartInstance(startCtx(t), "w")
	require.NoError(t, err)

	ctx := startCtx(t)
	killed := time.Now()
	require.NoError(t, cli.ContainerKill(ctx, inst.Container, "KILL"))
	err = exits.wait(t, inst.ID)
	took := time.Since(killed)
	t.Logf("OnExit %s after the kill: %v", took, err)
	require.ErrorContains(t, err, "exit status 137")
	require.Less(t, took, 5*time.Second, "the farm waits on the container, it does not poll")
	require.Empty(t, f.Instances())
	require.Equal(t, 1, f.Status().Free, "the slot is free")
	require.Empty(t, farmContainers(t, cli, id), "the dead container is removed")

	// The slot takes a new instance.
	inst2, err := f.StartInstance(startCtx(t), "w")
	require.NoError(t, err)
	require.NotEqual(t, inst.Container, inst2.Container)
	exits.none(t, 0)
}

// TestDockerStartFails: a container that cannot start, or whose program
// exits at once, fails its start with what went wrong, and leaves nothing.
func TestDockerStartFails(t *testing.T) {
	t.Parallel()
	cli, img := dockerSetup(t)
	noProgram := containerPool("no-program", img)
	noProgram.Command = "/no/such/program"
	badFlag := containerPool("bad-flag", img)
	badFlag.Args = []string{"--no-such-flag"}
	id := testFarmID()
	logs := &logBuffer{}
	f := newTestFarm(t, Config{ID: id, Slots: 1, Pools: []PoolSpec{noProgram, badFlag},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})

	_, err := f.StartInstance(startCtx(t), "no-program")
	require.ErrorContains(t, err, "start container")
	require.ErrorContains(t, err, "/no/such/program")

	_, err = f.StartInstance(startCtx(t), "bad-flag")
	require.ErrorIs(t, err, errExitedEarly)
	require.ErrorContains(t, err, "exit status 1")
	require.ErrorContains(t, err, "unknown flag: --no-such-flag", "the stderr tail is in the error")
	require.Contains(t, logs.String(), `msg="drover: unknown flag: --no-such-flag" instance=bad-flag-`,
		"the container's output is in the farm's log")

	require.Empty(t, farmContainers(t, cli, id))
	require.Equal(t, 1, f.Status().Free)
}

// TestDockerReadinessProbesTheContainer: a program that listens only on its
// container's loopback is never ready, although its published port accepts
// connections (Docker's proxy does, on this kind of host): readiness probes
// the container's own address.
func TestDockerReadinessProbesTheContainer(t *testing.T) {
	t.Parallel()
	cli, img := dockerSetup(t)
	pool := containerPool("w", img)
	pool.Args = []string{"--addr", "127.0.0.1:{{.Port}}"}
	pool.StartTimeout = 2 * time.Second
	id := testFarmID()
	f := newTestFarm(t, Config{ID: id, Slots: 1, Pools: []PoolSpec{pool}})
	proxied := make(chan bool, 1)
	f.hookSpawned = func(inst Instance) {
		c, err := net.DialTimeout("tcp", inst.Addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		proxied <- err == nil
	}
	_, err := f.StartInstance(startCtx(t), "w")
	require.ErrorIs(t, err, ErrStartTimeout)
	select {
	case p := <-proxied:
		t.Logf("the published port accepted a connection: %v", p)
	default:
		// A loaded Docker daemon can take the whole start timeout to start
		// the container: the hook never ran.
		t.Log("the start timed out before the container ran")
	}
	require.Empty(t, farmContainers(t, cli, id))
}

// createLabelled creates (and does not start) a container of the worker
// image labelled as an instance of farm.
func createLabelled(t *testing.T, cli *client.Client, img, farm string) string {
	t.Helper()
	ctx := startCtx(t)
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: img,
		Labels: map[string]string{LabelFarm: farm, LabelInstance: "gone-" + randHex(4)}}, nil, nil, nil, "")
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
	})
	return c.ID
}

// TestDockerReconcile: the containers labelled with the farm's id that it
// does not track are removed when the farm is made and then on its timer;
// its instances' containers, and other farms', are not.
func TestDockerReconcile(t *testing.T) {
	t.Parallel()
	cli, img := dockerSetup(t)
	id := testFarmID()
	leftover := createLabelled(t, cli, img, id)
	running := createLabelled(t, cli, img, id)
	require.NoError(t, cli.ContainerStart(startCtx(t), running, container.StartOptions{}))
	other := createLabelled(t, cli, img, testFarmID())

	reg := prometheus.NewRegistry()
	f := newTestFarm(t, Config{ID: id, Slots: 1, Pools: []PoolSpec{containerPool("w", img)},
		ReconcileInterval: 50 * time.Millisecond, Registerer: reg})
	require.True(t, dockertest.Gone(t, cli, leftover), "removed by New")
	require.True(t, dockertest.Gone(t, cli, running), "removed by New, running or not")
	require.False(t, dockertest.Gone(t, cli, other), "another farm's")

	inst, err := f.StartInstance(startCtx(t), "w")
	require.NoError(t, err)
	late := createLabelled(t, cli, img, id)
	deadline := time.Now().Add(waitFor)
	for !dockertest.Gone(t, cli, late) { // nothing to wait on: the timer is the point
		require.True(t, time.Now().Before(deadline), "the reconcile loop removes the untracked container")
		time.Sleep(20 * time.Millisecond)
	}
	// That pass saw the instance's container and kept it.
	var ids []string
	for _, c := range farmContainers(t, cli, id) {
		ids = append(ids, shortID(c.ID))
	}
	require.Equal(t, []string{inst.Container}, ids)
	c := dialHost(t, "ws://"+inst.Addr+"/")
	require.Equal(t, session.FrameDone, c.task(`{"command":"echo"}`).typ)
	require.Equal(t, 3.0, metricValue(t, reg, "drover_farm_untracked_containers_removed_total"))
}

// TestDockerNetwork: on a user-defined network, instances are reached at
// their containers' own addresses, and nothing is published.
func TestDockerNetwork(t *testing.T) {
	t.Parallel()
	cli, img := dockerSetup(t)
	ctx := startCtx(t)
	name := "drover-test-" + randHex(4)
	created, err := cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge",
		Labels: map[string]string{"drover.test": "network"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.NetworkRemove(context.Background(), created.ID) })

	pool := containerPool("w", img)
	pool.Network = name
	pool.ContainerPort = 8080
	pool.CapAdd = []string{"cap_net_bind_service"}
	pool.PidsLimit = -1
	f := newTestFarm(t, Config{ID: testFarmID(), Slots: 1, Pools: []PoolSpec{pool}})
	inst, err := f.StartInstance(startCtx(t), "w")
	require.NoError(t, err)
	info := inspect(t, cli, inst.Container)
	ip := info.NetworkSettings.Networks[name].IPAddress
	require.NotEmpty(t, ip)
	require.Equal(t, net.JoinHostPort(ip, "8080"), inst.Addr)
	require.Empty(t, info.HostConfig.PortBindings)
	require.Contains(t, info.Config.Env, "DROVER_PORT=8080")
	require.Equal(t, []string{"CAP_NET_BIND_SERVICE"}, []string(info.HostConfig.CapAdd))
	if pl := info.HostConfig.PidsLimit; pl != nil { // the daemon may store "unlimited" as nil
		require.LessOrEqual(t, *pl, int64(0), "no pids limit")
	}
	requireKernelHardening(t, info, fmt.Sprintf("%016x", 1<<10)) // CAP_NET_BIND_SERVICE is 10
	c := dialHost(t, "ws://"+inst.Addr+"/")
	require.Equal(t, session.FrameDone, c.task(`{"command":"echo"}`).typ)
	// Close removes it; the network can go then.
	require.NoError(t, f.Close(startCtx(t)))
	require.True(t, dockertest.Gone(t, cli, info.ID))
}

// TestDockerDaemonChecks: what New checks against the daemon.
func TestDockerDaemonChecks(t *testing.T) {
	t.Parallel()
	dockerSetup(t)
	missing := containerPool("w", "drover-no-such-image:"+randHex(4))
	_, err := New(Config{ID: testFarmID(), Pools: []PoolSpec{missing}})
	require.ErrorContains(t, err, fmt.Sprintf("image %q is not on the Docker host", missing.Image))
	require.ErrorContains(t, err, "make image")

	pull := missing
	pull.Image = "drover.invalid/no-such-image:1"
	pull.Pull = PullMissing
	_, err = New(Config{ID: testFarmID(), Pools: []PoolSpec{pull}})
	require.ErrorContains(t, err, `pull image "drover.invalid/no-such-image:1"`)

	_, img := dockerSetup(t)
	nonet := containerPool("w", img)
	nonet.Network = "drover-no-such-network-" + randHex(4)
	_, err = New(Config{ID: testFarmID(), Pools: []PoolSpec{nonet}})
	require.ErrorContains(t, err, "there is no docker network")

	named := containerPool("w", img)
	_, err = New(Config{ID: testFarmID(), Host: "localhost", Pools: []PoolSpec{named}})
	require.ErrorContains(t, err, "must be an IP address")
}

// TestDockerPoolValidation: docker pool options are checked when the farm
// is made, before any daemon is asked.
func TestDockerPoolValidation(t *testing.T) {
	t.Parallel()
	docker := func(edit func(*PoolSpec)) []PoolSpec {
		p := PoolSpec{Name: "p", Runtime: RuntimeDocker, Image: "img"}
		edit(&p)
		return []PoolSpec{p}
	}
	tests := []struct {
		name  string
		pools []PoolSpec
		want  string
	}{
		{"unknown runtime", []PoolSpec{{Name: "p", Command: "x", Runtime: "vm"}}, `unknown runtime "vm"`},
		{"image on a process pool", []PoolSpec{{Name: "p", Command: "x", Image: "img"}}, "image is for docker pools"},
		{"memory on a process pool", []PoolSpec{{Name: "p", Command: "x", Memory: "1g"}}, "memory is for docker pools"},
		{"no image", docker(func(p *PoolSpec) { p.Image = "" }), "needs an image"},
		{"dial", docker(func(p *PoolSpec) { p.Protocol = ProtocolDial }), `protocol "dial" needs the process runtime`},
		{"stdio", docker(func(p *PoolSpec) { p.Protocol = ProtocolStdio }), `protocol "stdio" needs the process runtime`},
		{"binaries", docker(func(p *PoolSpec) { p.Binaries = "x.zip" }), "binaries are for process pools"},
		{"pull", docker(func(p *PoolSpec) { p.Pull = "sometimes" }), `unknown pull policy "sometimes"`},
		{"host network", docker(func(p *PoolSpec) { p.Network = "host" }), `network "host"`},
		{"memory", docker(func(p *PoolSpec) { p.Memory = "lots" }), `bad memory "lots"`},
		{"cpus", docker(func(p *PoolSpec) { p.CPUs = -1 }), "bad cpus"},
		{"port", docker(func(p *PoolSpec) { p.ContainerPort = 70000 }), "bad container_port"},
		{"volume form", docker(func(p *PoolSpec) { p.Volumes = []string{"/data"} }), "SOURCE:TARGET"},
		{"volume relative", docker(func(p *PoolSpec) { p.Volumes = []string{"data/x:/data"} }), "absolute path"},
		{"volume target", docker(func(p *PoolSpec) { p.Volumes = []string{"/data:data"} }), "target must be an absolute path"},
		{"dir", docker(func(p *PoolSpec) { p.Dir = "work" }), "working directory must be an absolute path"},
		{"cap_add on a process pool", []PoolSpec{{Name: "p", Command: "x", CapAdd: []string{"CHOWN"}}}, "cap_add is for docker pools"},
		{"cap_add all", docker(func(p *PoolSpec) { p.CapAdd = []string{"all"} }), `cap_add "all"`},
		{"cap_add name", docker(func(p *PoolSpec) { p.CapAdd = []string{"NET BIND"} }), `cap_add "NET BIND"`},
		{"pids_limit", docker(func(p *PoolSpec) { p.PidsLimit = -2 }), "bad pids_limit -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Pools: tt.pools})
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestDockerStreamLiveliness: a stream instance in a container reports its
// liveliness from its own address without the farm token (and nobody else
// reports for it without one), and the stream adapter's watch holds for it:
// silent for three intervals after a report, it is killed and reported.
func TestDockerStreamLiveliness(t *testing.T) {
	t.Parallel()
	_, img := dockerSetup(t)
	exits := newExitLog()
	pool := containerPool("s", img)
	pool.Protocol = ProtocolStream
	pool.Liveliness = 200 * time.Millisecond
	ts := newTestServer(t, Config{ID: testFarmID(), Slots: 1, Pools: []PoolSpec{pool}, OnExit: exits.onExit},
		ServerConfig{})
	inst, err := ts.f.StartInstance(startCtx(t), "s")
	require.NoError(t, err)
	ip := ts.f.containerIP(inst.ID)
	require.NotNil(t, ip)

	report := func(from, state string) int {
		req := httptest.NewRequest("POST", "/liveliness/"+inst.ID+"?liveliness="+state, nil)
		req.RemoteAddr = net.JoinHostPort(from, "40000")
		rec := httptest.NewRecorder()
		ts.s.ServeHTTP(rec, req)
		return rec.Code
	}
	require.Equal(t, http.StatusUnauthorized, report("192.0.2.7", "ping"), "not its container")
	reported := time.Now()
	require.Equal(t, http.StatusNoContent, report(ip.String(), "ping"), "its container")

	err = exits.wait(t, inst.ID)
	require.ErrorContains(t, err, "no liveliness report for 600ms")
	require.GreaterOrEqual(t, time.Since(reported), 3*pool.Liveliness)
}

// BenchmarkStartStopContainer is a cold start (create, start, ready) and a
// stop (stop, remove) of a reference worker container; compare
// BenchmarkStartStopProcess.
func BenchmarkStartStopContainer(b *testing.B) {
	_, img := dockerSetup(b)
	f := newTestFarm(b, Config{ID: testFarmID(), Slots: 1, Logger: slog.New(slog.DiscardHandler),
		Pools: []PoolSpec{containerPool("w", img)}})
	benchStartStop(b, f, "w")
}
