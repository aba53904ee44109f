package convert

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/dockertest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// BenchmarkRunnerOverhead is what one converter command costs a runner
// beyond the converter's own work: the fake converter writing its small
// GLB, as a plain process, as a process limited through prlimit, and in a
// container of its own.
func BenchmarkRunnerOverhead(b *testing.B) {
	prog := convtest.Build(b)
	run := func(b *testing.B, r Runner, prog string) {
		dir := b.TempDir()
		inv := Invocation{Argv: []string{prog, filepath.Join(dir, "out.glb")}, Dir: dir,
			Mounts: []Mount{{Path: dir, Writable: true}}}
		b.ReportAllocs()
		for b.Loop() {
			if out, err := r.Run(b.Context(), inv); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	}
	b.Run("process", func(b *testing.B) { run(b, &ProcessRunner{}, prog) })
	b.Run("prlimit", func(b *testing.B) {
		testutil.Program(b, "prlimit", "util-linux")
		run(b, &ProcessRunner{Memory: 2 << 30, CPUTime: time.Minute}, prog)
	})
	b.Run("docker", func(b *testing.B) {
		cli := dockertest.Client(b)
		r, err := NewDockerRunner(b.Context(), DockerConfig{Image: convtest.Image(b, cli), Client: cli,
			Owner: "bench-" + randomHex(), Memory: 256 << 20, CPUs: 1, CPUTime: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		run(b, r, convtest.ImagePath)
	})
}
