package storage_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/storage"
	"github.com/drover-dev/drover/storage/storagetest"
)

// TestFSMove: a move takes the object to its new key, replaces what was
// there, leaves nothing behind, and refuses a missing object, a directory
// and bad keys.
func TestFSMove(t *testing.T) {
	st := newFS(t, t.TempDir())
	ctx := t.Context()
	storagetest.Put(t, st, "items/a/staging/0-x/m.glb", "glb")
	require.NoError(t, st.Move(ctx, "items/a/staging/0-x/m.glb", "items/a/outputs/m.glb"))
	require.Equal(t, "glb", storagetest.Read(t, st, "items/a/outputs/m.glb"))
	_, err := st.Stat(ctx, "items/a/staging/0-x/m.glb")
	require.ErrorIs(t, err, storage.ErrNotFound)

	storagetest.Put(t, st, "items/a/staging/1-y/m.glb", "newer")
	require.NoError(t, st.Move(ctx, "items/a/staging/1-y/m.glb", "items/a/outputs/m.glb"))
	require.Equal(t, "newer", storagetest.Read(t, st, "items/a/outputs/m.glb"), "it replaces")
	list, err := st.List(ctx, "items/a/")
	require.NoError(t, err)
	require.Len(t, list, 1)

	require.ErrorIs(t, st.Move(ctx, "items/a/staging/1-y/m.glb", "items/a/outputs/x"), storage.ErrNotFound)
	require.ErrorIs(t, st.Move(ctx, "items/a/outputs", "items/b"), storage.ErrNotFound, "a directory is no object")
	require.ErrorIs(t, st.Move(ctx, "../escape", "items/x"), storage.ErrInvalidKey)
	require.ErrorIs(t, st.Move(ctx, "items/a/outputs/m.glb", "/abs"), storage.ErrInvalidKey)
	require.Equal(t, "newer", storagetest.Read(t, st, "items/a/outputs/m.glb"), "a refused move changes nothing")
}

// TestFSMoveRace: of movers racing for one object, one moves it and the
// others find it gone.
func TestFSMoveRace(t *testing.T) {
	st := newFS(t, t.TempDir())
	ctx := t.Context()
	storagetest.Put(t, st, "s/o", "x")
	var moved, gone atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := st.Move(ctx, "s/o", "d/o")
			switch {
			case err == nil:
				moved.Add(1)
			case errors.Is(err, storage.ErrNotFound):
				gone.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, moved.Load())
	require.EqualValues(t, 7, gone.Load())
	require.Equal(t, "x", storagetest.Read(t, st, "d/o"))
}
