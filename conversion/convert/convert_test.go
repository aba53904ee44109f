package convert

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/safezip"
	"github.com/drover-dev/drover/internal/testkit/convtest"
)

func newConverter(t *testing.T, cfg Config) *Converter {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	return c
}

func runCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// requireOutputs checks the outputs' names, types and sizes against the
// output directory, which holds them and nothing else.
func requireOutputs(t *testing.T, dir string, outs []Output, want ...Output) {
	t.Helper()
	require.Len(t, outs, len(want))
	for i, o := range outs {
		require.Equal(t, want[i].Name, o.Name)
		require.Equal(t, want[i].Type, o.Type)
		fi, err := os.Stat(filepath.Join(dir, o.Name))
		require.NoError(t, err)
		require.Equal(t, fi.Size(), o.Size)
		require.Positive(t, o.Size)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, len(want), "only the outputs, no work directory")
}

// TestConvertModels converts each kind of model with the real converters
// into the default outputs, a GLB and a PNG, and checks both.
func TestConvertModels(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	tests := []struct {
		file, name string
		triangles  int
		nodes      []string
	}{
		{"cube.stl", "cube.stl", 12, nil},
		{"cube.obj", "Cube.OBJ", 12, nil},
		{"asm.step", "assembly.step", 24, []string{"Assembly", "Bracket", "Bolt"}},
		{"part.igs", "plate.iges", 12, []string{"Plate"}},
		{"part.brep", "bolt.brep", 12, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{})
			it := newItem(t)
			start := time.Now()
			outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, tt.file)), Name: tt.name, Dir: it.dir, OutputDir: it.out})
			require.NoError(t, err)
			t.Logf("%s: converted to GLB and PNG in %s", tt.name, time.Since(start).Round(time.Millisecond))
			requireOutputs(t, it.out, outs,
				Output{Name: tt.name + ".glb", Type: TypeGLB}, Output{Name: tt.name + ".png", Type: TypePNG})
			info, err := InspectGLBFile(filepath.Join(it.out, tt.name+".glb"))
			require.NoError(t, err)
			require.Equal(t, tt.triangles, info.Triangles)
			for _, n := range tt.nodes {
				require.Contains(t, info.Nodes, n)
			}
			requireNotBlank(t, filepath.Join(it.out, tt.name+".png"), 640, 480)
			it.untouched(t)
		})
	}
}

// TestConvertOutputs asks for every output type and non-default options.
func TestConvertOutputs(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	for _, tt := range []struct{ file, name string }{{"asm.step", "asm.stp"}, {"cube.stl", "cube.stl"}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{})
			it := newItem(t)
			start := time.Now()
			outs, err := c.Run(runCtx(t), Job{
				Input: it.upload(t, filepath.Join(fx, tt.file)), Name: tt.name, Dir: it.dir, OutputDir: it.out,
				CommandLine: []string{"*", "--output_stl", "--output_obj", "mesh.obj", "--output_png_resolution", "320x240"},
			})
			require.NoError(t, err)
			t.Logf("%s: GLB, PNG, STL and OBJ in %s", tt.name, time.Since(start).Round(time.Millisecond))
			want := []Output{
				{Name: tt.name + ".glb", Type: TypeGLB}, {Name: tt.name + ".png", Type: TypePNG},
				{Name: tt.name + ".stl", Type: TypeSTL}, {Name: "mesh.obj", Type: TypeOBJ},
			}
			if len(outs) == 5 { // assimp writes a material file when there are materials
				want = append(want, Output{Name: "mesh.mtl", Type: TypeMTL})
			}
			requireOutputs(t, it.out, outs, want...)
			requireNotBlank(t, filepath.Join(it.out, tt.name+".png"), 320, 240)
			stl, err := os.ReadFile(filepath.Join(it.out, tt.name+".stl"))
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(stl), 84+12*50, "a binary STL of at least the cube's 12 triangles")
			obj, err := os.ReadFile(filepath.Join(it.out, "mesh.obj"))
			require.NoError(t, err)
			require.Contains(t, string(obj), "\nf ")
			it.untouched(t)
		})
	}
}

// TestConvertOnlyPNG makes a CAD thumbnail: the GLB it is rendered from is
// not an output.
func TestConvertOnlyPNG(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	c := newConverter(t, Config{})
	it := newItem(t)
	outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, "asm.step")), Name: "a.step",
		Dir: it.dir, OutputDir: it.out, CommandLine: []string{"--output_png", "thumb.png", "--background_color", "1,1,1"}})
	require.NoError(t, err)
	requireOutputs(t, it.out, outs, Output{Name: "thumb.png", Type: TypePNG})
	requireNotBlank(t, filepath.Join(it.out, "thumb.png"), 640, 480)
}

// TestConvertZip converts archives with the real converters, and refuses
// the bad ones with the HOOPS conversion server's reasons. Nothing is ever
// written outside the item's directory, and a failure leaves no output.
func TestConvertZip(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(fx, name))
		require.NoError(t, err)
		return b
	}
	step, stl, obj := read("asm.step"), read("cube.stl"), read("cube.obj")
	bomb := bytes.Repeat([]byte{0}, 16<<20)
	tests := []struct {
		name      string
		entries   []convtest.ZipEntry
		startPath string
		reason    Reason
		is        error
		nodes     []string
	}{
		{name: "assembly with startPath", startPath: "assembly/top.step", nodes: []string{"Bracket", "Bolt"}, entries: []convtest.ZipEntry{
			{Name: "assembly/", Mode: os.ModeDir | 0o755},
			{Name: "assembly/top.step", Body: step},
			{Name: "assembly/parts/cube.stl", Body: stl},
			{Name: "readme.txt", Body: []byte("an assembly")},
		}},
		{name: "startPath cleaned", startPath: "./assembly//top.step", nodes: []string{"Bracket", "Bolt"}, entries: []convtest.ZipEntry{
			{Name: "assembly/top.step", Body: step}, {Name: "cube.obj", Body: obj},
		}},
		{name: "one model", nodes: []string{"Bracket", "Bolt"}, entries: []convtest.ZipEntry{
			{Name: "model/top.step", Body: step},
			{Name: "__MACOSX/model/._top.step", Body: []byte("resource fork")},
			{Name: "notes.txt", Body: []byte("one model")},
		}},
		{name: "several models", reason: ReasonStartPath, is: ErrStartPathNeeded, entries: []convtest.ZipEntry{
			{Name: "a/top.step", Body: step}, {Name: "b/cube.stl", Body: stl},
		}},
		{name: "no model", reason: ReasonConversion, is: ErrNoModel, entries: []convtest.ZipEntry{
			{Name: "notes.txt", Body: []byte("nothing to convert")},
		}},
		{name: "startPath missing", startPath: "assembly/nope.step", reason: ReasonConversion, is: ErrNoModel, entries: []convtest.ZipEntry{
			{Name: "assembly/top.step", Body: step},
		}},
		{name: "startPath escapes", startPath: "../upload.bin", reason: ReasonConversion, is: ErrNoModel, entries: []convtest.ZipEntry{
			{Name: "assembly/top.step", Body: step},
		}},
		{name: "startPath unsupported", startPath: "notes.txt", reason: ReasonConversion, is: ErrUnsupported, entries: []convtest.ZipEntry{
			{Name: "assembly/top.step", Body: step}, {Name: "notes.txt", Body: []byte("x")},
		}},
		{name: "parent entries", reason: ReasonUnzip, is: safezip.ErrUnsafeEntry, entries: []convtest.ZipEntry{
			{Name: "assembly/top.step", Body: step},
			{Name: "../evil.step", Body: step},
			{Name: "assembly/../../../evil.txt", Body: []byte("x")},
		}},
		{name: "absolute entry", reason: ReasonUnzip, is: safezip.ErrUnsafeEntry, entries: []convtest.ZipEntry{
			{Name: "top.step", Body: step}, {Name: "/tmp/evil.step", Body: step},
		}},
		{name: "symlink entry", reason: ReasonUnzip, is: safezip.ErrUnsafeEntry, entries: []convtest.ZipEntry{
			{Name: "link", Mode: os.ModeSymlink | 0o777, Body: []byte("..")},
			{Name: "link/evil.step", Body: step},
			{Name: "top.step", Body: step},
		}},
		{name: "zip bomb", reason: ReasonUnzip, is: safezip.ErrLimit, entries: []convtest.ZipEntry{
			{Name: "top.step", Body: step}, {Name: "zeros.stl", Body: bomb},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{})
			it := newItem(t)
			start := time.Now()
			outs, err := c.Run(runCtx(t), Job{
				Input: it.uploadBytes(t, convtest.Zip(t, tt.entries...)), Name: "upload.zip",
				Dir: it.dir, OutputDir: it.out, StartPath: tt.startPath,
			})
			it.untouched(t)
			require.NoFileExists(t, filepath.Join(it.parent, "evil.step"))
			require.NoFileExists(t, filepath.Join(it.parent, "evil.txt"))
			if tt.reason != "" {
				var ce *Error
				require.ErrorAs(t, err, &ce)
				require.Equal(t, tt.reason, ce.Reason)
				require.Equal(t, "ERROR - "+string(tt.reason), ce.State())
				require.ErrorIs(t, err, tt.is)
				require.NotEmpty(t, ce.Detail)
				t.Logf("%s: %s, detailedError %q", tt.name, ce.State(), ce.Detail)
				entries, rerr := os.ReadDir(it.out)
				require.NoError(t, rerr)
				require.Empty(t, entries, "a failed conversion leaves no output")
				if tt.reason == ReasonUnzip {
					require.NoDirExists(t, filepath.Join(it.dir, zipDir), "nothing half-unpacked stays")
				}
				return
			}
			require.NoError(t, err)
			t.Logf("%s: unpacked and converted in %s", tt.name, time.Since(start).Round(time.Millisecond))
			requireOutputs(t, it.out, outs,
				Output{Name: "upload.zip.glb", Type: TypeGLB}, Output{Name: "upload.zip.png", Type: TypePNG})
			info, err := InspectGLBFile(filepath.Join(it.out, "upload.zip.glb"))
			require.NoError(t, err)
			for _, n := range tt.nodes {
				require.Contains(t, info.Nodes, n)
			}
			requireNotBlank(t, filepath.Join(it.out, "upload.zip.png"), 640, 480)
		})
	}
}

// TestConvertFailures feeds the converters broken files: each ends in
// Conversion Error with the converter's own words as the detail.
func TestConvertFailures(t *testing.T) {
	t.Parallel()
	requireTools(t)
	tests := []struct {
		name, body string
	}{
		{"broken.step", "ISO-10303-21;\nHEADER;\nthis is not STEP\n"},
		{"broken.igs", "not IGES either"},
		{"broken.stl", "solid x\n  facet normal\n"},
		{"empty.obj", ""},
		{"broken.3mf", "PK not really a zip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{})
			it := newItem(t)
			_, err := c.Run(runCtx(t), Job{Input: it.uploadBytes(t, []byte(tt.body)), Name: tt.name, Dir: it.dir, OutputDir: it.out})
			var ce *Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, ReasonConversion, ce.Reason)
			require.ErrorIs(t, err, ErrToolFailed)
			require.NotEmpty(t, ce.Detail)
			require.LessOrEqual(t, len(ce.Detail), maxDetail+len("…"))
			require.NotContains(t, ce.Detail, it.dir, "no server path in the detail")
			t.Logf("%s: %v\ndetailedError: %s", tt.name, err, ce.Detail)
			entries, rerr := os.ReadDir(it.out)
			require.NoError(t, rerr)
			require.Empty(t, entries)
			it.untouched(t)
		})
	}
}

// TestConvertRefusesEarly covers the errors found before any converter
// runs.
func TestConvertRefusesEarly(t *testing.T) {
	t.Parallel()
	c := newConverter(t, Config{})
	it := newItem(t)
	input := it.uploadBytes(t, []byte("x"))
	_, err := c.Run(t.Context(), Job{Input: input, Name: "model.catpart", Dir: it.dir, OutputDir: it.out})
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, ReasonConversion, ce.Reason)
	require.ErrorIs(t, err, ErrUnsupported)
	require.Contains(t, ce.Detail, ".catpart files are not supported")

	_, err = c.Run(t.Context(), Job{Input: input, Name: "m.stl", Dir: it.dir, OutputDir: it.out, CommandLine: []string{"--output_scs"}})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, ReasonConversion, ce.Reason)
	require.ErrorIs(t, err, ErrCommandLine)

	_, err = c.Run(t.Context(), Job{Input: input, Name: "broken.zip", Dir: it.dir, OutputDir: it.out})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, ReasonUnzip, ce.Reason)
	require.ErrorIs(t, err, safezip.ErrCorrupt)
	it.untouched(t)
}

// slowTool runs a program that outlives any timeout, and starts a child
// that would outlive it too if the process group were not killed.
type slowTool struct{ pidFile string }

func (s slowTool) Command(_, _, _ string) (Command, error) {
	return Command{Argv: []string{"sh", "-c", `sleep 60 & echo $! > "$0"; wait`, s.pidFile}}, nil
}

// TestConvertTimeout checks that a converter that runs too long is killed
// with its whole process group, and the conversion ends in Conversion
// Error; a caller that gives up gets its context's error instead.
func TestConvertTimeout(t *testing.T) {
	t.Parallel()
	for _, callerGivesUp := range []bool{false, true} {
		name := "timeout"
		if callerGivesUp {
			name = "caller gives up"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			it := newItem(t)
			pidFile := filepath.Join(it.dir, "pid")
			reg := &Registry{byExt: map[string]Entry{".slow": {GLB: slowTool{pidFile}}}}
			// Long enough for the shell to start its background sleep and
			// write its pid on a loaded machine (one CI run took 270 ms to
			// get that far under a 300 ms timeout): what the test checks is
			// that the sleep does not outlive the step.
			timeout := 3 * time.Second
			if callerGivesUp {
				timeout = time.Minute
			}
			c := newConverter(t, Config{Registry: reg, Timeout: timeout})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if callerGivesUp {
				// The caller gives up once the step runs its sleep.
				go func() {
					for ctx.Err() == nil {
						if b, err := os.ReadFile(pidFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
							cancel()
							return
						}
						time.Sleep(10 * time.Millisecond) // polling a file the tool writes: no event to wait on
					}
				}()
			}
			start := time.Now()
			_, err := c.Run(ctx, Job{Input: it.uploadBytes(t, []byte("x")), Name: "m.slow", Dir: it.dir, OutputDir: it.out,
				CommandLine: []string{"--output_glb"}})
			require.Less(t, time.Since(start), 20*time.Second)
			var ce *Error
			if callerGivesUp {
				require.ErrorIs(t, err, context.Canceled)
				require.False(t, errors.As(err, &ce), "not the input's fault: no *Error")
			} else {
				require.ErrorAs(t, err, &ce)
				require.Equal(t, ReasonConversion, ce.Reason)
				require.ErrorIs(t, err, ErrTimeout)
				require.Equal(t, "converter timed out after 3s", ce.Detail)
			}
			pid, err := os.ReadFile(pidFile)
			require.NoError(t, err)
			requireGone(t, string(bytes.TrimSpace(pid)))
		})
	}
}

// requireGone waits for a process to be gone or a zombie.
func requireGone(t *testing.T, pid string) {
	t.Helper()
	require.Eventually(t, func() bool {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return true
		}
		// The state follows the command name in parentheses.
		i := bytes.LastIndexByte(stat, ')')
		return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
	}, 5*time.Second, 20*time.Millisecond, "the converter's child %s outlived it", pid)
}
