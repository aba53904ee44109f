package farm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	"github.com/docker/go-units"
)

// The docker runtime: a Docker container per instance, from its pool's
// image, on the Docker daemon that DOCKER_HOST names (the local one by
// default).
//
// Every container the farm creates carries the labels drover.farm (the farm
// id), drover.instance and drover.pool. The farm tracks the containers of
// its live instances and of its starts in progress; any other container
// labelled with its id, in any state, is left over, by a previous run of
// the farm that was killed before it could clean up (a container outlives
// the farm that made it, unlike a process with a parent-death signal) or by
// a removal that failed, and is removed when the farm is made and every
// Config.ReconcileInterval after. Farm ids must therefore be unique per
// Docker host; a restarted farm must keep its id.
//
// A container gets the pool's templated Env plus DROVER_INSTANCE_ID and
// DROVER_PORT (and its image's environment), never the farm's environment,
// which may hold the farm token. The farm learns of its exit at once from a
// ContainerWait that lasts the container's life, and its stdout and stderr
// go to the farm's log like a process's. A stop is ContainerStop with the
// stop grace as its timeout; a container that exited, for whatever reason,
// is removed with force. "Not found" always counts as stopped and removed.
//
// Readiness probes the container's own address, its IP on its network and
// the port it listens on: a published port accepts connections as soon as
// the container runs, through Docker's proxy, before the program inside
// listens. So the farm must be able to route to its containers, as it can
// on the Docker host itself (Linux).
//
// Dial and stdio pools are refused: their instances talk to the farm
// through a private loopback port or through pipes.

// DefaultImage is the reference worker image `make image` builds.
const DefaultImage = "drover-worker:latest"

// Pull policies of PoolSpec.Pull.
const (
	PullNever   = "never"
	PullMissing = "missing"
	PullAlways  = "always"
)

// Labels on every container a farm creates.
const (
	LabelFarm     = "drover.farm"
	LabelInstance = "drover.instance"
	LabelPool     = "drover.pool"
)

const (
	defaultReconcileInterval = 30 * time.Second
	// dockerTimeout bounds one call to the daemon, except the ones that
	// last: a container's wait and its log stream, and pulls.
	dockerTimeout = 30 * time.Second
	pullTimeout   = 10 * time.Minute
	// waitRetry is the pause before a wait on a container is made again
	// after the daemon connection broke.
	waitRetry = time.Second
	// containerModels is where models are mounted in a container.
	containerModels = "/models"
)

// dockerPool is a docker pool's options, checked.
type dockerPool struct {
	image    string
	pull     string
	network  string // empty: the default bridge, with the port published
	memory   int64  // bytes; 0: no limit
	nanoCPUs int64  // 0: no limit
	readOnly bool
	binds    []string
	port     int // inside the container; 0: the instance's port
	capAdd   []string
	pids     int64 // -1: no limit
}

// parseRuntime checks the runtime options of p.spec.
func parseRuntime(p *pool) error {
	spec := &p.spec
	bad := func(format string, args ...any) error {
		return fmt.Errorf("farm: pool %q: "+format, append([]any{spec.Name}, args...)...)
	}
	switch spec.Runtime {
	case "", RuntimeProcess:
		if spec.Command == "" {
			return bad("no command")
		}
		for _, o := range []struct {
			key string
			set bool
		}{
			{"image", spec.Image != ""}, {"pull", spec.Pull != ""}, {"network", spec.Network != ""},
			{"memory", spec.Memory != ""}, {"cpus", spec.CPUs != 0}, {"read_only", spec.ReadOnly},
			{"volumes", len(spec.Volumes) > 0}, {"container_port", spec.ContainerPort != 0},
			{"cap_add", len(spec.CapAdd) > 0}, {"pids_limit", spec.PidsLimit != 0},
		} {
			if o.set {
				return bad("%s is for docker pools (runtime: docker)", o.key)
			}
		}
		return nil
	case RuntimeDocker:
	default:
		return bad("unknown runtime %q (want process or docker)", spec.Runtime)
	}
	switch p.protocol {
	case ProtocolDial, ProtocolStdio:
		return bad("protocol %q needs the process runtime: its instances talk to the farm over a private loopback port or pipes (docker pools speak native or stream)", p.protocol)
	}
	if spec.Binaries != "" {
		return bad("binaries are for process pools: a docker pool's program comes in its image")
	}
	if spec.Image == "" {
		return bad("a docker pool needs an image")
	}
	if spec.Dir != "" && !path.IsAbs(spec.Dir) {
		return bad("dir %q: a container's working directory must be an absolute path", spec.Dir)
	}
	d := &dockerPool{image: spec.Image, network: spec.Network, readOnly: spec.ReadOnly, port: spec.ContainerPort}
	switch spec.Pull {
	case "":
		d.pull = PullNever
	case PullNever, PullMissing, PullAlways:
		d.pull = spec.Pull
	default:
		return bad("unknown pull policy %q (want never, missing or always)", spec.Pull)
	}
	if d.network == "host" || d.network == "none" || strings.HasPrefix(d.network, "container:") {
		return bad("network %q: drover reaches containers at their own address on a bridge network", d.network)
	}
	if spec.Memory != "" {
		n, err := units.RAMInBytes(spec.Memory)
		if err != nil || n <= 0 {
			return bad("bad memory %q: want a size such as 512m or 2g", spec.Memory)
		}
		d.memory = n
	}
	if spec.CPUs < 0 || math.IsNaN(spec.CPUs) || math.IsInf(spec.CPUs, 0) {
		return bad("bad cpus %v", spec.CPUs)
	}
	d.nanoCPUs = int64(spec.CPUs * 1e9)
	if spec.ContainerPort < 0 || spec.ContainerPort > 65535 {
		return bad("bad container_port %d", spec.ContainerPort)
	}
	for _, v := range spec.Volumes {
		if err := checkVolume(v); err != nil {
			return bad("volume %q: %v", v, err)
		}
	}
	d.binds = slices.Clone(spec.Volumes)
	for _, c := range spec.CapAdd {
		name, ok := capability(c)
		if !ok {
			return bad("cap_add %q: want a capability name such as NET_BIND_SERVICE", c)
		}
		d.capAdd = append(d.capAdd, name)
	}
	switch {
	case spec.PidsLimit == 0:
		d.pids = DefaultPidsLimit
	case spec.PidsLimit == -1 || spec.PidsLimit > 0:
		d.pids = spec.PidsLimit
	default:
		return bad("bad pids_limit %d (want a count, or -1 for no limit)", spec.PidsLimit)
	}
	p.docker = d
	return nil
}

// capability reads a Linux capability name as cap_add takes it, with or
// without its CAP_ prefix, in the daemon's own form: upper case, CAP_ prefixed.
func capability(s string) (string, bool) {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "CAP_")
	if name == "" || name == "ALL" {
		return "", false // ALL would undo the default drop wholesale
	}
	for _, r := range name {
		if (r < 'A' || r > 'Z') && r != '_' {
			return "", false
		}
	}
	return "CAP_" + name, true
}

// checkVolume checks the form of a docker run -v volume; the daemon checks
// the rest.
func checkVolume(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return errors.New("want SOURCE:TARGET[:OPTIONS]")
	}
	if strings.Contains(parts[0], "/") && !path.IsAbs(parts[0]) {
		return errors.New("a host directory must be an absolute path")
	}
	if !path.IsAbs(parts[1]) {
		return errors.New("the target must be an absolute path in the container")
	}
	return nil
}

// dockerRuntime is a farm's connection to the Docker daemon and its
// reconcile loop.
type dockerRuntime struct {
	f        *Farm
	cli      *client.Client
	interval time.Duration

	// ctx ends when the farm is done with the daemon (close) or gives up
	// on its containers (abort); waits and log streams end with it.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the reconcile loop and stops in progress
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool // wg takes no more goroutines
}

// newDockerRuntime connects to the daemon, checks the docker pools' images
// (pulling as they say) and networks, removes the containers a previous run
// of the farm left behind, and starts the reconcile loop.
func newDockerRuntime(f *Farm, interval time.Duration) (*dockerRuntime, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("farm: docker client: %w", err)
	}
	d := &dockerRuntime{f: f, cli: cli, interval: cmp.Or(interval, defaultReconcileInterval)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if err := d.check(); err != nil {
		d.close()
		return nil, err
	}
	n, err := d.reconcile(d.ctx)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("farm: remove the containers of the farm's previous run: %w", err)
	}
	if n > 0 {
		f.log.Warn("removed containers left by the farm's previous run", "farm", f.id, "containers", n)
	}
	if d.interval > 0 {
		d.goTracked(d.loop)
	}
	return d, nil
}

// goTracked runs fn on a goroutine that close waits for, unless close has
// begun.
func (d *dockerRuntime) goTracked(fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.wg.Go(fn)
	}
}

// check pings the daemon and checks every docker pool's image and network.
func (d *dockerRuntime) check() error {
	ctx, cancel := context.WithTimeout(d.ctx, dockerTimeout)
	_, err := d.cli.Ping(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("farm: docker runtime: %w", err)
	}
	pulled := map[string]bool{}
	for _, name := range d.f.poolNames {
		p := d.f.pools[name]
		if p.docker == nil {
			continue
		}
		if err := d.ensureImage(p, pulled); err != nil {
			return err
		}
		if p.docker.network == "" {
			if net.ParseIP(d.f.host) == nil {
				return fmt.Errorf("farm: pool %q: containers' ports are published on the instance host, which must be an IP address, not %q",
					name, d.f.host)
			}
			continue
		}
		ctx, cancel := context.WithTimeout(d.ctx, dockerTimeout)
		_, err := d.cli.NetworkInspect(ctx, p.docker.network, network.InspectOptions{})
		cancel()
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				return fmt.Errorf("farm: pool %q: there is no docker network %q (docker network create %s)",
					name, p.docker.network, p.docker.network)
			}
			return fmt.Errorf("farm: pool %q: docker network %q: %w", name, p.docker.network, err)
		}
	}
	return nil
}

// ensureImage makes sure the Docker host has p's image, pulling it as the
// pool's policy says; pulled remembers the images pulled already.
func (d *dockerRuntime) ensureImage(p *pool, pulled map[string]bool) error {
	dp := p.docker
	if pulled[dp.image] {
		return nil
	}
	ctx, cancel := context.WithTimeout(d.ctx, dockerTimeout)
	defer cancel()
	_, err := d.cli.ImageInspect(ctx, dp.image)
	switch {
	case err != nil && !cerrdefs.IsNotFound(err):
		return fmt.Errorf("farm: pool %q: image %q: %w", p.spec.Name, dp.image, err)
	case err == nil && dp.pull != PullAlways:
		return nil
	case err != nil && dp.pull == PullNever:
		return fmt.Errorf("farm: pool %q: image %q is not on the Docker host and the pool's pull policy is %q: "+
			"build it (`make image` builds %s, the reference worker) or set pull: missing", p.spec.Name, dp.image, PullNever, DefaultImage)
	}
	d.f.log.Info("pulling image", "pool", p.spec.Name, "image", dp.image, "pull", dp.pull)
	pctx, pcancel := context.WithTimeout(d.ctx, pullTimeout)
	defer pcancel()
	rc, err := d.cli.ImagePull(pctx, dp.image, image.PullOptions{})
	if err == nil {
		// The daemon reports a failure in the progress stream, after a 200.
		err = jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
		_ = rc.Close()
	}
	if err != nil {
		return fmt.Errorf("farm: pool %q: pull image %q: %w", p.spec.Name, dp.image, err)
	}
	pulled[dp.image] = true
	return nil
}

// loop reconciles every interval until the runtime is closed.
func (d *dockerRuntime) loop() {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := d.reconcile(d.ctx); err != nil && d.ctx.Err() == nil {
			d.f.log.Warn("cannot remove untracked containers", "err", err)
		}
	}
}

// reconcile removes the containers labelled with the farm's id that belong
// to no live instance and no start in progress, and returns how many it
// removed. A container is on the farm's books from before it is created
// until after it is removed, so what is not there is no one's.
func (d *dockerRuntime) reconcile(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	list, err := d.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelFarm+"="+d.f.id)),
	})
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	removed := 0
	var errs []error
	for _, c := range list {
		inst := c.Labels[LabelInstance]
		if d.f.tracks(inst) {
			continue
		}
		gone, err := d.remove(ctx, c.ID)
		if err != nil {
			errs = append(errs, err)
		}
		if !gone {
			continue // or already going: a list may show a container being removed
		}
		removed++
		d.f.metrics.untrackedRemoved()
		d.f.log.Info("removed a container the farm does not track", "container", shortID(c.ID),
			"instance", inst, "state", c.State)
	}
	return removed, errors.Join(errs...)
}

// remove removes a container with force and reports whether this call
// removed it; one that is gone, or going, is no error.
func (d *dockerRuntime) remove(ctx context.Context, id string) (bool, error) {
	err := d.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		return false, nil
	}
	return false, fmt.Errorf("remove container %s: %w", shortID(id), err)
}

// abort makes the supervisors stop waiting on the daemon. A nil runtime
// does nothing.
func (d *dockerRuntime) abort() {
	if d != nil {
		d.cancel()
	}
}

// close stops the reconcile loop, waits for stops in progress and closes
// the client. A nil runtime does nothing; close may be called again.
func (d *dockerRuntime) close() {
	if d == nil {
		return
	}
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
		d.wg.Wait()
		// A last sweep: whatever a start cut short by the close left.
		if _, err := d.reconcile(context.Background()); err != nil {
			d.f.log.Warn("cannot remove the farm's last containers", "err", err)
		}
		_ = d.cli.Close()
	})
}

// tracks reports whether the instance id is live or starting.
func (f *Farm) tracks(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, live := f.instances[id]
	_, starting := f.pending[id]
	return live || starting
}

// containerIP is the address of instance id's container on its network;
// nil for an instance that is no container or has no address.
func (f *Farm) containerIP(id string) net.IP {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[id]
	if !ok || inst.container == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(inst.probe)
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

// containerUnit is an instance's container.
type containerUnit struct {
	d      *dockerRuntime
	inst   *instance
	name   string
	config *container.Config
	host   *container.HostConfig
	port   int // the port the program listens on in the container

	stdout, stderr *lineWriter

	// Set by start.
	id       string
	logsDone chan struct{} // closed when the log stream ended
	stopLogs context.CancelFunc
}

// newUnit renders the pool's templates for inst and builds its container's
// configuration.
func (d *dockerRuntime) newUnit(inst *instance) (*containerUnit, error) {
	f := d.f
	p := inst.pool
	dp := p.docker
	port := cmp.Or(dp.port, inst.port)
	data := templateData{
		Port: port,
		ID:   inst.id,
		Addr: net.JoinHostPort("0.0.0.0", strconv.Itoa(port)),
		Host: "0.0.0.0",
		Pool: p.spec.Name,
	}
	f.templateFields(inst, &data)
	data.PrivatePort, data.Binaries = 0, "" // for process pools only
	var mounts []mount.Mount
	switch {
	case inst.modelDir != "":
		data.ModelDirs = path.Join(containerModels, filepath.ToSlash(inst.model))
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: inst.modelDir,
			Target: data.ModelDirs, ReadOnly: true})
	case f.modelsDir != "":
		data.ModelDirs = containerModels
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: f.modelsDir,
			Target: data.ModelDirs, ReadOnly: true})
	}
	r, err := render(p, data)
	if err != nil {
		return nil, err
	}
	env := slices.Concat(r.env, []string{"DROVER_INSTANCE_ID=" + inst.id, "DROVER_PORT=" + strconv.Itoa(port)})
	cport := nat.Port(strconv.Itoa(port) + "/tcp")
	cfg := &container.Config{
		Image:        dp.image,
		Env:          env,
		WorkingDir:   r.dir,
		ExposedPorts: nat.PortSet{cport: struct{}{}},
		Labels: map[string]string{
			LabelFarm:     f.id,
			LabelInstance: inst.id,
			LabelPool:     p.spec.Name,
		},
	}
	if r.command != "" {
		cfg.Entrypoint = []string{r.command}
	}
	if len(r.args) > 0 {
		cfg.Cmd = r.args
	}
	host := &container.HostConfig{
		Binds:          dp.binds,
		Mounts:         mounts,
		ReadonlyRootfs: dp.readOnly,
		// Hardened by default: no capabilities but those the pool asks
		// for, and no gaining privileges through setuid programs.
		CapDrop:     []string{"ALL"},
		CapAdd:      dp.capAdd,
		SecurityOpt: []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:     dp.memory,
			MemorySwap: dp.memory, // no swap on top
			NanoCPUs:   dp.nanoCPUs,
			PidsLimit:  &dp.pids,
		},
	}
	if dp.network == "" {
		host.PortBindings = nat.PortMap{cport: {{HostIP: f.host, HostPort: strconv.Itoa(inst.port)}}}
	} else {
		host.NetworkMode = container.NetworkMode(dp.network)
		inst.addr = "" // its container's, once it has one
	}
	u := &containerUnit{d: d, inst: inst, name: containerName(f.id, inst.id), config: cfg, host: host, port: port}
	u.stdout, u.stderr = f.outputWriters(inst)
	return u, nil
}

// containerName is "drover-FARM-INSTANCE", reduced to the characters Docker
// allows in names.
func containerName(farmID, instID string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
				return r
			}
			return '_'
		}, s)
	}
	if len(farmID) > 64 {
		farmID = farmID[:64]
	}
	return "drover-" + clean(farmID) + "-" + clean(instID)
}

// start creates and starts the container and learns its address. A
// container that fails to start is removed.
func (u *containerUnit) start(ctx context.Context) error {
	d := u.d
	// The create runs to its end even when ctx is cancelled: cut short,
	// the daemon may still create the container after the farm has given
	// up on it, and nobody would remove it.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), dockerTimeout)
	created, err := d.cli.ContainerCreate(cctx, u.config, u.host, nil, nil, u.name)
	timedOut := cctx.Err() != nil
	ccancel()
	if err != nil {
		if timedOut {
			// The daemon may create it all the same; its name is ours.
			u.id = u.name
			u.remove()
		}
		return fmt.Errorf("create container: %w", err)
	}
	u.id = created.ID
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		u.remove()
		return fmt.Errorf("create container: %w", err)
	}
	if err := d.cli.ContainerStart(ctx, u.id, container.StartOptions{}); err != nil {
		u.remove()
		if msg := err.Error(); strings.Contains(msg, "address already in use") || strings.Contains(msg, "port is already allocated") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return fmt.Errorf("start container %s: %w", shortID(u.id), err)
	}
	info, err := d.cli.ContainerInspect(ctx, u.id)
	if err != nil {
		u.remove()
		return fmt.Errorf("inspect container %s: %w", shortID(u.id), err)
	}
	// A container that already exited has no address; wait reports it.
	if ip := containerIP(info, cmp.Or(u.inst.pool.docker.network, "bridge")); ip != "" {
		addr := net.JoinHostPort(ip, strconv.Itoa(u.port))
		u.inst.probe = addr
		if u.inst.pool.docker.network != "" {
			u.inst.addr = addr
		}
	}
	u.followLogs()
	return nil
}

// containerIP is the container's IPv4 address on the network.
func containerIP(info container.InspectResponse, network string) string {
	if info.NetworkSettings == nil {
		return ""
	}
	if ep := info.NetworkSettings.Networks[network]; ep != nil {
		return ep.IPAddress
	}
	return ""
}

// followLogs sends the container's output to the farm's log until the
// container ends or cleanup stops it.
func (u *containerUnit) followLogs() {
	ctx, cancel := context.WithCancel(u.d.ctx)
	u.stopLogs = cancel
	u.logsDone = make(chan struct{})
	rc, err := u.d.cli.ContainerLogs(ctx, u.id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		u.d.f.log.Warn("cannot follow the container's output", "instance", u.inst.id, "container", shortID(u.id), "err", err)
		close(u.logsDone)
		return
	}
	go func() {
		defer close(u.logsDone)
		defer rc.Close()
		_, _ = stdcopy.StdCopy(u.stdout, u.stderr, rc)
	}()
}

// wait waits on the daemon until the container is not running. A wait the
// daemon connection broke is made again while the container runs.
func (u *containerUnit) wait() error {
	d := u.d
	for {
		done, failed := d.cli.ContainerWait(d.ctx, u.id, container.WaitConditionNotRunning)
		select {
		case res := <-done:
			err := exitStatus(res.StatusCode)
			if res.Error != nil && res.Error.Message != "" {
				err = fmt.Errorf("%w: %s", err, res.Error.Message)
			}
			return u.withOOM(err)
		case err := <-failed:
			if d.ctx.Err() != nil {
				return fmt.Errorf("no longer watched, the farm gave up on it: %w", err)
			}
			ctx, cancel := context.WithTimeout(d.ctx, dockerTimeout)
			info, ierr := d.cli.ContainerInspect(ctx, u.id)
			cancel()
			switch {
			case cerrdefs.IsNotFound(ierr):
				return errors.New("container removed")
			case ierr == nil && info.State != nil && !info.State.Running:
				return u.withOOM(exitStatus(int64(info.State.ExitCode)))
			}
			d.f.log.Warn("lost the wait on a container, waiting again", "instance", u.inst.id,
				"container", shortID(u.id), "err", err)
			t := time.NewTimer(waitRetry)
			select {
			case <-d.ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

func exitStatus(code int64) error { return fmt.Errorf("exit status %d", code) }

// withOOM adds to err that the kernel killed the container for its memory
// limit, when it did.
func (u *containerUnit) withOOM(err error) error {
	ctx, cancel := context.WithTimeout(u.d.ctx, dockerTimeout)
	defer cancel()
	info, ierr := u.d.cli.ContainerInspect(ctx, u.id)
	if ierr == nil && info.State != nil && info.State.OOMKilled {
		return fmt.Errorf("%w (out of memory)", err)
	}
	return err
}

// cleanup reads the rest of the container's output and removes it.
func (u *containerUnit) cleanup() {
	if u.logsDone != nil {
		t := time.NewTimer(ioDrain)
		select {
		case <-u.logsDone:
		case <-t.C:
		}
		t.Stop()
		u.stopLogs()
		<-u.logsDone
	}
	u.stdout.flush()
	u.stderr.flush()
	u.remove()
}

// remove removes the container, also when the farm gave up on the daemon;
// what it cannot remove the next reconcile does.
func (u *containerUnit) remove() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.d.ctx), dockerTimeout)
	defer cancel()
	if _, err := u.d.remove(ctx, u.id); err != nil {
		u.d.f.log.Warn("cannot remove an instance's container; the reconcile will", "instance", u.inst.id, "err", err)
	}
}

// terminate has the daemon stop the container, with the stop grace (in
// whole seconds, at least one) as its timeout. It does not wait; after the
// runtime closed it does nothing.
func (u *containerUnit) terminate() {
	d := u.d
	secs := max(int(math.Ceil(d.f.stopGrace.Seconds())), 1)
	d.goTracked(func() {
		ctx, cancel := context.WithTimeout(d.ctx, time.Duration(secs)*time.Second+dockerTimeout)
		defer cancel()
		err := d.cli.ContainerStop(ctx, u.id, container.StopOptions{Timeout: &secs})
		if err != nil && !cerrdefs.IsNotFound(err) && ctx.Err() == nil {
			d.f.log.Warn("cannot stop container", "instance", u.inst.id, "container", shortID(u.id), "err", err)
		}
	})
}

func (u *containerUnit) kill() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.d.ctx), dockerTimeout)
	defer cancel()
	err := u.d.cli.ContainerKill(ctx, u.id, "KILL")
	// Conflict: it is not running (any more).
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		u.d.f.log.Warn("cannot kill container", "instance", u.inst.id, "container", shortID(u.id), "err", err)
	}
}

// owns: the probe reached the container's own address.
func (u *containerUnit) owns(int) (bool, bool)     { return true, true }
func (u *containerUnit) notified() <-chan struct{} { return nil }
func (u *containerUnit) stderrTail() string        { return u.stderr.lastLine() }
func (u *containerUnit) pid() int                  { return 0 }
func (u *containerUnit) container() string         { return shortID(u.id) }
func (u *containerUnit) String() string            { return "container " + shortID(u.id) }

// shortID is the 12-character form of a container id.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
