package convert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-units"
)

// ErrRunner marks a runner that could not run a converter at all: the
// Docker daemon failed, say. It is no fault of the input; the conversion
// is worth another attempt, elsewhere.
var ErrRunner = errors.New("converter runtime failed")

// LabelConverter is the label on every container a DockerRunner creates;
// its value is the runner's Owner.
const LabelConverter = "drover.converter"

// DefaultConverterPids is a converter container's default process limit:
// room for xvfb-run, Xvfb, f3d and llvmpipe's threads.
const DefaultConverterPids = 1024

// dockerCallTimeout bounds one call to the daemon, but for the wait on a
// running converter.
const dockerCallTimeout = 30 * time.Second

// DockerConfig configures a DockerRunner.
type DockerConfig struct {
	// Image holds the converters, on the Docker host: drover never pulls
	// it. Required.
	Image string
	// Memory is each container's memory limit, in bytes, with no swap on
	// top; 0 for none. The kernel kills a converter that needs more.
	Memory int64
	// CPUs is each container's share of the CPUs (1.5: one and a half);
	// 0 for no limit.
	CPUs float64
	// CPUTime limits each process's CPU time (RLIMIT_CPU), rounded up to
	// whole seconds; 0 for no limit.
	CPUTime time.Duration
	// Pids limits the processes and threads of a container; 0 for
	// DefaultConverterPids, -1 for no limit.
	Pids int64
	// Owner is LabelConverter's value on the containers: the farm's id. At
	// start the runner removes the containers of its owner that a killed
	// run left behind, so owners must be unique per Docker host. "" for no
	// such sweep.
	Owner string
	// Labels are added to the containers' labels.
	Labels map[string]string
	// User runs the converters, "uid:gid"; default drover's own, so that
	// the files they write are drover's.
	User string
	// Client is the daemon's client; nil for one of the daemon DOCKER_HOST
	// names (the local one by default), which Close closes.
	Client *client.Client
	Logger *slog.Logger
}

// DockerRunner runs each converter command in a container of its own, as
// HOOPS' Docker guide runs its converter: from the configured image, with
// the work directory and the inputs bind-mounted at the same paths (so the
// Docker host must be this machine), no network, no capabilities, a
// read-only root with a private /tmp, and the memory, CPU, CPU time and
// process limits. The container is removed when the command ends, and
// killed first when its context ends. A converter the kernel killed for
// the memory limit is a *LimitError.
type DockerRunner struct {
	cfg     DockerConfig
	cli     *client.Client
	ownsCli bool
	log     *slog.Logger
}

var _ Runner = (*DockerRunner)(nil)

// NewDockerRunner connects to the daemon, checks that it has the image,
// and removes the containers of the owner's previous run.
func NewDockerRunner(ctx context.Context, cfg DockerConfig) (_ *DockerRunner, err error) {
	if cfg.Image == "" {
		return nil, errors.New("convert: the docker converter runtime needs an image holding the converters (--converter-image)")
	}
	if cfg.Memory < 0 || cfg.CPUs < 0 || cfg.CPUTime < 0 || cfg.Pids < -1 {
		return nil, errors.New("convert: negative converter limits")
	}
	if cfg.Memory > 0 && cfg.Memory < 6<<20 {
		return nil, fmt.Errorf("convert: a converter container's memory limit must be at least 6 MiB, not %s", FormatBytes(cfg.Memory))
	}
	if cfg.Pids == 0 {
		cfg.Pids = DefaultConverterPids
	}
	if cfg.User == "" {
		cfg.User = fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &DockerRunner{cfg: cfg, cli: cfg.Client, log: cfg.Logger}
	if r.cli == nil {
		if r.cli, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
			return nil, fmt.Errorf("convert: docker client: %w", err)
		}
		r.ownsCli = true
	}
	defer func() {
		if err != nil {
			_ = r.Close()
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	if _, err := r.cli.Ping(cctx); err != nil {
		return nil, fmt.Errorf("convert: the docker converter runtime needs a Docker daemon: %w", err)
	}
	if _, err := r.cli.ImageInspect(cctx, cfg.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("convert: the converter image %q is not on the Docker host; build it with the converters "+
				"(docs/conversion.md has a Dockerfile): drover does not pull converter images", cfg.Image)
		}
		return nil, fmt.Errorf("convert: converter image %q: %w", cfg.Image, err)
	}
	if cfg.Owner != "" {
		n, err := r.removeLeftovers(cctx)
		if err != nil {
			return nil, fmt.Errorf("convert: remove the converter containers of a previous run: %w", err)
		}
		if n > 0 {
			r.log.Warn("removed converter containers left by a previous run", "owner", cfg.Owner, "containers", n)
		}
	}
	return r, nil
}

// Close closes the daemon's client, when the runner made it.
func (r *DockerRunner) Close() error {
	if r.ownsCli {
		return r.cli.Close()
	}
	return nil
}

// Image is the converters' image.
func (r *DockerRunner) Image() string { return r.cfg.Image }

// removeLeftovers removes every container labelled with the runner's
// owner: the runner has none of its own yet.
func (r *DockerRunner) removeLeftovers(ctx context.Context) (int, error) {
	list, err := r.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelConverter+"="+r.cfg.Owner))})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, c := range list {
		if err := r.remove(ctx, c.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return len(list), errors.Join(errs...)
}

// remove removes a container with force; one that is gone, or going, is
// removed.
func (r *DockerRunner) remove(ctx context.Context, id string) error {
	err := r.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
		return nil
	}
	return err
}

// Run implements Runner.
func (r *DockerRunner) Run(ctx context.Context, inv Invocation) (_ []byte, err error) {
	cfg, host, err := r.containerConfig(inv)
	if err != nil {
		return nil, err
	}
	// The create runs to its end even when ctx ends: cut short, the daemon
	// may create the container all the same, and nobody would remove it.
	bg := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(bg, dockerCallTimeout)
	name := "drover-convert-" + randomHex()
	created, err := r.cli.ContainerCreate(cctx, cfg, host, nil, nil, name)
	cancel()
	id := created.ID
	if err != nil {
		id = name // if the daemon made it after all, its name is ours
	}
	defer func() {
		rctx, cancel := context.WithTimeout(bg, dockerCallTimeout)
		defer cancel()
		if rerr := r.remove(rctx, id); rerr != nil {
			r.log.Warn("cannot remove a converter container; the next start of the farm will", "container", shortContainerID(id), "err", rerr)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: create a container of %s: %w", ErrRunner, r.cfg.Image, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	err = r.cli.ContainerStart(sctx, id, container.StartOptions{})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: start its container: %w", ErrRunner, inv.Argv[0], err)
	}
	killed := false
	wctx, stopWait := context.WithCancel(bg)
	defer stopWait()
	done, failed := r.cli.ContainerWait(wctx, id, container.WaitConditionNotRunning)
	select {
	case <-done:
	case err := <-failed:
		return nil, fmt.Errorf("%w: %s: wait for its container: %w", ErrRunner, inv.Argv[0], err)
	case <-ctx.Done():
		killed = true
		kctx, cancel := context.WithTimeout(bg, dockerCallTimeout)
		err := r.cli.ContainerKill(kctx, id, "KILL")
		cancel()
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			r.log.Warn("cannot kill a converter container", "container", shortContainerID(id), "err", err)
		}
	}
	ictx, cancel := context.WithTimeout(bg, dockerCallTimeout)
	defer cancel()
	output := r.output(ictx, id)
	if killed {
		return output, ctx.Err()
	}
	info, err := r.cli.ContainerInspect(ictx, id)
	if err != nil || info.State == nil {
		return output, fmt.Errorf("%w: %s: inspect its container: %w", ErrRunner, inv.Argv[0], err)
	}
	st := info.State
	switch {
	case st.OOMKilled && r.cfg.Memory > 0:
		return output, fmt.Errorf("%w: %s: %w", ErrToolFailed, inv.Argv[0], &LimitError{Kind: LimitMemory, Value: FormatBytes(r.cfg.Memory)})
	case r.cfg.CPUTime > 0 && (st.ExitCode == 128+24 || st.ExitCode == 128+9): // SIGXCPU, or SIGKILL at the hard limit
		secs := (r.cfg.CPUTime + time.Second - 1) / time.Second * time.Second
		return output, fmt.Errorf("%w: %s: %w", ErrToolFailed, inv.Argv[0], &LimitError{Kind: LimitCPUTime, Value: formatDuration(secs)})
	case st.ExitCode != 0:
		return output, fmt.Errorf("%w: %s: exit status %d", ErrToolFailed, inv.Argv[0], st.ExitCode)
	}
	return output, nil
}

// containerConfig is the container of one invocation.
func (r *DockerRunner) containerConfig(inv Invocation) (*container.Config, *container.HostConfig, error) {
	labels := maps.Clone(r.cfg.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelConverter] = r.cfg.Owner
	cfg := &container.Config{
		Image:      r.cfg.Image,
		Entrypoint: inv.Argv[:1],
		Cmd:        inv.Argv[1:],
		WorkingDir: inv.Dir,
		User:       r.cfg.User,
		Env:        []string{"HOME=/tmp", "TMPDIR=/tmp"},
		Labels:     labels,
		// No network, so no need of a hostname that resolves.
		NetworkDisabled: true,
	}
	var mounts []mount.Mount
	for _, m := range inv.Mounts {
		src, err := filepath.EvalSymlinks(m.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: mount %s: %w", ErrRunner, m.Path, err)
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: src, Target: m.Path, ReadOnly: !m.Writable})
	}
	pids := r.cfg.Pids
	host := &container.HostConfig{
		Mounts:         mounts,
		NetworkMode:    "none",
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,nosuid,nodev,mode=1777"},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:    r.cfg.Memory,
			NanoCPUs:  int64(r.cfg.CPUs * 1e9),
			PidsLimit: &pids,
		},
	}
	if r.cfg.Memory > 0 {
		host.MemorySwap = r.cfg.Memory // no swap on top
	}
	if r.cfg.CPUTime > 0 {
		s := int64((r.cfg.CPUTime + time.Second - 1) / time.Second)
		host.Ulimits = []*units.Ulimit{{Name: "cpu", Soft: s, Hard: s + 1}}
	}
	return cfg, host, nil
}

// output is the tail of a container's output.
func (r *DockerRunner) output(ctx context.Context, id string) []byte {
	rc, err := r.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "1000"})
	if err != nil {
		return nil
	}
	defer rc.Close()
	var out tailBuffer
	_, _ = stdcopy.StdCopy(&out, &out, rc)
	return out.Bytes()
}

func shortContainerID(id string) string {
	if len(id) > 12 && !strings.HasPrefix(id, "drover-") {
		return id[:12]
	}
	return id
}

// ParseBytes reads a size as people write limits: 2GiB, 512MiB, 512m, 2g,
// or a number of bytes.
func ParseBytes(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: want one such as 512MiB or 2GiB", s)
	}
	return n, nil
}
