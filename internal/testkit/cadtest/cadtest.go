// Package cadtest writes the CAD models that conversion tests convert, with
// OpenCASCADE's Draw (Debian package occt-draw): a STEP assembly of two
// named, coloured parts, an IGES part and a BREP shape, and a STEP assembly
// with a sub-assembly instanced twice and moved parts, for the shattered
// conversion. A test without Draw fails under CI=true and skips elsewhere.
package cadtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// Script writes, into the directory DIR, asm.step (an assembly "Assembly"
// of the parts Bracket and Bolt, red and blue), part.igs (the part Plate)
// and part.brep.
const Script = `pload MODELING OCAF XDE
box b1 10 10 10
box b2 20 0 0 5 5 5
compound b1 b2 c
XNewDoc D
XAddShape D c 1
SetName D 0:1:1:1 Assembly
SetName D 0:1:1:2 Bracket
SetName D 0:1:1:3 Bolt
XSetColor D 0:1:1:2 1 0 0
XSetColor D 0:1:1:3 0 0 1
WriteStep D {DIR/asm.step}
XNewDoc P
XAddShape P b1 0
SetName P 0:1:1:1 Plate
WriteIges P {DIR/part.igs}
save b2 {DIR/part.brep}
exit
`

// NestedScript writes DIR/nested.step: the assembly "Top & <Frame>" holds
// the sub-assembly `Sub "A"` twice, the second instance moved by
// (0, 100, 0.123456789) mm, and the part Pin at the origin. Sub "A" holds
// the part `Cube [é] $x` twice: at the origin, and moved by (10, 0, 0)
// then turned 30° about Z. The names carry XML and Tcl metacharacters.
const NestedScript = `pload MODELING OCAF XDE
box b 5 5 5
copy b b2
ttranslate b2 10 0 0
trotate b2 0 0 0 0 0 1 30
compound b b2 sub
copy sub sub2
ttranslate sub2 0 100 0.123456789
box c 1 2 3
compound sub sub2 c top
XNewDoc D
XAddShape D top 1
SetName D 0:1:1:1 {Top & <Frame>}
SetName D 0:1:1:2 {Sub "A"}
SetName D 0:1:1:3 "Cube \[\u00e9\] \$x"
SetName D 0:1:1:4 Pin
XSetColor D 0:1:1:3 0 1 0
WriteStep D {DIR/nested.step}
exit
`

// Write runs a Draw script with DIR standing for dir, and checks that the
// files were written.
func Write(dir, script string, files ...string) error {
	path := filepath.Join(dir, fmt.Sprintf("make-%d.tcl", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(script, "DIR", dir)), 0o644); err != nil {
		return err
	}
	defer os.Remove(path)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "occt-draw", "-b", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("draw: %w\n%s", err, out)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("draw did not write %s: %w\n%s", f, err, out)
		}
	}
	return nil
}

// Models writes asm.step, part.igs, part.brep and nested.step into a
// temporary directory of the test and returns it.
func Models(tb testing.TB) string {
	tb.Helper()
	testutil.Program(tb, "occt-draw", "occt-draw")
	dir := tb.TempDir()
	if err := Write(dir, Script, "asm.step", "part.igs", "part.brep"); err != nil {
		tb.Fatal(err)
	}
	if err := Write(dir, NestedScript, "nested.step"); err != nil {
		tb.Fatal(err)
	}
	return dir
}
