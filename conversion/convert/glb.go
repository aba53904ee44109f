package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrInvalidGLB marks a GLB file that breaks the glTF 2.0 binary format.
var ErrInvalidGLB = errors.New("invalid GLB")

const (
	glbMagic     = 0x46546c67 // "glTF"
	glbChunkJSON = 0x4e4f534a // "JSON"
	glbChunkBIN  = 0x004e4942 // "BIN\0"
	// maxGLBJSON bounds the JSON chunk held in memory. The buffers, the
	// bulk of a GLB, are never read.
	maxGLBJSON = 64 << 20
)

// GLBInfo is what InspectGLB reports about a GLB.
type GLBInfo struct {
	// Size is the file's length in bytes.
	Size int64
	// Nodes are the names of the nodes, in order; unnamed nodes are "".
	Nodes []string
	// Meshes is the number of meshes.
	Meshes int
	// Triangles is the number of triangles in the meshes' primitives, each
	// mesh counted once however many nodes use it.
	Triangles int
	// BIN is the length of the binary chunk, 0 without one.
	BIN int64
}

// gltfDoc is the part of a glTF document InspectGLB reads.
type gltfDoc struct {
	Asset *struct {
		Version string `json:"version"`
	} `json:"asset"`
	Nodes []struct {
		Name string `json:"name"`
	} `json:"nodes"`
	Meshes []struct {
		Primitives []struct {
			Attributes map[string]int `json:"attributes"`
			Indices    *int           `json:"indices"`
			Mode       *int           `json:"mode"`
		} `json:"primitives"`
	} `json:"meshes"`
	Accessors []struct {
		Count int `json:"count"`
	} `json:"accessors"`
	Buffers []struct {
		ByteLength int64  `json:"byteLength"`
		URI        string `json:"uri"`
	} `json:"buffers"`
}

// InspectGLBFile checks the GLB file at path; see InspectGLB.
func InspectGLBFile(path string) (*GLBInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	return InspectGLB(fh, fi.Size())
}

// InspectGLB checks that r, of size bytes, is a well-formed binary glTF 2.0
// file and reports its node names and triangle count. It checks the header
// (magic "glTF", version 2, a length equal to size), that the first chunk
// is JSON and parses as a glTF document of version 2.x, that a binary chunk
// that follows is well formed and holds the first buffer, that chunks fill
// the file exactly, and that the primitives' accessor indices exist.
func InspectGLB(r io.ReaderAt, size int64) (*GLBInfo, error) {
	var hdr [12]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("%w: no header: %w", ErrInvalidGLB, err)
	}
	le := binary.LittleEndian
	switch {
	case le.Uint32(hdr[0:]) != glbMagic:
		return nil, fmt.Errorf("%w: no glTF magic", ErrInvalidGLB)
	case le.Uint32(hdr[4:]) != 2:
		return nil, fmt.Errorf("%w: version %d, not 2", ErrInvalidGLB, le.Uint32(hdr[4:]))
	case int64(le.Uint32(hdr[8:])) != size:
		return nil, fmt.Errorf("%w: header says %d bytes, the file has %d", ErrInvalidGLB, le.Uint32(hdr[8:]), size)
	}
	info := &GLBInfo{Size: size}
	var doc gltfDoc
	off := int64(12)
	for i := 0; off < size; i++ {
		var ch [8]byte
		if _, err := r.ReadAt(ch[:], off); err != nil {
			return nil, fmt.Errorf("%w: chunk %d: no header: %w", ErrInvalidGLB, i, err)
		}
		n, typ := int64(le.Uint32(ch[0:])), le.Uint32(ch[4:])
		off += 8
		switch {
		case n > size-off:
			return nil, fmt.Errorf("%w: chunk %d runs past the end", ErrInvalidGLB, i)
		case n%4 != 0:
			return nil, fmt.Errorf("%w: chunk %d is not 4-byte aligned", ErrInvalidGLB, i)
		case i == 0 && typ != glbChunkJSON:
			return nil, fmt.Errorf("%w: the first chunk is not JSON", ErrInvalidGLB)
		case i > 0 && typ == glbChunkJSON:
			return nil, fmt.Errorf("%w: a second JSON chunk", ErrInvalidGLB)
		case i > 1 && typ == glbChunkBIN:
			return nil, fmt.Errorf("%w: the BIN chunk is not the second", ErrInvalidGLB)
		}
		switch typ {
		case glbChunkJSON:
			if n > maxGLBJSON {
				return nil, fmt.Errorf("%w: JSON chunk of %d bytes, more than %d", ErrInvalidGLB, n, maxGLBJSON)
			}
			b := make([]byte, n)
			if _, err := r.ReadAt(b, off); err != nil {
				return nil, fmt.Errorf("%w: JSON chunk: %w", ErrInvalidGLB, err)
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				return nil, fmt.Errorf("%w: JSON chunk: %w", ErrInvalidGLB, err)
			}
		case glbChunkBIN:
			info.BIN = n
		}
		off += n
	}
	if off == 12 {
		return nil, fmt.Errorf("%w: no chunks", ErrInvalidGLB)
	}
	if err := checkDoc(&doc, info); err != nil {
		return nil, err
	}
	return info, nil
}

// checkDoc checks the glTF document and fills info from it.
func checkDoc(doc *gltfDoc, info *GLBInfo) error {
	if doc.Asset == nil || len(doc.Asset.Version) < 2 || doc.Asset.Version[:2] != "2." {
		return fmt.Errorf("%w: asset.version is not 2.x", ErrInvalidGLB)
	}
	// The BIN chunk is the first buffer, the one without a URI; it may be
	// padded by up to 3 bytes.
	if len(doc.Buffers) > 0 && doc.Buffers[0].URI == "" {
		if bl := doc.Buffers[0].ByteLength; info.BIN < bl || info.BIN > bl+3 {
			return fmt.Errorf("%w: buffer 0 has %d bytes, the BIN chunk %d", ErrInvalidGLB, bl, info.BIN)
		}
	}
	info.Nodes = make([]string, len(doc.Nodes))
	for i, n := range doc.Nodes {
		info.Nodes[i] = n.Name
	}
	info.Meshes = len(doc.Meshes)
	accessor := func(i int) (int, error) {
		if i < 0 || i >= len(doc.Accessors) {
			return 0, fmt.Errorf("%w: accessor %d does not exist", ErrInvalidGLB, i)
		}
		if n := doc.Accessors[i].Count; n < 0 || n > 1<<32 {
			return 0, fmt.Errorf("%w: accessor %d has count %d", ErrInvalidGLB, i, n)
		}
		return doc.Accessors[i].Count, nil
	}
	for _, m := range doc.Meshes {
		for _, p := range m.Primitives {
			pos, ok := p.Attributes["POSITION"]
			if !ok {
				continue
			}
			count, err := accessor(pos)
			if err != nil {
				return err
			}
			if p.Indices != nil {
				if count, err = accessor(*p.Indices); err != nil {
					return err
				}
			}
			mode := 4 // TRIANGLES, the default
			if p.Mode != nil {
				mode = *p.Mode
			}
			switch mode {
			case 4:
				info.Triangles += count / 3
			case 5, 6: // strips and fans
				info.Triangles += max(count-2, 0)
			}
		}
	}
	return nil
}
