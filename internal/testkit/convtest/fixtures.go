package convtest

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// CubeTriangles is the number of triangles of the cube models, once
// triangulated.
const CubeTriangles = 12

var (
	cubeVertices = [8][3]int{{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {0, 1, 0}, {0, 0, 1}, {1, 0, 1}, {1, 1, 1}, {0, 1, 1}}
	// cubeQuads wind counter-clockwise seen from outside.
	cubeQuads   = [6][4]int{{0, 3, 2, 1}, {4, 5, 6, 7}, {0, 1, 5, 4}, {1, 2, 6, 5}, {2, 3, 7, 6}, {3, 0, 4, 7}}
	cubeNormals = [6][3]int{{0, 0, -1}, {0, 0, 1}, {0, -1, 0}, {1, 0, 0}, {0, 1, 0}, {-1, 0, 0}}
)

// CubeSTL is an ASCII STL of the unit cube, with its normals: 12
// triangles.
func CubeSTL() string {
	var b strings.Builder
	b.WriteString("solid cube\n")
	for i, q := range cubeQuads {
		n := cubeNormals[i]
		for _, tri := range [2][3]int{{q[0], q[1], q[2]}, {q[0], q[2], q[3]}} {
			fmt.Fprintf(&b, "  facet normal %d %d %d\n    outer loop\n", n[0], n[1], n[2])
			for _, v := range tri {
				p := cubeVertices[v]
				fmt.Fprintf(&b, "      vertex %d %d %d\n", p[0], p[1], p[2])
			}
			b.WriteString("    endloop\n  endfacet\n")
		}
	}
	b.WriteString("endsolid cube\n")
	return b.String()
}

// CubeOBJ is a Wavefront OBJ of the unit cube in quads: 12 triangles once
// triangulated.
func CubeOBJ() string {
	var b strings.Builder
	b.WriteString("o cube\n")
	for _, p := range cubeVertices {
		fmt.Fprintf(&b, "v %d %d %d\n", p[0], p[1], p[2])
	}
	for _, q := range cubeQuads {
		fmt.Fprintf(&b, "f %d %d %d %d\n", q[0]+1, q[1]+1, q[2]+1, q[3]+1)
	}
	return b.String()
}

// ZipEntry is one entry of a test archive. Mode 0 is a regular file
// (0644); a symlink's Body is its target.
type ZipEntry struct {
	Name string
	Mode fs.FileMode
	Body []byte
}

// Zip makes a ZIP archive of the entries, as given: names are not
// checked, so archives can be as hostile as tests need.
func Zip(t testing.TB, entries ...ZipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		hdr := &zip.FileHeader{Name: e.Name, Method: zip.Deflate}
		if e.Mode == 0 {
			e.Mode = 0o644
		}
		hdr.SetMode(e.Mode)
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			t.Fatalf("zip %s: %v", e.Name, err)
		}
		if _, err := w.Write(e.Body); err != nil {
			t.Fatalf("zip %s: %v", e.Name, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zip: %v", err)
	}
	return buf.Bytes()
}
