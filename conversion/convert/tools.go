package convert

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// A Tool is one external converter: it makes the file out from the file in.
// Both are absolute, server-chosen paths (user text never reaches a Tool),
// out in a fresh work directory, dir.
type Tool interface {
	Command(in, out, dir string) (Command, error)
}

// Command is a process to run, never through a shell.
type Command struct {
	// Argv is the program and its arguments.
	Argv []string
	// Files are written before the process starts: a script, for one.
	Files []File
	// Check, if set, finds the failures the program's exit status hides in
	// its output (stdout and stderr, interleaved).
	Check func(output []byte) error
}

// File is a file a Command needs written first.
type File struct {
	Path string
	Data []byte
}

// Programs are the converters' executables: names looked up on PATH, or
// paths. The defaults are the Debian packages' names.
type Programs struct {
	Assimp  string // assimp-utils
	Draw    string // occt-draw: OpenCASCADE's Draw, DRAWEXE elsewhere
	XvfbRun string // xvfb
	F3D     string // f3d
}

func (p Programs) withDefaults() Programs {
	if p.Assimp == "" {
		p.Assimp = "assimp"
	}
	if p.Draw == "" {
		p.Draw = "occt-draw"
	}
	if p.XvfbRun == "" {
		p.XvfbRun = "xvfb-run"
	}
	if p.F3D == "" {
		p.F3D = "f3d"
	}
	return p
}

// Assimp exports with assimp's command line tool: `assimp export IN OUT
// -f<format>`, format being one of `assimp listexport`.
type Assimp struct {
	Program string
	Format  string
}

var _ Tool = Assimp{}

// Command implements Tool.
func (a Assimp) Command(in, out, _ string) (Command, error) {
	return Command{Argv: []string{a.Program, "export", in, out, "-f" + a.Format}}, nil
}

// Draw makes a GLB from a CAD file with OpenCASCADE's Draw in batch mode:
// it reads the file into an XDE document, keeping part names, colours and
// the assembly structure, meshes it, and writes the document as a GLB.
type Draw struct {
	Program string
	// Reader is how the file is read: "ReadStep", "ReadIges" or
	// "restore" (BREP, which has no names or colours).
	Reader string
}

var _ Tool = Draw{}

// drawScript is the Tcl that Draw runs. Paths are server-chosen and
// brace-quoted (tclPath refuses any that could break out of the braces);
// no user text enters it. Draw exits 0 whatever happens, so failures the
// script sees are printed after drawFailed for Check to find, and a
// missing or broken GLB is caught by the GLB check after it.
//
// incmesh's -prs meshes for display: 0.001 of the bounding box as linear
// deflection and 20 degrees angular, whatever the model's scale. The nodes
// are named after the products (part names), falling back to the instance
// names.
var drawScript = template.Must(template.New("draw").Funcs(template.FuncMap{"tclPath": tclPath}).Parse(
	`pload MODELING OCAF XDE
if {[catch {
{{- if eq .Reader "restore"}}
  restore {{tclPath .In}} s
  XNewDoc D
  XAddShape D s 1
{{- else}}
  {{.Reader}} D {{tclPath .In}}
{{- end}}
  XGetOneShape s D
  incmesh s 0.001 -prs
  WriteGltf D {{tclPath .Out}} -mergeFaces -nodeNameFormat prodOrInst
} err]} {
  puts "` + drawFailed + ` $err"
}
exit
`))

// drawFailed starts the line the script prints when a command fails.
const drawFailed = "drover: draw failed:"

// drawScriptName is the script's name in the work directory.
const drawScriptName = "convert.tcl"

// tclPath brace-quotes a path for Tcl. Inside braces nothing is
// substituted; only braces, backslashes and line breaks could end the
// quoting early, and server-chosen paths have none.
func tclPath(p string) (string, error) {
	if !filepath.IsAbs(p) || strings.ContainsAny(p, "{}\\\n\r\x00") {
		return "", fmt.Errorf("path %q cannot be brace-quoted for Tcl", p)
	}
	return "{" + p + "}", nil
}

// Command implements Tool.
func (d Draw) Command(in, out, dir string) (Command, error) {
	if !slices.Contains([]string{"ReadStep", "ReadIges", "restore"}, d.Reader) {
		return Command{}, fmt.Errorf("draw: unknown reader %q", d.Reader)
	}
	var buf bytes.Buffer
	if err := drawScript.Execute(&buf, struct{ Reader, In, Out string }{d.Reader, in, out}); err != nil {
		return Command{}, fmt.Errorf("draw: %w", err)
	}
	script := filepath.Join(dir, drawScriptName)
	return Command{
		// -b: batch mode, no window; -f: run the script. Draw reads stdin
		// after the script; it gets /dev/null, so an early error ends it.
		Argv:  []string{d.Program, "-b", "-f", script},
		Files: []File{{Path: script, Data: buf.Bytes()}},
		Check: checkDraw,
	}, nil
}

func checkDraw(output []byte) error {
	_, after, ok := bytes.Cut(output, []byte(drawFailed))
	if !ok {
		return nil
	}
	msg := strings.Join(strings.Fields(string(after)), " ")
	return errors.New("draw: " + msg)
}

// Thumbnail renders a PNG with f3d inside a virtual X server:
// `xvfb-run -a f3d IN --output OUT --resolution W,H --bg-color R,G,B …`.
type Thumbnail struct {
	XvfbRun, F3D string
	Options      Options
}

var _ Tool = Thumbnail{}

// Command implements Tool.
func (t Thumbnail) Command(in, out, _ string) (Command, error) {
	o := t.Options
	res := fmt.Sprintf("%d,%d", o.Width, o.Height)
	// The virtual screen must hold the window, or the render is clipped.
	screen := fmt.Sprintf("-screen 0 %dx%dx24", max(o.Width, 1280), max(o.Height, 1024))
	argv := []string{
		t.XvfbRun, "-a", "-s", screen,
		t.F3D, in,
		"--output", out,
		"--resolution", res,
		"--bg-color", fmt.Sprintf("%s,%s,%s", formatFloat(o.Background[0]), formatFloat(o.Background[1]), formatFloat(o.Background[2])),
		// No configuration file: no grid, axes or other display options
		// from a user's f3d configuration.
		"--dry-run",
		// A three-quarter view, smoothed edges.
		"--camera-azimuth-angle", strconv.Itoa(35),
		"--camera-elevation-angle", strconv.Itoa(25),
		"--fxaa",
	}
	if o.Transparent {
		argv = append(argv, "--no-background")
	}
	return Command{Argv: argv}, nil
}
