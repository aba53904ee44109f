package safezip

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Entry is one entry of a test archive. With raw set, body is written as
// the entry's compressed data and the header's sizes and CRC are taken as
// given: a lying archive.
type Entry struct {
	Name   string
	Mode   fs.FileMode
	Body   []byte
	Method uint16
	Raw    *zip.FileHeader
}

func writeZip(t testing.TB, path string, entries ...Entry) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.Raw != nil {
			w, err := zw.CreateRaw(e.Raw)
			require.NoError(t, err)
			_, err = w.Write(e.Body)
			require.NoError(t, err)
			continue
		}
		hdr := &zip.FileHeader{Name: e.Name, Method: e.Method}
		if e.Mode == 0 {
			e.Mode = 0o644
		}
		hdr.SetMode(e.Mode)
		w, err := zw.CreateHeader(hdr)
		require.NoError(t, err)
		_, err = w.Write(e.Body)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

func deflate(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	require.NoError(t, err)
	_, err = fw.Write(b)
	require.NoError(t, err)
	require.NoError(t, fw.Close())
	return buf.Bytes()
}

// setup returns an archive path and an empty target directory, both inside
// a parent directory that the test checks is left alone.
func setup(t *testing.T) (parent, archive, dir string) {
	t.Helper()
	parent = t.TempDir()
	archive = filepath.Join(parent, "in.zip")
	dir = filepath.Join(parent, "out")
	require.NoError(t, os.Mkdir(dir, 0o755))
	return parent, archive, dir
}

func listing(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got = append(got, rel)
		return nil
	}))
	return got
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"a.step", "a.step", true},
		{"dir/", "dir", true},
		{"dir/sub/part.stl", "dir/sub/part.stl", true},
		{"..a/b..", "..a/b..", true},
		{"", "", false},
		{"/", "", false},
		{"/etc/passwd", "", false},
		{"../evil", "", false},
		{"a/../../evil", "", false},
		{"a/../b", "", false},
		{"..", "", false},
		{"./a", "", false},
		{"a/./b", "", false},
		{"a//b", "", false},
		{`..\evil`, "", false},
		{`C:\evil`, "", false},
		{"a\x00b", "", false},
		{"a\nb", "", false},
		{"\xff", "", false},
		{"dir//", "", false},
		{"./", "", false},
		{".", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := CheckName(tt.name)
			if !tt.ok {
				require.ErrorIs(t, err, ErrUnsafeEntry)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestExtract(t *testing.T) {
	t.Parallel()
	parent, archive, dir := setup(t)
	writeZip(t, archive,
		Entry{Name: "asm/", Mode: fs.ModeDir | 0o755},
		Entry{Name: "asm/top.step", Body: []byte("ISO-10303-21;"), Method: zip.Deflate},
		Entry{Name: "asm/parts/bolt.step", Body: bytes.Repeat([]byte("x"), 3<<20), Method: zip.Deflate},
		Entry{Name: "tool", Mode: 0o755, Body: []byte("#!/bin/sh\n")},
		Entry{Name: "empty.txt"},
	)
	files, err := Extract(archive, dir, Limits{MaxBytes: 4 << 20, MaxEntries: 5, MaxRatio: 10_000})
	require.NoError(t, err)
	require.Equal(t, []string{"asm/top.step", "asm/parts/bolt.step", "tool", "empty.txt"}, files)
	body, err := os.ReadFile(filepath.Join(dir, "asm/top.step"))
	require.NoError(t, err)
	require.Equal(t, "ISO-10303-21;", string(body))
	fi, err := os.Stat(filepath.Join(dir, "asm/parts/bolt.step"))
	require.NoError(t, err)
	require.EqualValues(t, 3<<20, fi.Size())
	fi, err = os.Stat(filepath.Join(dir, "tool"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o755), fi.Mode().Perm())
	require.ElementsMatch(t, []string{".", "in.zip", "out"}, topLevel(t, parent))
}

func topLevel(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := []string{"."}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestExtractUnsafe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		entry Entry
	}{
		{"parent", Entry{Name: "../evil"}},
		{"deep parent", Entry{Name: "a/../../evil"}},
		{"absolute", Entry{Name: "/tmp/evil"}},
		{"dot path", Entry{Name: "a/./evil"}},
		{"backslash", Entry{Name: `..\evil`}},
		{"symlink", Entry{Name: "link", Mode: fs.ModeSymlink | 0o777, Body: []byte("..")}},
		{"device", Entry{Name: "dev", Mode: fs.ModeDevice | 0o644}},
		{"fifo", Entry{Name: "fifo", Mode: fs.ModeNamedPipe | 0o644}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent, archive, dir := setup(t)
			// The bad entry comes last: nothing at all is written.
			writeZip(t, archive, Entry{Name: "ok", Body: []byte("fine")}, tt.entry)
			_, err := Extract(archive, dir, Limits{})
			require.ErrorIs(t, err, ErrUnsafeEntry)
			require.Equal(t, []string{"."}, listing(t, dir))
			require.ElementsMatch(t, []string{".", "in.zip", "out"}, topLevel(t, parent))
		})
	}
}

func TestExtractLimits(t *testing.T) {
	t.Parallel()
	zeros := bytes.Repeat([]byte{0}, 8<<20)
	zerosDeflated := deflate(t, zeros)
	random := make([]byte, 2<<20)
	for i := range random {
		random[i] = byte(i*7919 + i>>8*31)
	}
	tests := []struct {
		name    string
		lim     Limits
		entries []Entry
	}{
		{"ratio", Limits{MaxRatio: 100}, []Entry{{Name: "bomb", Body: zeros, Method: zip.Deflate}}},
		{"total", Limits{MaxBytes: 3 << 20}, []Entry{
			{Name: "a", Body: random}, {Name: "b", Body: random},
		}},
		{"entries", Limits{MaxEntries: 2}, []Entry{{Name: "a"}, {Name: "b"}, {Name: "c"}}},
		// The headers claim 1 KiB; the stream inflates to 8 MiB. The
		// limits hold on the bytes read, so the lie does not help.
		{"lying header ratio", Limits{MaxRatio: 100}, []Entry{{Body: zerosDeflated, Raw: &zip.FileHeader{
			Name: "liar", Method: zip.Deflate, CRC32: 1,
			CompressedSize64: uint64(len(zerosDeflated)), UncompressedSize64: 1024,
		}}}},
		{"lying header total", Limits{MaxBytes: 2 << 20}, []Entry{{Body: zerosDeflated, Raw: &zip.FileHeader{
			Name: "liar", Method: zip.Deflate, CRC32: 1,
			CompressedSize64: uint64(len(zerosDeflated)), UncompressedSize64: 1024,
		}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent, archive, dir := setup(t)
			writeZip(t, archive, tt.entries...)
			_, err := Extract(archive, dir, tt.lim)
			require.ErrorIs(t, err, ErrLimit)
			var written int64
			require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					fi, _ := d.Info()
					written += fi.Size()
				}
				return err
			}))
			require.Less(t, written, int64(4<<20), "stopped early, not after the whole entry")
			require.ElementsMatch(t, []string{".", "in.zip", "out"}, topLevel(t, parent))
		})
	}
}

func TestExtractCorrupt(t *testing.T) {
	t.Parallel()
	body := []byte("hello, world")
	tests := []struct {
		name    string
		write   func(t *testing.T, path string)
		corrupt bool // ErrCorrupt, else another error
	}{
		{"not a zip", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("ISO-10303-21;"), 0o644))
		}, true},
		{"empty file", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, nil, 0o644))
		}, true},
		{"truncated", func(t *testing.T, path string) {
			writeZip(t, path, Entry{Name: "a", Body: bytes.Repeat(body, 1000), Method: zip.Deflate})
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, b[:len(b)/2], 0o644))
		}, true},
		{"checksum", func(t *testing.T, path string) {
			writeZip(t, path, Entry{Body: body, Raw: &zip.FileHeader{
				Name: "a", Method: zip.Store, CRC32: crc32.ChecksumIEEE(body) + 1,
				CompressedSize64: uint64(len(body)), UncompressedSize64: uint64(len(body)),
			}})
		}, true},
		{"size", func(t *testing.T, path string) {
			d := deflate(t, body)
			writeZip(t, path, Entry{Body: d, Raw: &zip.FileHeader{
				Name: "a", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(body),
				CompressedSize64: uint64(len(d)), UncompressedSize64: uint64(len(body)) + 1,
			}})
		}, true},
		{"bad deflate", func(t *testing.T, path string) {
			junk := bytes.Repeat([]byte{0xff}, 64)
			writeZip(t, path, Entry{Body: junk, Raw: &zip.FileHeader{
				Name: "a", Method: zip.Deflate, CompressedSize64: 64, UncompressedSize64: 10,
			}})
		}, true},
		{"method", func(t *testing.T, path string) {
			writeZip(t, path, Entry{Body: body, Raw: &zip.FileHeader{
				Name: "a", Method: 12, CompressedSize64: uint64(len(body)), UncompressedSize64: uint64(len(body)),
			}})
		}, true},
		{"duplicate", func(t *testing.T, path string) {
			writeZip(t, path, Entry{Name: "a", Body: body}, Entry{Name: "a", Body: body})
		}, false},
		{"file under file", func(t *testing.T, path string) {
			writeZip(t, path, Entry{Name: "a", Body: body}, Entry{Name: "a/b", Body: body})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent, archive, dir := setup(t)
			tt.write(t, archive)
			_, err := Extract(archive, dir, Limits{MaxRatio: 100, MaxBytes: 1 << 20})
			require.Error(t, err)
			if tt.corrupt {
				require.ErrorIs(t, err, ErrCorrupt)
			}
			require.NotErrorIs(t, err, ErrUnsafeEntry)
			require.ElementsMatch(t, []string{".", "in.zip", "out"}, topLevel(t, parent))
		})
	}
}

// A symbolic link planted in the target directory after the names were
// checked still cannot lead a write outside: writes go through os.Root.
func TestExtractPlantedLink(t *testing.T) {
	t.Parallel()
	parent, archive, dir := setup(t)
	outside := filepath.Join(parent, "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "sub")))
	writeZip(t, archive, Entry{Name: "sub/evil", Body: []byte("x")})
	_, err := Extract(archive, dir, Limits{})
	require.Error(t, err)
	require.NoFileExists(t, filepath.Join(outside, "evil"))
}

func BenchmarkExtract(b *testing.B) {
	dir := b.TempDir()
	archive := filepath.Join(dir, "in.zip")
	var entries []Entry
	for i := range 20 {
		entries = append(entries, Entry{Name: "dir/f" + string(rune('a'+i)), Body: bytes.Repeat([]byte("solid x\n"), 8<<10), Method: zip.Deflate})
	}
	writeZip(b, archive, entries...)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "out", string(rune('a'+i%26))+filepath.Base(b.TempDir()))
		require.NoError(b, os.MkdirAll(out, 0o755))
		if _, err := Extract(archive, out, Limits{MaxRatio: 1000}); err != nil {
			b.Fatal(err)
		}
		_ = os.RemoveAll(out)
	}
}
