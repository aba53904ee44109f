package farm

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
)

// fakeModels serves file contents by source name.
func fakeModels(files map[string]string) ModelFetcher {
	return ModelFetcherFunc(func(_ context.Context, f farmapi.ModelFile, w io.Writer) (int64, error) {
		body, ok := files[f.Source]
		if !ok {
			return 0, errors.New("no such file upstream")
		}
		n, err := io.Copy(w, strings.NewReader(body))
		return n, err
	})
}

// entries lists a directory's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := []string{}
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestSessionDir(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	root := t.TempDir()
	p := adapterPool("sc", "listen", ProtocolStream)
	p.InitialUse = time.Hour
	other := adapterPool("plain", "listen", ProtocolStream)
	f := newTestFarm(t, Config{Slots: 3, OnExit: exits.onExit, Pools: []PoolSpec{p, other}, SessionsDir: root,
		Models: fakeModels(map[string]string{"cube.glb": "glTF cube", "gear.glb": "glTF gear", "v2.glb": "glTF cube v2"})})

	inst, err := f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true})
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Len(t, entries(t, root), 1, "one session directory")
	dir := filepath.Join(root, entries(t, root)[0])
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o555), fi.Mode().Perm(), "not writable by the instance")
	require.Empty(t, entries(t, dir))

	ctx := startCtx(t)
	require.NoError(t, f.AddSessionFiles(ctx, inst.ID, []farmapi.ModelFile{
		{Name: "cube.glb", Item: "i1", Source: "cube.glb", Size: 9}, {Name: "gear.glb", Item: "i2", Source: "gear.glb"}}))
	require.Equal(t, []string{"cube.glb", "gear.glb"}, entries(t, dir))
	for name, want := range map[string]string{"cube.glb": "glTF cube", "gear.glb": "glTF gear"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, want, string(b))
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o444), fi.Mode().Perm())
	}
	fi, err = os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o555), fi.Mode().Perm(), "read-only again after the adds")

	// A reconverted item replaces its file.
	require.NoError(t, f.AddSessionFiles(ctx, inst.ID, []farmapi.ModelFile{{Name: "cube.glb", Item: "i1", Source: "v2.glb"}}))
	b, err := os.ReadFile(filepath.Join(dir, "cube.glb"))
	require.NoError(t, err)
	require.Equal(t, "glTF cube v2", string(b))

	plain, err := f.StartInstance(startCtx(t), "plain")
	require.NoError(t, err)
	killOnCleanup(t, plain.PID)
	bad := []struct {
		name  string
		id    string
		files []farmapi.ModelFile
		want  error
	}{
		{"escaping name", inst.ID, []farmapi.ModelFile{{Name: "../x.glb", Source: "cube.glb"}}, ErrBadModel},
		{"hidden name", inst.ID, []farmapi.ModelFile{{Name: ".x", Source: "cube.glb"}}, ErrBadModel},
		{"empty name", inst.ID, []farmapi.ModelFile{{Source: "cube.glb"}}, ErrBadModel},
		{"unknown instance", "sc-nope", []farmapi.ModelFile{{Name: "x.glb", Source: "cube.glb"}}, ErrNotFound},
		{"no session directory", plain.ID, []farmapi.ModelFile{{Name: "x.glb", Source: "cube.glb"}}, ErrNoSessionDir},
		{"fetch fails", inst.ID, []farmapi.ModelFile{{Name: "x.glb", Source: "missing.glb"}}, ErrModelFetch},
		{"short fetch", inst.ID, []farmapi.ModelFile{{Name: "x.glb", Source: "gear.glb", Size: 100}}, ErrModelFetch},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, f.AddSessionFiles(ctx, tt.id, tt.files), tt.want)
			require.Equal(t, []string{"cube.glb", "gear.glb"}, entries(t, dir), "nothing added")
			require.Len(t, entries(t, root), 1, "no temporary file left")
		})
	}
	_, err = f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true, Model: "x"})
	require.ErrorIs(t, err, ErrBadModel)

	// A stop removes the directory.
	require.NoError(t, f.StopInstance(ctx, inst.ID))
	require.Empty(t, entries(t, root))

	// So does a crash.
	inst, err = f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true})
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.NoError(t, f.AddSessionFiles(ctx, inst.ID, []farmapi.ModelFile{{Name: "cube.glb", Source: "cube.glb"}}))
	require.Len(t, entries(t, root), 1)
	require.NoError(t, syscall.Kill(inst.PID, syscall.SIGKILL))
	require.Error(t, exits.wait(t, inst.ID))
	require.Empty(t, entries(t, root))
}

// TestSessionDirInitialUse: an instance nobody connected to within its
// initial-use time is killed, and its directory goes with it.
func TestSessionDirInitialUse(t *testing.T) {
	t.Parallel()
	exits := newExitLog()
	root := t.TempDir()
	p := adapterPool("sc", "listen", ProtocolStream)
	p.InitialUse = 300 * time.Millisecond
	f := newTestFarm(t, Config{Slots: 1, OnExit: exits.onExit, Pools: []PoolSpec{p}, SessionsDir: root})
	inst, err := f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true})
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	require.Len(t, entries(t, root), 1)
	require.ErrorContains(t, exits.wait(t, inst.ID), "no client connected within 300ms")
	require.Empty(t, entries(t, root))
}

// TestSessionsTempRoot: without SessionsDir a farm with stream pools
// keeps session directories in a temporary root of its own, which Close
// removes.
func TestSessionsTempRoot(t *testing.T) {
	t.Parallel()
	f, err := New(Config{Slots: 1, Pools: []PoolSpec{adapterPool("sc", "listen", ProtocolStream)}, Logger: testLogger(t)})
	require.NoError(t, err)
	inst, err := f.StartInstanceWith(startCtx(t), "sc", StartOptions{SessionDir: true})
	require.NoError(t, err)
	killOnCleanup(t, inst.PID)
	root := f.sessionsDir
	require.Len(t, entries(t, root), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, f.Close(ctx))
	_, err = os.Stat(root)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func FuzzCheckFileName(f *testing.F) {
	for _, s := range []string{"cube.glb", "../x", "a/b", ".x", "", "a\x00b", `a\b`, "☃.glb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckFileName(name) != nil {
			return
		}
		require.True(t, filepath.IsLocal(name), "%q", name)
		require.Equal(t, name, filepath.Base(name))
		require.NotEqual(t, "..", name)
	})
}
