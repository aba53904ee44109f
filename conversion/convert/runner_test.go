package convert

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/dockertest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// fakeConverter is a converter of ".fake" files to GLB by the fake
// converter at prog, run with flags before its {in} and {out}.
func fakeConverter(t *testing.T, prog string, cfg Config, flags ...string) *Converter {
	t.Helper()
	argv := append(append([]string{prog}, flags...), "{in}", "{out}")
	cfg.Registry = &Registry{byExt: map[string]Entry{".fake": {GLB: Exec{Argv: argv}}}}
	return newConverter(t, cfg)
}

// convertFake converts a ".fake" item to a GLB only.
func convertFake(t *testing.T, c *Converter) ([]Output, error) {
	t.Helper()
	it := newItem(t)
	outs, err := c.Run(runCtx(t), Job{Input: it.uploadBytes(t, []byte("fake")), Name: "part.fake", Dir: it.dir,
		OutputDir: it.out, CommandLine: []string{"--output_glb"}})
	it.untouched(t)
	if err == nil {
		requireOutputs(t, it.out, outs, Output{Name: "part.fake.glb", Type: TypeGLB})
	}
	return outs, err
}

// requireLimit checks that a conversion failed for a limit, with the
// limit's sentence as its detail.
func requireLimit(t *testing.T, err error, detail string) {
	t.Helper()
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, ReasonConversion, ce.Reason)
	require.ErrorIs(t, err, ErrLimit)
	require.Equal(t, detail, ce.Detail)
}

// TestProcessRunnerLimits runs the fake converter as a process with
// limits: within them it converts; one that takes more address space than
// its memory limit, or spins past its CPU time, or sleeps past the
// timeout, is killed and the conversion ends in Conversion Error saying
// which limit.
func TestProcessRunnerLimits(t *testing.T) {
	t.Parallel()
	testutil.Program(t, "prlimit", "util-linux")
	prog := convtest.Build(t)
	for _, tc := range []struct {
		name   string
		runner ProcessRunner
		flags  []string
		// timeout of the conversion; 0 for two minutes
		timeout time.Duration
		detail  string // "" for success
		notIs   error
	}{
		{name: "within limits", runner: ProcessRunner{Memory: 2 << 30, CPUTime: 10 * time.Second},
			flags: []string{"-alloc", "32MiB", "-spin", "100ms"}},
		{name: "memory", runner: ProcessRunner{Memory: 2 << 30},
			flags:  []string{"-alloc", "8GiB", "-virtual"},
			detail: "converter exceeded its memory limit of 2 GiB", notIs: ErrTimeout},
		{name: "CPU time", runner: ProcessRunner{CPUTime: time.Second},
			flags:  []string{"-spin", "0"},
			detail: "converter exceeded its CPU time limit of 1s", notIs: ErrTimeout},
		{name: "timeout", runner: ProcessRunner{Memory: 2 << 30, CPUTime: time.Minute},
			flags: []string{"-sleep", "1m"}, timeout: 500 * time.Millisecond,
			detail: "converter timed out after 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.runner
			require.NoError(t, r.Check())
			reg := prometheus.NewRegistry()
			c := fakeConverter(t, prog, Config{Runner: &r, Timeout: cmpDuration(tc.timeout, 2*time.Minute), Registerer: reg}, tc.flags...)
			// A converter not killed for its limit meets the timeout, and
			// the detail says so. On a loaded machine a second of CPU
			// takes many seconds.
			_, err := convertFake(t, c)
			if tc.detail == "" {
				require.NoError(t, err)
				return
			}
			requireLimit(t, err, tc.detail)
			result := "timeout"
			if tc.notIs != nil {
				require.NotErrorIs(t, err, tc.notIs)
				result = "limit"
			}
			mfs, err := reg.Gather()
			require.NoError(t, err)
			require.Len(t, mfs, 1)
			require.Equal(t, "drover_conversion_step_seconds", mfs[0].GetName())
			require.Len(t, mfs[0].GetMetric(), 1)
			labels := map[string]string{}
			for _, l := range mfs[0].GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			require.Equal(t, map[string]string{"type": "glb", "result": result}, labels)
		})
	}
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// TestProcessRunnerFailure: a converter that fails without hitting a
// limit is no LimitError, and its stderr is the detail.
func TestProcessRunnerFailure(t *testing.T) {
	t.Parallel()
	testutil.Program(t, "prlimit", "util-linux")
	c := fakeConverter(t, convtest.Build(t), Config{Runner: &ProcessRunner{Memory: 2 << 30, CPUTime: time.Minute}},
		"-stderr", "fakeconv: the model is broken", "-exit", "3")
	_, err := convertFake(t, c)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.NotErrorIs(t, err, ErrLimit)
	require.ErrorIs(t, err, ErrToolFailed)
	require.Equal(t, "fakeconv: the model is broken", ce.Detail)
}

// dockerRunner returns a runner of the fake converter's image whose owner
// is unique to the test, and checks when the test ends that no container
// of it is left.
func dockerRunner(t *testing.T, cfg DockerConfig) (*DockerRunner, *client.Client) {
	t.Helper()
	cli := dockertest.Client(t)
	cfg.Image = convtest.Image(t, cli)
	if cfg.Owner == "" {
		cfg.Owner = "test-" + randomHex()
	}
	cfg.Logger = testLogger(t)
	r, err := NewDockerRunner(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.Empty(t, dockertest.Containers(t, cli, LabelConverter, cfg.Owner), "converter containers left behind")
		require.NoError(t, r.Close())
	})
	return r, cli
}

// TestDockerRunner runs the fake converter in containers with limits: the
// container sees the memory limit in its cgroup and writes the output as
// drover's user; one that needs more memory is killed by the kernel, one
// that sleeps past the timeout is killed by drover, one that fails shows
// its stderr; no container is left behind.
func TestDockerRunner(t *testing.T) {
	t.Parallel()
	r, _ := dockerRunner(t, DockerConfig{Memory: 64 << 20, CPUs: 0.5, CPUTime: time.Minute})

	t.Run("limits inside", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		out, err := r.Run(runCtx(t), Invocation{
			Argv:   []string{convtest.ImagePath, "-cgroup", filepath.Join(dir, "memory"), filepath.Join(dir, "out.glb")},
			Dir:    dir,
			Mounts: []Mount{{Path: dir, Writable: true}},
		})
		require.NoError(t, err, "%s", out)
		limit, err := os.ReadFile(filepath.Join(dir, "memory"))
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(64<<20), string(limit), "the container's cgroup memory limit")
		_, err = InspectGLBFile(filepath.Join(dir, "out.glb"))
		require.NoError(t, err)
		fi, err := os.Stat(filepath.Join(dir, "out.glb"))
		require.NoError(t, err)
		require.Equal(t, uint32(os.Getuid()), fi.Sys().(*syscall.Stat_t).Uid, "written as drover's user")
	})
	t.Run("no network, read-only inputs", func(t *testing.T) {
		t.Parallel()
		dir, in := t.TempDir(), t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(in, "m.fake"), []byte("x"), 0o644))
		_, err := r.Run(runCtx(t), Invocation{
			Argv:   []string{convtest.ImagePath, filepath.Join(in, "m.fake"), filepath.Join(in, "out.glb")},
			Dir:    dir,
			Mounts: []Mount{{Path: dir, Writable: true}, {Path: in}},
		})
		require.ErrorIs(t, err, ErrToolFailed, "the input directory is read-only")
		require.NoFileExists(t, filepath.Join(in, "out.glb"))
	})
	t.Run("converts", func(t *testing.T) {
		t.Parallel()
		c := fakeConverter(t, convtest.ImagePath, Config{Runner: r})
		_, err := convertFake(t, c)
		require.NoError(t, err)
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		c := fakeConverter(t, convtest.ImagePath, Config{Runner: r}, "-alloc", "512MiB")
		_, err := convertFake(t, c)
		requireLimit(t, err, "converter exceeded its memory limit of 64 MiB")
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		c := fakeConverter(t, convtest.ImagePath, Config{Runner: r, Timeout: 2 * time.Second}, "-sleep", "5m")
		_, err := convertFake(t, c)
		requireLimit(t, err, "converter timed out after 2s")
		require.ErrorIs(t, err, ErrTimeout)
	})
	t.Run("runtime failure", func(t *testing.T) {
		t.Parallel()
		// A converter the image lacks: the container cannot start. That is
		// no fault of the input, so no *Error: the job is tried again.
		c := fakeConverter(t, "/no-such-converter", Config{Runner: r})
		_, err := convertFake(t, c)
		require.ErrorIs(t, err, ErrRunner)
		var ce *Error
		require.False(t, errors.As(err, &ce), "not the input's fault: %v", err)
	})
	t.Run("failure", func(t *testing.T) {
		t.Parallel()
		c := fakeConverter(t, convtest.ImagePath, Config{Runner: r}, "-stderr", "fakeconv: the model is broken", "-exit", "3")
		_, err := convertFake(t, c)
		var ce *Error
		require.ErrorAs(t, err, &ce)
		require.NotErrorIs(t, err, ErrLimit)
		require.Equal(t, "fakeconv: the model is broken", ce.Detail)
	})
}

// TestDockerRunnerCPUTime: a converter that spins past its CPU time in a
// container is killed by the kernel, and the conversion says which limit.
func TestDockerRunnerCPUTime(t *testing.T) {
	t.Parallel()
	r, _ := dockerRunner(t, DockerConfig{CPUTime: time.Second})
	c := fakeConverter(t, convtest.ImagePath, Config{Runner: r, Timeout: 2 * time.Minute}, "-spin", "0")
	_, err := convertFake(t, c)
	requireLimit(t, err, "converter exceeded its CPU time limit of 1s")
	require.NotErrorIs(t, err, ErrTimeout)
}

// TestDockerRunnerTimeoutRemoves checks that a converter container killed
// for the timeout is gone when the conversion returns.
func TestDockerRunnerTimeoutRemoves(t *testing.T) {
	t.Parallel()
	r, cli := dockerRunner(t, DockerConfig{})
	c := fakeConverter(t, convtest.ImagePath, Config{Runner: r, Timeout: time.Second}, "-sleep", "5m")
	ctx := runCtx(t)
	done := make(chan error, 1)
	go func() {
		_, err := convertFake(t, c)
		done <- err
	}()
	require.Eventually(t, func() bool {
		return len(dockertest.Containers(t, cli, LabelConverter, r.cfg.Owner)) == 1
	}, 20*time.Second, 50*time.Millisecond, "the converter's container runs")
	select {
	case err := <-done:
		requireLimit(t, err, "converter timed out after 1s")
	case <-ctx.Done():
		t.Fatal("the conversion did not end")
	}
	require.Empty(t, dockertest.Containers(t, cli, LabelConverter, r.cfg.Owner), "the container is removed")
}

// TestDockerRunnerChecks covers what NewDockerRunner refuses, and its
// sweep of a previous run's containers.
func TestDockerRunnerChecks(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	image := convtest.Image(t, cli)

	_, err := NewDockerRunner(t.Context(), DockerConfig{})
	require.ErrorContains(t, err, "needs an image")
	_, err = NewDockerRunner(t.Context(), DockerConfig{Image: "drover-no-such-image:never", Client: cli})
	require.ErrorContains(t, err, `the converter image "drover-no-such-image:never" is not on the Docker host`)

	owner := "test-" + randomHex()
	ctx := t.Context()
	for range 2 {
		_, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Labels: map[string]string{LabelConverter: owner}},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
		require.NoError(t, err)
	}
	require.Len(t, dockertest.Containers(t, cli, LabelConverter, owner), 2)
	r, err := NewDockerRunner(ctx, DockerConfig{Image: image, Owner: owner, Client: cli})
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.Empty(t, dockertest.Containers(t, cli, LabelConverter, owner), "the previous run's containers are removed")
}

// TestExecTemplates checks what a configured converter's command line is
// made of.
func TestExecTemplates(t *testing.T) {
	t.Parallel()
	e := Exec{Argv: []string{"conv", "{in}", "-o", "{out}", "--dir={outdir}", "--work", "{dir}", "--title", "{name}", "{name}.txt"}}
	for _, tc := range []struct{ name, want string }{
		{"part.step", "part.step"},
		{"../../etc/passwd", "passwd"},
		{`C:\models\wheel.igs`, "wheel.igs"},
		{"--help", "help"},
		{"-.-x.stl", "x.stl"},
		{".hidden\x00.obj", "hidden.obj"},
		{"", "model"},
		{"---", "model"},
		{"a b.stl", "a b.stl"},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			cmd, err := e.CommandNamed(StepPaths{In: "/w/in.stl", Out: "/w/tmp/model.glb", Dir: "/w/tmp", Name: tc.name})
			require.NoError(t, err)
			require.Equal(t, []string{"conv", "/w/in.stl", "-o", "/w/tmp/model.glb", "--dir=/w/tmp", "--work", "/w/tmp",
				"--title", tc.want, tc.want + ".txt"}, cmd.Argv)
		})
	}
	cmd, err := e.Command("/i", "/o/x", "/d")
	require.NoError(t, err)
	require.Equal(t, "model", cmd.Argv[8])
	_, err = Exec{}.Command("/i", "/o", "/d")
	require.Error(t, err)
}

// TestFormatBytes checks how limits are written in details.
func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		1000: "1000 B", 1 << 10: "1 KiB", 64 << 20: "64 MiB", 3 << 29: "1.5 GiB", 2 << 30: "2 GiB",
	} {
		require.Equal(t, want, FormatBytes(n))
	}
	for s, want := range map[string]int64{"2GiB": 2 << 30, "512m": 512 << 20, "64MiB": 64 << 20, "1048576": 1 << 20} {
		n, err := ParseBytes(s)
		require.NoError(t, err, s)
		require.Equal(t, want, n, s)
	}
	for _, s := range []string{"", "lots", "-1", "2 parsecs"} {
		_, err := ParseBytes(s)
		require.Error(t, err, s)
	}
}

// TestRealConvertersWithinLimits converts with the real converters, each
// process limited to 1 GiB of address space and a minute of CPU time: the
// limits leave them room (xvfb-run, Xvfb and f3d included).
func TestRealConvertersWithinLimits(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	testutil.Program(t, "prlimit", "util-linux")
	for _, file := range []string{"cube.stl", "asm.step"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{Runner: &ProcessRunner{Memory: 1 << 30, CPUTime: time.Minute}})
			it := newItem(t)
			outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, file)), Name: file, Dir: it.dir, OutputDir: it.out})
			require.NoError(t, err)
			requireOutputs(t, it.out, outs, Output{Name: file + ".glb", Type: TypeGLB}, Output{Name: file + ".png", Type: TypePNG})
			requireNotBlank(t, filepath.Join(it.out, file+".png"), 640, 480)
		})
	}
}

// FuzzTemplateName checks that {name} never gives a converter a path, a
// flag, a hidden name or a control character, whatever the item's name.
func FuzzTemplateName(f *testing.F) {
	for _, s := range []string{"part.step", "../../x", "--help", "-.-", "a\x00b", `C:\a\b.igs`, "\u202e.stl", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		n := TemplateName(name)
		require.NotEmpty(t, n)
		require.NotContains(t, "-.", n[:1], "%q starts with a dash or a dot", n)
		require.False(t, strings.ContainsAny(n, "/\\\x00\n\r"), "%q", n)
		for _, r := range n {
			require.False(t, r < 0x20 || r == 0x7f, "%q holds a control character", n)
		}
		require.LessOrEqual(t, len(n), 200)
	})
}
