package convert

import (
	"image"
	"image/color"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The steps a plan runs, as command lines: the exact argv of each
// converter, and the Draw script with server-chosen paths only.
func TestPlanCommands(t *testing.T) {
	t.Parallel()
	c := newConverter(t, Config{})
	out := t.TempDir()
	// A hostile item name and startPath: they must reach neither the Tcl
	// nor a flag position.
	evil := `x} ; exec touch /tmp/pwned ; {[exec id]$HOME.step`
	p, err := c.Plan(Request{Model: "/srv/items/42/zip/" + evil, Format: evil, Name: "-rf " + evil, OutputDir: out,
		Options: DefaultOptions()})
	require.NoError(t, err)
	work := p.work
	require.Equal(t, out, filepath.Dir(work))
	require.True(t, strings.HasPrefix(filepath.Base(work), workPrefix))
	tmp := filepath.Join(work, tmpDir)
	require.Equal(t, filepath.Join(tmp, "input.step"), p.input, "CAD is read under a server-chosen name")

	require.Len(t, p.Steps, 2)
	draw := p.Steps[0]
	require.Equal(t, TypeGLB, draw.Type)
	require.Equal(t, []string{"occt-draw", "-b", "-f", filepath.Join(tmp, "convert.tcl")}, draw.Command.Argv)
	require.Len(t, draw.Command.Files, 1)
	script := string(draw.Command.Files[0].Data)
	require.Equal(t, `pload MODELING OCAF XDE
if {[catch {
  ReadStep D {`+tmp+`/input.step}
  XGetOneShape s D
  incmesh s 0.001 -prs
  WriteGltf D {`+tmp+`/model.glb} -mergeFaces -nodeNameFormat prodOrInst
} err]} {
  puts "drover: draw failed: $err"
}
exit
`, script)
	require.NotContains(t, script, "pwned")

	thumb := p.Steps[1]
	require.Equal(t, []string{
		"xvfb-run", "-a", "-s", "-screen 0 1280x1024x24",
		"f3d", filepath.Join(tmp, "model.glb"),
		"--output", filepath.Join(tmp, "thumbnail.png"),
		"--resolution", "640,480", "--bg-color", "1,1,1", "--dry-run",
		"--camera-azimuth-angle", "35", "--camera-elevation-angle", "25", "--fxaa",
	}, thumb.Command.Argv)
	// Output names: the item's last path element, flags and all; they are
	// file names in the output directory, never arguments.
	require.Equal(t, []Output{
		{Name: "-rf x} ; exec touch /tmp/pwned ; {[exec id]$HOME.step.glb"[len("-rf x} ; exec touch /tmp/"):], Type: TypeGLB},
		{Name: "pwned ; {[exec id]$HOME.step.png", Type: TypePNG},
	}, p.Outputs)
}

func TestPlanMesh(t *testing.T) {
	t.Parallel()
	c := newConverter(t, Config{Programs: Programs{Assimp: "/opt/assimp"}})
	out := t.TempDir()
	opts, err := ParseCommandLine([]string{"--output_glb", "--output_stl", "--output_obj", "--output_png", "--png_transparent_background", "1"})
	require.NoError(t, err)

	// A model whose own name carries its format is read as it is.
	p, err := c.Plan(Request{Model: "/srv/zip/part.STL", Format: "part.STL", Name: "part.zip", OutputDir: out, Options: opts})
	require.NoError(t, err)
	tmp := filepath.Join(p.work, tmpDir)
	require.Equal(t, "/srv/zip/part.STL", p.input)
	argv := func(i int) []string { return p.Steps[i].Command.Argv }
	require.Equal(t, []string{"/opt/assimp", "export", "/srv/zip/part.STL", filepath.Join(tmp, "model.glb"), "-fglb2"}, argv(0))
	require.Equal(t, []string{"/opt/assimp", "export", "/srv/zip/part.STL", filepath.Join(tmp, "model.stl"), "-fstlb"}, argv(1))
	require.Equal(t, []string{"/opt/assimp", "export", "/srv/zip/part.STL", filepath.Join(p.work, outDir, "part.zip.obj"), "-fobj"}, argv(2))
	require.Equal(t, "/srv/zip/part.STL", argv(3)[5], "f3d renders the mesh itself")
	require.Equal(t, "--no-background", argv(3)[len(argv(3))-1])

	// A server-chosen upload name says nothing of the format: it is linked
	// under one that does.
	p, err = c.Plan(Request{Model: "/srv/items/42/original", Format: "part.obj", Name: "part.obj", OutputDir: out, Options: DefaultOptions()})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(p.work, tmpDir, "input.obj"), p.input)
	require.Len(t, p.Steps, 2)

	// Only a thumbnail of a mesh: no GLB step at all.
	opts, err = ParseCommandLine([]string{"--output_png"})
	require.NoError(t, err)
	p, err = c.Plan(Request{Model: "/srv/m.ply", Format: "m.ply", Name: "m.ply", OutputDir: out, Options: opts})
	require.NoError(t, err)
	require.Len(t, p.Steps, 1)
	require.Equal(t, TypePNG, p.Steps[0].Type)

	// 3MF: f3d cannot read it, so the thumbnail comes from the GLB.
	p, err = c.Plan(Request{Model: "/srv/m.3mf", Format: "m.3mf", Name: "m.3mf", OutputDir: out, Options: opts})
	require.NoError(t, err)
	require.Len(t, p.Steps, 2)
	require.Equal(t, filepath.Join(p.work, tmpDir, "model.glb"), p.Steps[1].Command.Argv[5])
}

func TestPlanRefuses(t *testing.T) {
	t.Parallel()
	c := newConverter(t, Config{})
	out := t.TempDir()
	_, err := c.Plan(Request{Model: "/srv/m", Format: "m.dwg", Name: "m.dwg", OutputDir: out})
	require.ErrorIs(t, err, ErrUnsupported)
	_, err = c.Plan(Request{Model: "/srv/m", Format: "noext", Name: "noext", OutputDir: out})
	require.ErrorContains(t, err, `"noext" has no extension`)

	// Two outputs under one name.
	opts, err := ParseCommandLine([]string{"--output_glb", "--output_png", "m.stl.glb"})
	require.NoError(t, err)
	_, err = c.Plan(Request{Model: "/srv/m.stl", Format: "m.stl", Name: "m.stl", OutputDir: out, Options: opts})
	require.ErrorIs(t, err, ErrCommandLine)
	require.ErrorContains(t, err, "both be named")
	// The OBJ's material file against another output.
	opts, err = ParseCommandLine([]string{"--output_obj", "a.obj", "--output_stl", "A.mtl"})
	require.NoError(t, err)
	_, err = c.Plan(Request{Model: "/srv/m.stl", Format: "m.stl", Name: "m.stl", OutputDir: out, Options: opts})
	require.ErrorIs(t, err, ErrCommandLine)
	// No output takes the shattered parts' directory's name.
	opts, err = ParseCommandLine([]string{"--output_glb", "shattered"})
	require.NoError(t, err)
	_, err = c.Plan(Request{Model: "/srv/m.step", Format: "m.step", Name: "m.step", OutputDir: out, Options: opts})
	require.ErrorIs(t, err, ErrCommandLine)
	require.ErrorContains(t, err, "both be named")

	// A directory that cannot be brace-quoted never reaches the Tcl.
	_, err = c.Plan(Request{Model: "/srv/m.step", Format: "m.step", Name: "m.step", OutputDir: "/srv/out{x}"})
	require.ErrorContains(t, err, "cannot be brace-quoted")
}

func TestTclPath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"relative/x.step", "/a}b", "/a{b", `/a\b`, "/a\nb", "/a\rb", "/a\x00b"} {
		_, err := tclPath(p)
		require.Error(t, err, p)
	}
	got, err := tclPath("/srv/items/42/tmp/input.step")
	require.NoError(t, err)
	require.Equal(t, "{/srv/items/42/tmp/input.step}", got)
	// Inside braces Tcl substitutes nothing: $, [ and ; are plain.
	got, err = tclPath("/srv/$x [y];z")
	require.NoError(t, err)
	require.Equal(t, "{/srv/$x [y];z}", got)
}

func TestOutputBase(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"part.step":                       "part.step",
		"dir/part.step":                   "dir/part.step"[4:],
		`C:\models\part.step`:             "part.step",
		"../../etc/passwd":                "passwd",
		"..":                              "model",
		"":                                "model",
		".hidden.stl":                     "hidden.stl",
		"a\x00b\nc.stl":                   "abc.stl",
		"what?.stl":                       "what.stl",
		strings.Repeat("é", 150) + ".stl": strings.Repeat("é", 100),
	} {
		require.Equal(t, want, outputBase(in), "%q", in)
	}
}

func TestPickModel(t *testing.T) {
	t.Parallel()
	c := newConverter(t, Config{})
	files := []string{"asm/top.STEP", "asm/parts/bolt.stl", "readme.txt", "__MACOSX/asm/._top.STEP", ".git/x.obj"}
	got, err := c.pickModel(files, "asm/top.STEP")
	require.NoError(t, err)
	require.Equal(t, "asm/top.STEP", got)
	got, err = c.pickModel(files, "./asm//parts/bolt.stl")
	require.NoError(t, err)
	require.Equal(t, "asm/parts/bolt.stl", got)
	_, err = c.pickModel(files, "")
	require.ErrorIs(t, err, ErrStartPathNeeded)
	require.ErrorContains(t, err, "2 models: asm/top.STEP, asm/parts/bolt.stl")
	got, err = c.pickModel(files[2:], "")
	require.ErrorIs(t, err, ErrNoModel, "hidden files are never the model: %q", got)
	got, err = c.pickModel(files[1:], "")
	require.NoError(t, err)
	require.Equal(t, "asm/parts/bolt.stl", got)
	_, err = c.pickModel(files, "readme.txt")
	require.ErrorIs(t, err, ErrUnsupported)
	_, err = c.pickModel(files, "asm")
	require.ErrorIs(t, err, ErrNoModel)
}

func TestCleanStartPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"a.step": "a.step", "./a.step": "a.step", "dir//a.step": "dir/a.step", "dir/./a.step": "dir/a.step",
	} {
		got, err := CleanStartPath(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got)
	}
	for _, in := range []string{"/a.step", "../a.step", "dir/../../a.step", "dir/../a.step", `dir\a.step`, "dir/", ".", "a\x00"} {
		_, err := CleanStartPath(in)
		require.ErrorIs(t, err, ErrNoModel, in)
	}
}

func TestDetail(t *testing.T) {
	t.Parallel()
	out := "param = /srv/x.glb\nparam = -fglb2\nLaunching asset import ...           OK\n0 %\n50 %\n" +
		"\x1b[31;1mFile x does not exist\x1b[0m\nERROR: Failed to load file: broken\n\n"
	require.Equal(t, "File x does not exist\nERROR: Failed to load file: broken", detail([]byte(out)))
	long := strings.Repeat("line\n", 100) + strings.Repeat("é", 1000)
	d := detail([]byte(long))
	require.LessOrEqual(t, len(d), maxDetail+len("…"))
	require.True(t, strings.HasPrefix(d, "…"))
	require.True(t, strings.HasSuffix(d, "é"))
}

func TestUniform(t *testing.T) {
	t.Parallel()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	require.True(t, Uniform(img))
	img.Set(63, 47, color.Black)
	require.False(t, Uniform(img))
	gray := image.NewGray(image.Rect(0, 0, 8, 8))
	require.True(t, Uniform(gray))
	gray.Set(3, 3, color.White)
	require.False(t, Uniform(gray))
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	var tb tailBuffer
	_, _ = tb.Write([]byte(strings.Repeat("a", outputTail-1)))
	_, _ = tb.Write([]byte("bc"))
	got := tb.Bytes()
	require.Len(t, got, outputTail)
	require.True(t, strings.HasSuffix(string(got), "abc"))
	_, _ = tb.Write([]byte(strings.Repeat("z", 2*outputTail) + "end"))
	got = tb.Bytes()
	require.Len(t, got, outputTail)
	require.True(t, strings.HasSuffix(string(got), "zend"))
}

// FuzzCleanStartPath checks that an accepted startPath always names a path
// inside the unpacked archive.
func FuzzCleanStartPath(f *testing.F) {
	for _, s := range []string{"a.step", "./a//b.step", "../x", "/etc/passwd", `a\..\b`, "a/./../../b", "dir/"} {
		f.Add(s)
	}
	const base = "/srv/item/zip"
	f.Fuzz(func(t *testing.T, in string) {
		got, err := CleanStartPath(in)
		if err != nil {
			require.ErrorIs(t, err, ErrNoModel)
			return
		}
		require.Equal(t, base+"/"+got, filepath.Join(base, got))
		again, err := CleanStartPath(got)
		require.NoError(t, err)
		require.Equal(t, got, again)
	})
}
