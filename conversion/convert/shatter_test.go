package convert

import (
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// shatteredXML is the index as a client reads it.
type shatteredXML struct {
	XMLName xml.Name `xml:"ShatteredAssembly"`
	Units   string   `xml:"units,attr"`
	Up      string   `xml:"up,attr"`
	Parts   []struct {
		File      string `xml:"file,attr"`
		Name      string `xml:"name,attr"`
		Instances int    `xml:"instances,attr"`
		Triangles int    `xml:"triangles,attr"`
		Size      int64  `xml:"size,attr"`
	} `xml:"Parts>Part"`
	Nodes []*shatteredNode `xml:"Tree>Node"`
}

type shatteredNode struct {
	Name     string           `xml:"name,attr"`
	Instance string           `xml:"instance,attr"`
	Part     string           `xml:"part,attr"`
	Matrix   string           `xml:"matrix,attr"`
	Children []*shatteredNode `xml:"Node"`
}

func (n *shatteredNode) matrix(t *testing.T) [16]float64 {
	t.Helper()
	f := strings.Fields(n.Matrix)
	require.Len(t, f, 16, n.Matrix)
	var m [16]float64
	for i, s := range f {
		v, err := strconv.ParseFloat(s, 64)
		require.NoError(t, err)
		m[i] = v
	}
	return m
}

func readShatteredXML(t *testing.T, path string) shatteredXML {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var x shatteredXML
	require.NoError(t, xml.Unmarshal(b, &x), "%s", b)
	return x
}

var identity = [16]float64{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}

func requireMatrix(t *testing.T, want, got [16]float64) {
	t.Helper()
	for i := range want {
		require.InDelta(t, want[i], got[i], 1e-9, "element %d of %v", i, got)
	}
}

// TestConvertShattered shatters the STEP assembly of Bracket and Bolt with
// the real Draw: besides the model's GLB, each part is a GLB named after
// it, and the index names both under the assembly.
func TestConvertShattered(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	c := newConverter(t, Config{})
	it := newItem(t)
	start := time.Now()
	outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, "asm.step")), Name: "asm.step",
		Dir: it.dir, OutputDir: it.out, Shattered: true, CommandLine: []string{"--output_glb"}})
	require.NoError(t, err)
	t.Logf("asm.step: GLB and shattered parts in %s", time.Since(start).Round(time.Millisecond))
	var names []string
	for _, o := range outs {
		names = append(names, o.Name+" "+o.Type)
		fi, err := os.Stat(filepath.Join(it.out, o.Name))
		require.NoError(t, err)
		require.Equal(t, fi.Size(), o.Size)
	}
	require.Equal(t, []string{"asm.step.glb glb", "shattered/Bracket.glb glb",
		"shattered/Bolt.glb glb", "shattered/index.xml xml"}, names)
	for _, part := range []string{"Bracket", "Bolt"} {
		info, err := InspectGLBFile(filepath.Join(it.out, ShatteredDir, part+".glb"))
		require.NoError(t, err)
		require.Equal(t, 12, info.Triangles, "a box")
		require.Contains(t, info.Nodes, part)
	}
	index, err := os.ReadFile(filepath.Join(it.out, ShatteredDir, ShatteredIndex))
	require.NoError(t, err)
	t.Logf("the index:\n%s", index)
	x := readShatteredXML(t, filepath.Join(it.out, ShatteredDir, ShatteredIndex))
	require.Equal(t, "m", x.Units)
	require.Len(t, x.Parts, 2)
	require.Equal(t, "Bracket.glb", x.Parts[0].File)
	require.Equal(t, "Bracket", x.Parts[0].Name)
	require.Equal(t, 1, x.Parts[0].Instances)
	require.Equal(t, 12, x.Parts[0].Triangles)
	require.Equal(t, "Bolt.glb", x.Parts[1].File)
	require.Len(t, x.Nodes, 1)
	root := x.Nodes[0]
	require.Equal(t, "Assembly", root.Name)
	require.Len(t, root.Children, 2)
	require.Equal(t, "Bracket", root.Children[0].Name)
	require.Equal(t, "Bracket.glb", root.Children[0].Part)
	require.Equal(t, "Bolt", root.Children[1].Name)
	require.Equal(t, "Bolt.glb", root.Children[1].Part)
	requireMatrix(t, identity, root.matrix(t))
	it.untouched(t)
}

// TestConvertShatteredNested shatters an assembly with a sub-assembly
// instanced twice: each part is written once, every instance is a node,
// the transforms are glTF's (metres, Y up), and names with XML and Tcl
// metacharacters come through as they are.
func TestConvertShatteredNested(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	c := newConverter(t, Config{})
	it := newItem(t)
	outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, "nested.step")), Name: "nested.stp",
		Dir: it.dir, OutputDir: it.out, Shattered: true, CommandLine: []string{"--output_glb"}})
	require.NoError(t, err)
	var names []string
	for _, o := range outs {
		names = append(names, o.Name)
	}
	require.Equal(t, []string{"nested.stp.glb", "shattered/Cube_x.glb", "shattered/Pin.glb", "shattered/index.xml"}, names)

	x := readShatteredXML(t, filepath.Join(it.out, ShatteredDir, ShatteredIndex))
	require.Len(t, x.Parts, 2)
	require.Equal(t, "Cube [é] $x", x.Parts[0].Name)
	require.Equal(t, 4, x.Parts[0].Instances)
	require.Equal(t, "Pin", x.Parts[1].Name)
	require.Len(t, x.Nodes, 1)
	top := x.Nodes[0]
	require.Equal(t, "Top & <Frame>", top.Name)
	require.Len(t, top.Children, 3)
	sub1, sub2, pin := top.Children[0], top.Children[1], top.Children[2]
	for _, sub := range []*shatteredNode{sub1, sub2} {
		require.Equal(t, `Sub "A"`, sub.Name)
		require.Empty(t, sub.Part)
		require.Empty(t, sub.Instance, "XDE's placeholder names are dropped")
		require.Len(t, sub.Children, 2)
		for _, cube := range sub.Children {
			require.Equal(t, "Cube [é] $x", cube.Name)
			require.Equal(t, "Cube_x.glb", cube.Part)
		}
		requireMatrix(t, identity, sub.Children[0].matrix(t))
		// Moved by (10, 0, 0) mm, then turned 30° about Z (up): in glTF's
		// frame a turn about Y, and a translation of
		// 0.001·(8.66, 0, −5) m.
		c30, s30 := math.Cos(math.Pi/6), 0.5
		requireMatrix(t, [16]float64{c30, 0, -s30, 0, 0, 1, 0, 0, s30, 0, c30, 0, 0.01 * c30, 0, -0.005, 1},
			sub.Children[1].matrix(t))
	}
	requireMatrix(t, identity, sub1.matrix(t))
	// Moved by (0, 100, 0.123456789) mm: (0, 0.000123456789, −0.1) m.
	requireMatrix(t, [16]float64{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0.000123456789, -0.1, 1}, sub2.matrix(t))
	require.Equal(t, "Pin.glb", pin.Part)
	requireMatrix(t, identity, pin.matrix(t))

	// The whole model's GLB, written by the same Draw, places the moved
	// sub-assembly where the index does.
	glb, err := os.ReadFile(filepath.Join(it.out, "nested.stp.glb"))
	require.NoError(t, err)
	require.Contains(t, string(glb), `"translation":[0.0,0.000123456789`)
	for _, name := range []string{"Cube_x.glb", "Pin.glb"} {
		_, err := InspectGLBFile(filepath.Join(it.out, ShatteredDir, name))
		require.NoError(t, err)
	}
	// The parts are in the index's frame too: Pin, 1×2×3 mm at the
	// origin, spans (0, 0, −0.002) to (0.001, 0.003, 0) m.
	pinGLB, err := os.ReadFile(filepath.Join(it.out, ShatteredDir, "Pin.glb"))
	require.NoError(t, err)
	require.Contains(t, string(pinGLB), `"max":[0.001,0.003,0.0],"min":[0.0,0.0,-0.002]`)
}

// TestConvertShatteredRefusesMeshes: a mesh format has no assembly to
// shatter, and says so before anything runs.
func TestConvertShatteredRefusesMeshes(t *testing.T) {
	c := newConverter(t, Config{})
	it := newItem(t)
	_, err := c.Run(runCtx(t), Job{Input: it.uploadBytes(t, []byte("solid x\nendsolid x\n")), Name: "x.stl",
		Dir: it.dir, OutputDir: it.out, Shattered: true})
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, ErrUnsupported)
	require.Contains(t, ce.Detail, "processShattered works for")
	require.Contains(t, ce.Detail, ".step")
	it.untouched(t)
}

// TestConvertShatteredSingleParts: an IGES part and a BREP shape have no
// assembly; each is one part, the only node.
func TestConvertShatteredSingleParts(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	for _, tt := range []struct{ file, name, part string }{
		{"part.igs", "plate.iges", "Plate"},
		{"part.brep", "bolt.brep", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newConverter(t, Config{})
			it := newItem(t)
			outs, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, tt.file)), Name: tt.name,
				Dir: it.dir, OutputDir: it.out, Shattered: true, CommandLine: []string{"--output_glb"}})
			require.NoError(t, err)
			require.Len(t, outs, 3, "the GLB, one part and the index")
			x := readShatteredXML(t, filepath.Join(it.out, ShatteredDir, ShatteredIndex))
			require.Len(t, x.Parts, 1)
			require.Len(t, x.Nodes, 1)
			require.Equal(t, x.Parts[0].File, x.Nodes[0].Part)
			require.Equal(t, ShatteredDir+"/"+x.Parts[0].File, outs[1].Name)
			if tt.part != "" {
				require.Equal(t, tt.part, x.Parts[0].Name)
			}
			_, err = InspectGLBFile(filepath.Join(it.out, outs[1].Name))
			require.NoError(t, err)
		})
	}
}

// TestConvertShatteredTooManyNodes: a tree over the node limit fails the
// conversion with a detail that says so, and leaves the output directory
// as it was.
func TestConvertShatteredTooManyNodes(t *testing.T) {
	t.Parallel()
	fx := fixtureDir(t)
	reg := NewRegistry(Programs{})
	reg.Register(".step", Entry{GLB: Draw{Program: "occt-draw", Reader: "ReadStep"},
		Shatter: Shatter{Program: "occt-draw", Reader: "ReadStep", MaxNodes: 3}})
	c := newConverter(t, Config{Registry: reg})
	it := newItem(t)
	_, err := c.Run(runCtx(t), Job{Input: it.upload(t, filepath.Join(fx, "nested.step")), Name: "nested.step",
		Dir: it.dir, OutputDir: it.out, Shattered: true, CommandLine: []string{"--output_glb"}})
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, ErrToolFailed)
	require.Contains(t, ce.Detail, "the assembly tree has more than 3 nodes")
	require.NotContains(t, ce.Detail, it.dir, "no server path in the detail")
	entries, err := os.ReadDir(it.out)
	require.NoError(t, err)
	require.Empty(t, entries)
	it.untouched(t)
}
