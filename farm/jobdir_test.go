package farm_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
)

// startJobs runs job slots until the returned stop is called (or the test
// ends); stop returns Run's error.
func startJobs(t *testing.T, cfg farm.JobsConfig) (*farm.Jobs, func() error) {
	t.Helper()
	cfg.PollWait = time.Second
	j, err := farm.NewJobs(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	var err2 error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			err2 = <-done
		}
		return err2
	}
	t.Cleanup(func() { _ = stop() })
	require.Eventually(t, func() bool { return j.Dir() != "" }, 10*time.Second, 5*time.Millisecond,
		"Run holds a job directory")
	return j, stop
}

// Two farms of the same id on one machine (two test runs, a farm started
// again while the old one drains) must not sweep each other's running
// jobs: the second takes a directory of its own, and only what dead farms
// left is removed.
func TestJobsSameFarmTwiceKeepTheirDirectoriesApart(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	base := filepath.Join(tmp, "drover-jobs-same")
	// Left by farms that died: one in the default directory, one in a
	// sibling a second farm had used.
	for _, p := range []string{filepath.Join(base, "dead-1", "in"), filepath.Join(base+".2", "dead-2")} {
		require.NoError(t, os.MkdirAll(p, 0o700))
	}
	require.NoError(t, os.WriteFile(filepath.Join(base+".2", ".lock"), nil, 0o600))

	svc, _ := newJobService(t, queue.Options{})
	marks := t.TempDir()
	reg := convert.NewRegistry(convert.Programs{})
	reg.Register(".slow", convert.Entry{GLB: convert.Exec{Argv: []string{"sh", "-c",
		`touch "$1/started.$$"; sleep 30`, "sh", marks}}})
	conv, err := convert.New(convert.Config{Registry: reg})
	require.NoError(t, err)

	a, stopA := startJobs(t, farm.JobsConfig{Source: svc, Farm: "same", Slots: 1, Converter: conv})
	require.Equal(t, base, a.Dir(), "the default job directory")
	for _, p := range []string{filepath.Join(base, "dead-1"), filepath.Join(base+".2", "dead-2")} {
		require.NoFileExists(t, p, "what a dead farm left is swept")
		require.NoDirExists(t, p, "what a dead farm left is swept")
	}

	ctx := context.Background()
	_, err = svc.Upload(ctx, conversion.Options{CommandLine: []string{"--output_glb"}}, "a.slow", strings.NewReader("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(marks, "started.*"))
		return len(m) == 1
	}, 10*time.Second, 20*time.Millisecond)
	running, err := filepath.Glob(filepath.Join(base, "*", "in", "*"))
	require.NoError(t, err)
	if len(running) != 1 {
		var all []string
		_ = filepath.WalkDir(tmp, func(p string, _ os.DirEntry, _ error) error { all = append(all, p); return nil })
		t.Fatalf("want the running job's input in its directory, found %v", all)
	}

	// The same farm id again, while the first runs its job.
	b, stopB := startJobs(t, farm.JobsConfig{Source: svc, Farm: "same", Slots: 1, Converter: conv})
	require.Equal(t, base+".2", b.Dir(), "the second farm of the id takes the next directory")
	require.FileExists(t, running[0], "the first farm's running job keeps its files")
	require.Equal(t, 1, a.Busy())

	// A third, while both run.
	c, stopC := startJobs(t, farm.JobsConfig{Source: svc, Farm: "same", Slots: 1, Converter: conv})
	require.Equal(t, base+".3", c.Dir())
	require.FileExists(t, running[0])

	// Stopped farms let their directories go: the next farm takes the
	// first free one.
	require.NoError(t, stopA())
	require.NoError(t, stopC())
	d, stopD := startJobs(t, farm.JobsConfig{Source: svc, Farm: "same", Slots: 1, Converter: conv})
	require.Equal(t, base, d.Dir())
	require.NoError(t, stopD())
	require.NoError(t, stopB())
}

// An explicit WorkDir that another farm holds is handled the same way.
func TestJobsWorkDirInUseTakesASibling(t *testing.T) {
	svc, _ := newJobService(t, queue.Options{})
	dir := filepath.Join(t.TempDir(), "jobs")
	a, _ := startJobs(t, farm.JobsConfig{Source: svc, Farm: "x", Slots: 1, WorkDir: dir})
	b, _ := startJobs(t, farm.JobsConfig{Source: svc, Farm: "y", Slots: 1, WorkDir: dir})
	require.Equal(t, dir, a.Dir())
	require.Equal(t, dir+".2", b.Dir())
}
