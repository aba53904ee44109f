package convert

import (
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/cadtest"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// requireTools ends the test when a converter is missing: it fails under
// CI=true and skips otherwise.
func requireTools(t *testing.T) {
	t.Helper()
	for _, p := range []struct{ name, pkg string }{
		{"assimp", "assimp-utils"}, {"occt-draw", "occt-draw"}, {"xvfb-run", "xvfb"}, {"xauth", "xauth"}, {"f3d", "f3d"},
	} {
		testutil.Program(t, p.name, p.pkg)
	}
}

// The models the tests convert, made once per test binary.
var fixtures struct {
	once sync.Once
	dir  string
	err  error
}

// fixtureDir returns a directory holding cube.stl, cube.obj, asm.step (an
// assembly of the parts Bracket and Bolt, red and blue), part.igs (the part
// Plate) and part.brep, the CAD files written by OpenCASCADE's Draw.
func fixtureDir(t *testing.T) string {
	t.Helper()
	requireTools(t)
	fixtures.once.Do(func() {
		fixtures.dir, fixtures.err = os.MkdirTemp("", "drover-convert-fixtures-")
		if fixtures.err == nil {
			fixtures.err = makeFixtures(fixtures.dir)
		}
	})
	require.NoError(t, fixtures.err)
	return fixtures.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		_ = os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

func makeFixtures(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cube.stl"), []byte(convtest.CubeSTL()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cube.obj"), []byte(convtest.CubeOBJ()), 0o644); err != nil {
		return err
	}
	// The CAD models are written by Draw, as package cadtest writes them
	// for the other packages' tests.
	if err := cadtest.Write(dir, cadtest.Script, "asm.step", "part.igs", "part.brep"); err != nil {
		return err
	}
	return cadtest.Write(dir, cadtest.NestedScript, "nested.step")
}

// testLogger logs to the test's output, debug lines included: the steps'
// command lines and durations.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// item is an item's directory below a parent directory that the test
// checks is left alone: parent holds item/ and a sibling file.
type item struct {
	parent, dir, out string
	before           map[string]string
}

func newItem(t *testing.T) *item {
	t.Helper()
	parent := t.TempDir()
	it := &item{parent: parent, dir: filepath.Join(parent, "item"), out: filepath.Join(parent, "item", "output")}
	require.NoError(t, os.MkdirAll(it.out, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(parent, "sibling.txt"), []byte("keep"), 0o644))
	it.before = snapshot(t, parent, it.dir)
	return it
}

// upload stores a file in the item's directory under a server-chosen name
// that, like a storage id, says nothing of its format.
func (it *item) upload(t *testing.T, src string) string {
	t.Helper()
	body, err := os.ReadFile(src)
	require.NoError(t, err)
	return it.uploadBytes(t, body)
}

func (it *item) uploadBytes(t *testing.T, body []byte) string {
	t.Helper()
	p := filepath.Join(it.dir, "upload.bin")
	require.NoError(t, os.WriteFile(p, body, 0o644))
	return p
}

// untouched checks that nothing outside the item's directory changed.
func (it *item) untouched(t *testing.T) {
	t.Helper()
	require.Equal(t, it.before, snapshot(t, it.parent, it.dir), "the item's parent directory changed")
}

// snapshot lists the files below root, except below skip, with their sizes
// and modification times.
func snapshot(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	}))
	return m
}

// requireNotBlank decodes a PNG and checks that part of it is not white.
func requireNotBlank(t *testing.T, path string, w, h int) {
	t.Helper()
	fh, err := os.Open(path)
	require.NoError(t, err)
	defer fh.Close()
	img, err := png.Decode(fh)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, w, h), img.Bounds())
	var drawn int
	for y := range h {
		for x := range w {
			r, g, b, _ := img.At(x, y).RGBA()
			if r < 0xf000 || g < 0xf000 || b < 0xf000 {
				drawn++
			}
		}
	}
	require.Greater(t, drawn, w*h/100, "fewer than 1%% of the pixels are not white")
	// The corners are the white background.
	r, g, b, _ := img.At(0, 0).RGBA()
	require.Equal(t, [3]uint32{0xffff, 0xffff, 0xffff}, [3]uint32{r, g, b})
}
