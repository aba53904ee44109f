package storage_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/storage"
	"github.com/drover-dev/drover/storage/storagetest"
)

func newFS(t *testing.T, dir string) *storage.FS {
	t.Helper()
	st, err := storage.NewFS(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestFS(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage { return newFS(t, t.TempDir()) })
}

// TestFSLayout: key a/b is the file DIR/a/b, and a new FS on the same
// directory (a restart) finds what the last one stored.
func TestFSLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // made by NewFS
	st := newFS(t, dir)
	storagetest.Put(t, st, "items/x/original/m.stl", "solid m")
	b, err := os.ReadFile(filepath.Join(dir, "items", "x", "original", "m.stl"))
	require.NoError(t, err)
	require.Equal(t, "solid m", string(b))
	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "again")

	again := newFS(t, dir)
	require.Equal(t, "solid m", storagetest.Read(t, again, "items/x/original/m.stl"))
	p, err := again.LocalPath("items/x/original/m.stl")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(again.Dir(), "items/x/original/m.stl"), p)
}

// TestFSSymlinks: links planted in the directory that point outside are
// not followed by any method.
func TestFSSymlinks(t *testing.T) {
	ctx := t.Context()
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	dir := t.TempDir()
	st := newFS(t, dir)
	storagetest.Put(t, st, "items/ok/file", "fine")
	// A link to a directory outside, as a key's directory, and a link to
	// a file outside, as a key.
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "items", "evil")))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "items", "ok", "link")))
	// A link to an outside path that does not exist yet.
	require.NoError(t, os.Symlink(filepath.Join(outside, "new"), filepath.Join(dir, "items", "ok", "dangling")))

	_, err := st.Open(ctx, "items/evil/secret")
	require.Error(t, err)
	_, err = st.Open(ctx, "items/ok/link")
	require.Error(t, err)
	_, err = st.Stat(ctx, "items/evil/secret")
	require.Error(t, err)
	_, err = st.LocalPath("items/evil/secret")
	require.Error(t, err)
	_, err = st.LocalPath("items/ok/link")
	require.Error(t, err)

	_, err = st.Put(ctx, "items/evil/planted", strings.NewReader("x"))
	require.Error(t, err)
	_, err = os.Stat(filepath.Join(outside, "planted"))
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing written outside")

	// Put over a link replaces the link, never writes through it.
	storagetest.Put(t, st, "items/ok/dangling", "inside")
	_, err = os.Stat(filepath.Join(outside, "new"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	storagetest.Put(t, st, "items/ok/link", "replaced")
	b, err := os.ReadFile(filepath.Join(outside, "secret"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(b))

	list, err := st.List(ctx, "items/")
	require.NoError(t, err)
	var names []string
	for _, in := range list {
		names = append(names, in.Key)
	}
	require.Equal(t, []string{"items/ok/dangling", "items/ok/file", "items/ok/link"}, names, "links are not listed or followed")

	// Deleting a prefix removes the link, not what it points to.
	_, err = st.DeletePrefix(ctx, "items/")
	require.NoError(t, err)
	b, err = os.ReadFile(filepath.Join(outside, "secret"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(b))
	_, err = os.Lstat(filepath.Join(dir, "items", "evil"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	// The data directory itself replaced by a link after NewFS: the FS
	// holds the directory it opened.
	require.NoError(t, os.Rename(dir, dir+".moved"))
	require.NoError(t, os.Symlink(outside, dir))
	t.Cleanup(func() { _ = os.Remove(dir); _ = os.Rename(dir+".moved", dir) })
	storagetest.Put(t, st, "after", "x")
	_, err = os.Stat(filepath.Join(outside, "after"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// TestFSTempFiles: temporary files stay hidden, and Sweep removes those
// a crash left behind.
func TestFSTempFiles(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st := newFS(t, dir)
	storagetest.Put(t, st, "items/t/file", "x")
	old := filepath.Join(dir, "items", "t", storage.TempPrefix+"crashed")
	fresh := filepath.Join(dir, "items", storage.TempPrefix+"running")
	require.NoError(t, os.WriteFile(old, []byte("half"), 0o644))
	require.NoError(t, os.WriteFile(fresh, []byte("half"), 0o644))
	past := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(old, past, past))

	list, err := st.List(ctx, "")
	require.NoError(t, err)
	require.Len(t, list, 1)

	n, err := st.Sweep(ctx, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = os.Stat(old)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(fresh)
	require.NoError(t, err, "a Put that may still run keeps its file")

	// A successful Put leaves no temporary file behind.
	entries, err := os.ReadDir(filepath.Join(dir, "items", "t"))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

// TestFSDeletePrefixDirs: DeletePrefix leaves no empty directories under
// the prefix, and nothing above it.
func TestFSDeletePrefixDirs(t *testing.T) {
	dir := t.TempDir()
	st := newFS(t, dir)
	storagetest.Put(t, st, "items/a/original/deep/m.stl", "x")
	storagetest.Put(t, st, "items/a/item.json", "{}")
	storagetest.Put(t, st, "items/b/item.json", "{}")
	n, err := st.DeletePrefix(t.Context(), "items/a/")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	_, err = os.Stat(filepath.Join(dir, "items", "a"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(filepath.Join(dir, "items", "b", "item.json"))
	require.NoError(t, err)
}

// TestFSStreaming: a large Put made on the fly keeps the heap flat. 256
// MiB always; 1 GiB unless -short.
func TestFSStreaming(t *testing.T) {
	size := int64(256 << 20)
	if !testing.Short() {
		size = 1 << 30
	}
	st := newFS(t, t.TempDir())
	took := storagetest.HeapFlat(t, st, "items/big/original/upload.bin", size, 64<<20)
	if took > 10*time.Second {
		t.Logf("slow disk: %v for %d MiB", took, size>>20)
	}
}

func TestFSCanceledWalk(t *testing.T) {
	st := newFS(t, t.TempDir())
	storagetest.Put(t, st, "a/b", "x")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := st.List(ctx, "")
	require.ErrorIs(t, err, context.Canceled)
	_, err = st.DeletePrefix(ctx, "a/")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "x", storagetest.Read(t, st, "a/b"))
}
