package convert

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
)

// ErrUnsupported marks an input format no converter reads.
var ErrUnsupported = errors.New("unsupported format")

// Entry is the converter of an input format: the tool that makes its GLB,
// and how the other outputs are made.
type Entry struct {
	// GLB makes the GLB from the input.
	GLB Tool
	// Mesh is set for formats assimp reads: STL and OBJ outputs are
	// exported from the input rather than from the GLB, and thumbnails
	// rendered from the input when f3d reads it too (ThumbnailFromInput).
	Mesh bool
	// ThumbnailFromInput renders the thumbnail from the input itself: f3d
	// shades a mesh as its own reader sees it, where a GLB exported from a
	// file with missing normals would render black.
	ThumbnailFromInput bool
	// Shatter writes the parts and the assembly index of a shattered
	// conversion; nil for formats without an assembly structure.
	Shatter Tool
}

// Registry maps input file extensions to their converters.
type Registry struct {
	byExt map[string]Entry
}

// NewRegistry returns a registry of the default converters: assimp for
// meshes, OpenCASCADE's Draw for CAD.
func NewRegistry(p Programs) *Registry {
	p = p.withDefaults()
	r := &Registry{byExt: map[string]Entry{}}
	glb := Assimp{Program: p.Assimp, Format: "glb2"}
	// Formats assimp reads that f3d 1.3 reads too.
	for _, ext := range []string{".stl", ".obj", ".ply", ".gltf", ".glb", ".fbx", ".dae", ".3ds", ".off"} {
		r.Register(ext, Entry{GLB: glb, Mesh: true, ThumbnailFromInput: true})
	}
	for _, ext := range []string{".3mf", ".x3d", ".amf"} {
		r.Register(ext, Entry{GLB: glb, Mesh: true})
	}
	for ext, reader := range map[string]string{
		".step": "ReadStep", ".stp": "ReadStep",
		".iges": "ReadIges", ".igs": "ReadIges",
		".brep": "restore", ".brp": "restore",
	} {
		r.Register(ext, Entry{GLB: Draw{Program: p.Draw, Reader: reader}, Shatter: Shatter{Program: p.Draw, Reader: reader}})
	}
	return r
}

// Register sets the converter of files ending in ext (".step"), case
// insensitively, replacing any before.
func (r *Registry) Register(ext string, e Entry) {
	r.byExt[strings.ToLower(ext)] = e
}

// Lookup returns the converter for a file name, by its extension.
func (r *Registry) Lookup(name string) (Entry, bool) {
	e, ok := r.byExt[extOf(name)]
	return e, ok
}

// Extensions lists the extensions with a converter, sorted.
func (r *Registry) Extensions() []string {
	return slices.Sorted(maps.Keys(r.byExt))
}

// Shatterable lists the extensions whose models can be shattered, sorted.
func (r *Registry) Shatterable() []string {
	var exts []string
	for ext, e := range r.byExt {
		if e.Shatter != nil {
			exts = append(exts, ext)
		}
	}
	slices.Sort(exts)
	return exts
}

// extOf is the lower-case extension of a file name, with the dot.
func extOf(name string) string {
	return strings.ToLower(filepath.Ext(name))
}

func (c *Converter) unsupported(name string) error {
	ext := extOf(name)
	if ext == "" {
		return fmt.Errorf("%q has no extension; drover converts %s", name, strings.Join(c.reg.Extensions(), " "))
	}
	return fmt.Errorf("%s files are not supported; drover converts %s", ext, strings.Join(c.reg.Extensions(), " "))
}
