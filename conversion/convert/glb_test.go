package convert

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// makeGLB assembles a GLB from a JSON document and an optional binary
// chunk, padding both as the format requires.
func makeGLB(doc string, bin []byte) []byte {
	js := []byte(doc)
	for len(js)%4 != 0 {
		js = append(js, ' ')
	}
	bin = append([]byte(nil), bin...)
	for len(bin)%4 != 0 {
		bin = append(bin, 0)
	}
	var b bytes.Buffer
	le := binary.LittleEndian
	total := 12 + 8 + len(js)
	if bin != nil {
		total += 8 + len(bin)
	}
	_ = binary.Write(&b, le, []uint32{glbMagic, 2, uint32(total), uint32(len(js)), glbChunkJSON})
	b.Write(js)
	if bin != nil {
		_ = binary.Write(&b, le, []uint32{uint32(len(bin)), glbChunkBIN})
		b.Write(bin)
	}
	return b.Bytes()
}

const cubeDoc = `{"asset":{"version":"2.0"},
 "nodes":[{"name":"root","children":[1,2]},{"name":"Bracket","mesh":0},{"mesh":1}],
 "meshes":[
   {"primitives":[{"attributes":{"POSITION":0},"indices":1,"mode":4}]},
   {"primitives":[
     {"attributes":{"POSITION":0}},
     {"attributes":{"POSITION":0},"indices":1,"mode":1},
     {"attributes":{"POSITION":2},"mode":5}]}],
 "accessors":[{"count":24},{"count":36},{"count":10}],
 "buffers":[{"byteLength":6}]}`

func TestInspectGLB(t *testing.T) {
	t.Parallel()
	b := makeGLB(cubeDoc, []byte("abcdef"))
	info, err := InspectGLB(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	require.Equal(t, []string{"root", "Bracket", ""}, info.Nodes)
	require.Equal(t, 2, info.Meshes)
	// 36/3 indexed + 24/3 unindexed + (10-2) strip; lines do not count.
	require.Equal(t, 12+8+8, info.Triangles)
	require.EqualValues(t, 8, info.BIN)

	// No BIN chunk, no buffers: a document with only nodes is valid.
	b = makeGLB(`{"asset":{"version":"2.0"},"nodes":[{"name":"n"}]}`, nil)
	info, err = InspectGLB(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	require.Equal(t, []string{"n"}, info.Nodes)
	require.Zero(t, info.Triangles)
}

func TestInspectGLBRefuses(t *testing.T) {
	t.Parallel()
	good := makeGLB(cubeDoc, []byte("abcdef"))
	le := binary.LittleEndian
	patch := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		le.PutUint32(b[off:], v)
		return b
	}
	binAt := 12 + 8 + int(le.Uint32(good[12:]))
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "no header"},
		{"magic", patch(0, 0x12345678), "no glTF magic"},
		{"version", patch(4, 1), "version 1"},
		{"length short", patch(8, uint32(len(good)-4)), "header says"},
		{"length long", patch(8, uint32(len(good)+4)), "header says"},
		{"truncated", good[:len(good)-4], "header says"},
		{"json not first", patch(16, glbChunkBIN), "first chunk is not JSON"},
		{"chunk past end", patch(binAt, 1<<20), "runs past the end"},
		{"chunk unaligned", patch(12, 5), "not 4-byte aligned"},
		{"no chunks", makeGLB("", nil)[:12], "header says"},
		{"bad json", makeGLB(`{"asset":`, nil), "JSON chunk"},
		{"no asset", makeGLB(`{"nodes":[]}`, nil), "asset.version"},
		{"glTF 1", makeGLB(`{"asset":{"version":"1.0"}}`, nil), "asset.version"},
		{"bin too short", makeGLB(`{"asset":{"version":"2.0"},"buffers":[{"byteLength":100}]}`, []byte("abcd")), "buffer 0 has 100 bytes"},
		{"missing accessor", makeGLB(`{"asset":{"version":"2.0"},"meshes":[{"primitives":[{"attributes":{"POSITION":3}}]}]}`, nil), "accessor 3 does not exist"},
		{"missing index accessor", makeGLB(`{"asset":{"version":"2.0"},"accessors":[{"count":3}],"meshes":[{"primitives":[{"attributes":{"POSITION":0},"indices":-1}]}]}`, nil), "accessor -1 does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := InspectGLB(bytes.NewReader(tt.b), int64(len(tt.b)))
			require.ErrorIs(t, err, ErrInvalidGLB)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// FuzzInspectGLB checks that InspectGLB never panics and never reports
// counts it cannot have read.
func FuzzInspectGLB(f *testing.F) {
	f.Add(makeGLB(cubeDoc, []byte("abcdef")))
	f.Add(makeGLB(`{"asset":{"version":"2.0"}}`, nil))
	f.Add([]byte("glTF\x02\x00\x00\x00\x14\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := InspectGLB(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidGLB)
			return
		}
		require.EqualValues(t, len(b), info.Size)
		require.GreaterOrEqual(t, info.Triangles, 0)
		require.LessOrEqual(t, info.BIN, info.Size)
	})
}

func BenchmarkInspectGLB(b *testing.B) {
	glb := makeGLB(cubeDoc, make([]byte, 1<<20))
	r := bytes.NewReader(glb)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InspectGLB(r, int64(len(glb))); err != nil {
			b.Fatal(err)
		}
	}
}
