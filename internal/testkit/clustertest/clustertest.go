// Package clustertest runs a drover cluster of containers for tests: Redis,
// managers sharing it, farms of the reference worker and HAProxy in front,
// each in its own container on a user-defined Docker network of its own,
// from the images scripts/cluster-images.sh builds FROM scratch
// (`make cluster-images`). Tests break it on purpose: they kill, restart,
// pause and partition its containers by their names (redis, manager1,
// farm2, haproxy, ...), which are also their host names on the network.
//
// It is not used by drover itself; its tests, in test/chaos, are built with
// the chaos tag (make chaos, chaos-smoke, and chaos-ci, which make test
// runs).
package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/drover-dev/drover/internal/testkit/dockertest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/manager"
)

// Label marks every container and network of this package; LabelPID holds
// the process id of the test binary that made it, so that a later run
// removes what a killed run left behind and spares a running one's.
const (
	Label    = "drover.clustertest"
	LabelPID = "drover.clustertest.pid"
)

// Images are the tags scripts/cluster-images.sh builds (TAG=local).
const (
	DroverImage  = "drover:local"
	RedisImage   = "drover-redis:local"
	HAProxyImage = "drover-haproxy:local"
)

// The tokens of the test cluster.
const (
	FarmToken  = "cluster-farm-token"
	AdminToken = "cluster-admin-token"
)

// Options size the cluster.
type Options struct {
	Managers  int // default 2
	Farms     int // default 2
	Instances int // instance slots per farm, default 4
	// ManagerArgs and FarmArgs are added to every manager's and farm's
	// command line.
	ManagerArgs, FarmArgs []string
}

// WebhookSecret signs the managers' webhooks.
const WebhookSecret = "cluster-webhook-secret"

// Cluster is a running cluster.
type Cluster struct {
	t   testing.TB
	cli *client.Client
	// Prefix starts the names of its containers and of its network.
	Prefix  string
	Network string
	// URL is HAProxy's client frontend as the host reaches it:
	// http://127.0.0.1:PORT.
	URL string
	// Managers and Farms are the names of the managers and farms.
	Managers, Farms []string
	// Gateway is the host's address on the cluster's network: a server
	// the test runs there (a webhook receiver) is reachable from the
	// containers, and the managers' webhooks may reach it.
	Gateway string

	mu  sync.Mutex
	ids map[string]string // name -> container id
}

var images struct {
	once sync.Once
	err  error
}

// buildImages runs scripts/cluster-images.sh once per test binary; it
// builds nothing when the images are up to date.
func buildImages() error {
	images.once.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			images.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		cmd := exec.Command(filepath.Join(root, "scripts", "cluster-images.sh"))
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			images.err = fmt.Errorf("scripts/cluster-images.sh: %w\n%s", err, out)
		}
	})
	return images.err
}

// Start builds the images if needed, removes the leftovers of dead runs and
// starts a cluster, removed when the test ends (also when it fails). It
// returns once every farm has registered with every manager and HAProxy
// answers.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Managers <= 0 {
		o.Managers = 2
	}
	if o.Farms <= 0 {
		o.Farms = 2
	}
	if o.Instances <= 0 {
		o.Instances = 4
	}
	cli := dockertest.Client(t)
	began := time.Now()
	if err := buildImages(); err != nil {
		t.Fatal(err)
	}
	sweep(t, cli)
	c := &Cluster{t: t, cli: cli, Prefix: fmt.Sprintf("drover-ct-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6),
		ids: map[string]string{}}
	c.Network = c.Prefix
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(c.remove)

	if _, err := cli.NetworkCreate(ctx, c.Network, network.CreateOptions{Driver: "bridge", Labels: c.labels()}); err != nil {
		t.Fatalf("create network: %v", err)
	}
	nw, err := cli.NetworkInspect(ctx, c.Network, network.InspectOptions{})
	if err != nil || len(nw.IPAM.Config) == 0 {
		t.Fatalf("inspect network %s: %v", c.Network, err)
	}
	subnet := nw.IPAM.Config[0].Subnet
	c.Gateway = nw.IPAM.Config[0].Gateway
	if c.Gateway == "" {
		t.Fatalf("network %s has no gateway", c.Network)
	}
	// The conversions' files, shared by the managers as a shared
	// filesystem would be.
	data := c.Prefix + "-data"
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: data, Labels: c.labels()}); err != nil {
		t.Fatalf("create volume: %v", err)
	}

	c.run(ctx, "redis", RedisImage, nil, nil, false, "")
	for i := 1; i <= o.Managers; i++ {
		name := "manager" + strconv.Itoa(i)
		c.Managers = append(c.Managers, name)
		args := append([]string{"manager", "--id=" + name, "--addr=:8181", "--redis=redis://redis:6379",
			"--auth-allow-anonymous", "--trusted-proxies=" + subnet, "--data=/data", "--webhook-allow=" + c.Gateway}, o.ManagerArgs...)
		c.run(ctx, name, DroverImage, args, []string{"DROVER_FARM_TOKEN=" + FarmToken, "DROVER_ADMIN_TOKEN=" + AdminToken,
			"DROVER_WEBHOOK_SECRET=" + WebhookSecret}, false, data+":/data")
	}
	c.run(ctx, "haproxy", HAProxyImage, nil, nil, true, "")
	for i := 1; i <= o.Farms; i++ {
		name := "farm" + strconv.Itoa(i)
		c.Farms = append(c.Farms, name)
		args := append([]string{"farm", "--config=/etc/drover/farm.yaml", "--id=" + name, "--addr=:8282", "--advertise=http://" + name + ":8282",
			"--manager=http://haproxy:8282", "--instances=" + strconv.Itoa(o.Instances)}, o.FarmArgs...)
		c.run(ctx, name, DroverImage, args, []string{"DROVER_TOKEN=" + FarmToken}, false, "")
	}

	insp, err := cli.ContainerInspect(ctx, c.ids["haproxy"])
	if err != nil {
		t.Fatalf("inspect haproxy: %v", err)
	}
	bound := insp.NetworkSettings.Ports[nat.Port("80/tcp")]
	if len(bound) == 0 {
		t.Fatal("haproxy's port 80 is not published")
	}
	c.URL = "http://127.0.0.1:" + bound[0].HostPort
	c.WaitReady(time.Minute)
	t.Logf("cluster %s: %d managers, %d farms, HAProxy at %s, ready after %.1f s", c.Prefix, o.Managers, o.Farms, c.URL,
		time.Since(began).Seconds())
	return c
}

func (c *Cluster) labels() map[string]string {
	return map[string]string{Label: c.Prefix, LabelPID: strconv.Itoa(os.Getpid())}
}

// run creates and starts the container name with the network alias name,
// and the volume bind (volume:path) if not empty.
func (c *Cluster) run(ctx context.Context, name, image string, cmd, env []string, publish bool, bind string) {
	c.t.Helper()
	cfg := &container.Config{Image: image, Cmd: cmd, Env: env, Hostname: name, Labels: c.labels()}
	host := &container.HostConfig{}
	if bind != "" {
		host.Binds = []string{bind}
	}
	if publish {
		cfg.ExposedPorts = nat.PortSet{"80/tcp": {}}
		host.PortBindings = nat.PortMap{"80/tcp": {{HostIP: "127.0.0.1", HostPort: ""}}}
	}
	nets := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		c.Network: {Aliases: []string{name}}}}
	resp, err := c.cli.ContainerCreate(ctx, cfg, host, nets, nil, c.Prefix+"-"+name)
	if err != nil {
		c.t.Fatalf("create %s: %v", name, err)
	}
	c.mu.Lock()
	c.ids[name] = resp.ID
	c.mu.Unlock()
	err = c.cli.ContainerStart(ctx, resp.ID, container.StartOptions{})
	// Docker 20.10 may pick a random host port another container just let
	// go of, and fail with "driver failed programming external
	// connectivity": a new start picks another.
	for try := 1; err != nil && publish && strings.Contains(err.Error(), "external connectivity") && try < 5; try++ {
		c.t.Logf("start %s again: %v", name, err)
		err = c.cli.ContainerStart(ctx, resp.ID, container.StartOptions{})
	}
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
}

func (c *Cluster) id(name string) string {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[name]
	if !ok {
		c.t.Fatalf("no container %q in the cluster", name)
	}
	return id
}

func ctx30() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// container does what to the container name, by its id, within 30 s, and
// fails the test if that fails.
func (c *Cluster) container(what, name string, fn func(ctx context.Context, id string) error) {
	c.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	if err := fn(ctx, c.id(name)); err != nil {
		c.t.Fatalf("%s %s: %v", what, name, err)
	}
}

// Kill sends SIGKILL to the container name (docker kill -s KILL).
func (c *Cluster) Kill(name string) {
	c.t.Helper()
	c.container("kill", name, func(ctx context.Context, id string) error {
		return c.cli.ContainerKill(ctx, id, "KILL")
	})
}

// Restart starts the container name again, after a Kill, or stops (with
// SIGTERM, then SIGKILL after a second) and starts it while it runs.
func (c *Cluster) Restart(name string) {
	c.t.Helper()
	c.container("restart", name, func(ctx context.Context, id string) error {
		timeout := 1
		return c.cli.ContainerRestart(ctx, id, container.StopOptions{Timeout: &timeout})
	})
}

// Pause freezes every process of the container name (docker pause).
func (c *Cluster) Pause(name string) {
	c.t.Helper()
	c.container("pause", name, func(ctx context.Context, id string) error {
		return c.cli.ContainerPause(ctx, id)
	})
}

// Unpause lets the paused container name run on.
func (c *Cluster) Unpause(name string) {
	c.t.Helper()
	c.container("unpause", name, func(ctx context.Context, id string) error {
		return c.cli.ContainerUnpause(ctx, id)
	})
}

// Disconnect cuts the container name off the cluster's network: a
// partition (docker network disconnect).
func (c *Cluster) Disconnect(name string) {
	c.t.Helper()
	c.container("disconnect", name, func(ctx context.Context, id string) error {
		return c.cli.NetworkDisconnect(ctx, c.Network, id, true)
	})
}

// Connect puts the container name back on the cluster's network, under its
// name.
func (c *Cluster) Connect(name string) {
	c.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	err := c.cli.NetworkConnect(ctx, c.Network, c.id(name), &network.EndpointSettings{Aliases: []string{name}})
	if err != nil {
		c.t.Fatalf("connect %s: %v", name, err)
	}
}

// Logs returns the last 200 lines of output of the container name, for
// failure messages.
func (c *Cluster) Logs(name string) string { return c.logs(name, "200") }

// SaveLogs writes the whole output of every container of the cluster to
// dir/<name>.log.
func (c *Cluster) SaveLogs(dir string) error {
	c.mu.Lock()
	var names []string
	for n := range c.ids {
		names = append(names, n)
	}
	c.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, os.WriteFile(filepath.Join(dir, n+".log"), []byte(c.logs(n, "all")), 0o644))
	}
	return errors.Join(errs...)
}

func (c *Cluster) logs(name, tail string) string {
	ctx, cancel := ctx30()
	defer cancel()
	rc, err := c.cli.ContainerLogs(ctx, c.id(name), container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer rc.Close()
	var out strings.Builder
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		out.WriteString("(logs cut short: " + err.Error() + ")")
	}
	return out.String()
}

// Addr returns the address of the container name on the cluster's network,
// which the host reaches too (Linux bridge networks).
func (c *Cluster) Addr(name string) (string, error) {
	ctx, cancel := ctx30()
	defer cancel()
	insp, err := c.cli.ContainerInspect(ctx, c.id(name))
	if err != nil {
		return "", err
	}
	ep := insp.NetworkSettings.Networks[c.Network]
	if ep == nil || ep.IPAddress == "" {
		return "", fmt.Errorf("%s is not on %s", name, c.Network)
	}
	return ep.IPAddress, nil
}

// Status fetches the full /status of the manager name, directly (not
// through HAProxy), with the admin token.
func (c *Cluster) Status(ctx context.Context, name string) (manager.Status, error) {
	var st manager.Status
	ip, err := c.Addr(name)
	if err != nil {
		return st, err
	}
	body, err := testutil.GetOK(ctx, "http://"+ip+":8181/status", AdminToken)
	if err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	defer body.Close()
	return st, json.NewDecoder(body).Decode(&st)
}

// Where returns the manager that holds the session id and the farm of its
// instance, from the managers' /status; managers that do not answer within
// a second are passed over.
func (c *Cluster) Where(id string) (mgr, farm string, err error) {
	for _, m := range c.Managers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx, m)
		cancel()
		if err != nil {
			continue
		}
		for _, s := range st.Sessions {
			if s.ID != id {
				continue
			}
			for _, in := range st.Instances {
				if in.ID == s.Instance {
					return m, in.Farm, nil
				}
			}
			return m, "", fmt.Errorf("session %s on %s: instance %s not listed", id, m, s.Instance)
		}
	}
	return "", "", fmt.Errorf("no manager lists session %s", id)
}

// WaitReady waits until every manager lists every farm as live and HAProxy
// answers /health with 200.
func (c *Cluster) WaitReady(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last error
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		if last = c.ready(); last == nil {
			return
		}
	}
	for _, n := range append(append([]string{"haproxy"}, c.Managers...), c.Farms...) {
		c.t.Logf("%s:\n%s", n, c.Logs(n))
	}
	c.t.Fatalf("the cluster is not ready after %v: %v", within, last)
}

func (c *Cluster) ready() error {
	for _, m := range c.Managers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx, m)
		cancel()
		if err != nil {
			return err
		}
		live := 0
		for _, f := range st.Farms {
			if f.Live && !f.Suspect {
				live++
			}
		}
		if live < len(c.Farms) {
			return fmt.Errorf("%s lists %d live farms of %d", m, live, len(c.Farms))
		}
	}
	resp, err := http.Get(c.URL + "/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("haproxy /health: HTTP %d", resp.StatusCode)
	}
	return nil
}

// remove removes the cluster's containers and network.
func (c *Cluster) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := removeLabelled(ctx, c.cli, Label+"="+c.Prefix); err != nil {
		c.t.Errorf("remove the cluster: %v", err)
	}
}

// sweep removes the containers and networks of runs whose test binary is
// gone.
func sweep(t testing.TB, cli *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", Label))})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", Label))})
	if err != nil {
		t.Fatalf("list networks: %v", err)
	}
	dead := map[string]bool{}
	for _, l := range append(labelsOf(list), netLabels(nets)...) {
		if pid, err := strconv.Atoi(l[LabelPID]); err == nil && !alive(pid) {
			dead[l[Label]] = true
		}
	}
	for prefix := range dead {
		if err := removeLabelled(ctx, cli, Label+"="+prefix); err != nil {
			t.Fatalf("remove the leftovers of %s: %v", prefix, err)
		}
	}
}

func labelsOf(list []container.Summary) []map[string]string {
	var out []map[string]string
	for _, s := range list {
		out = append(out, s.Labels)
	}
	return out
}

func netLabels(list []network.Summary) []map[string]string {
	var out []map[string]string
	for _, n := range list {
		out = append(out, n.Labels)
	}
	return out
}

// alive reports whether the process pid runs on this host.
func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// removeLabelled force-removes the containers, then the networks and
// volumes, that carry label (key=value).
func removeLabelled(ctx context.Context, cli *client.Client, label string) error {
	f := filters.NewArgs(filters.Arg("label", label))
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range list {
		// A paused container is removed by force too.
		err := cli.ContainerRemove(ctx, s.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, n := range nets {
		if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	vols, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, v := range vols.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WaitFarmSeen waits until every manager has heard from the farm name after
// since (a registration or a heartbeat), such as after its Restart.
func (c *Cluster) WaitFarmSeen(name string, since time.Time, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		seen := 0
		for _, m := range c.Managers {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx, m)
			cancel()
			if err != nil {
				continue
			}
			for _, f := range st.Farms {
				if f.ID == name && f.Live && !f.Suspect && f.LastSeen.After(since) {
					seen++
				}
			}
		}
		if seen == len(c.Managers) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("farm %s: %d of %d managers heard from it within %v", name, seen, len(c.Managers), within)
		}
	}
}
