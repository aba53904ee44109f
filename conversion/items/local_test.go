package items_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/items/itemstest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/storage"
	"github.com/drover-dev/drover/storage/storagetest"
)

func TestMemory(t *testing.T) {
	itemstest.Run(t, func(*testing.T) items.Store { return items.NewMemory() })
}

func newFS(t *testing.T, dir string) *storage.FS {
	t.Helper()
	st, err := storage.NewFS(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func openLocal(t *testing.T, st storage.Storage) *items.Local {
	t.Helper()
	l, err := items.Open(t.Context(), st, items.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestLocal(t *testing.T) {
	itemstest.Run(t, func(t *testing.T) items.Store { return openLocal(t, newFS(t, t.TempDir())) })
}

// TestLocalRestart: a new store on the same directory (drover up started
// again) has the items, in their order, and LastUpdated, also when the
// last change was a delete.
func TestLocalRestart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs := newFS(t, dir)
	l := openLocal(t, fs)
	for _, id := range []string{"c", "a", "b", "gone"} {
		_, err := l.Create(ctx, itemstest.Full(id))
		require.NoError(t, err)
	}
	storagetest.Put(t, fs, items.OriginalKey("a", "upload.zip"), "PK")
	storagetest.Put(t, fs, items.OutputKey("a", "top.step.glb"), "glTF")
	_, err := l.Update(ctx, "a", func(it *items.Item) error {
		return it.Succeed(it.Generation, []items.File{{Name: "top.step.glb", Type: "glb", Size: 4}})
	})
	require.NoError(t, err)
	require.NoError(t, l.Delete(ctx, "gone"))
	before, err := l.List(ctx)
	require.NoError(t, err)
	last, err := l.LastUpdated(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, fs.Close())

	// The record is JSON beside the item's files.
	b, err := os.ReadFile(filepath.Join(dir, "items", "a", "item.json"))
	require.NoError(t, err)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(b, &rec))
	require.Equal(t, "a", rec["storageID"])
	require.Equal(t, "SUCCESS", rec["conversionState"])
	_, err = os.Stat(filepath.Join(dir, "items", "a", "outputs", "top.step.glb"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, "items", "gone", "item.json"))
	require.ErrorIs(t, err, os.ErrNotExist)

	fs2 := newFS(t, dir)
	again := openLocal(t, fs2)
	after, err := again.List(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Equal(t, []string{"c", "a", "b"}, []string{after[0].ID, after[1].ID, after[2].ID})
	last2, err := again.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, last, last2, "the delete's LastUpdated survives")

	// Changes go on from there; the files are where they were.
	it, err := again.Create(ctx, items.Item{ID: "d"})
	require.NoError(t, err)
	require.True(t, it.Created.After(last))
	require.Equal(t, "glTF", storagetest.Read(t, fs2, items.OutputKey("a", "top.step.glb")))
	_, err = again.Update(ctx, "a", func(it *items.Item) error { return it.Succeed(it.Generation, nil) })
	require.ErrorIs(t, err, items.ErrTerminal, "the state rules hold across restarts")
}

// TestLocalBadRecords: Open leaves out what is not a readable record of
// its item, and says so.
func TestLocalBadRecords(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fs := newFS(t, dir)
	l := openLocal(t, fs)
	_, err := l.Create(ctx, items.Item{ID: "good", Name: "good"})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	storagetest.Put(t, fs, items.MetaKey("garbage"), "{not json")
	storagetest.Put(t, fs, items.MetaKey("wrongid"), `{"storageID":"other","conversionState":"PENDING"}`)
	storagetest.Put(t, fs, items.MetaKey("badstate"), `{"storageID":"badstate","conversionState":"DONE"}`)
	storagetest.Put(t, fs, items.OriginalKey("orphan", "m.stl"), "solid")
	storagetest.Put(t, fs, "items/not.an.id/item.json", `{"storageID":"not.an.id"}`)
	storagetest.Put(t, fs, "items/lastUpdated.json", `{"lastUpdated":"2000-01-01T00:00:00Z"}`)

	var logs testutil.SyncBuffer
	again, err := items.Open(ctx, fs, items.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer again.Close()
	list, err := again.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "good", list[0].ID)
	last, err := again.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, list[0].Updated, last, "the newest item's time when the saved one is older")
	for _, id := range []string{"garbage", "wrongid", "badstate"} {
		require.Contains(t, logs.String(), "items/"+id+"/item.json")
	}
}

// failing is storage whose Puts fail while fail is set.
type failing struct {
	storage.Storage
	fail atomic.Bool
}

var errDisk = errors.New("disk full")

func (f *failing) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if f.fail.Load() {
		return 0, errDisk
	}
	return f.Storage.Put(ctx, key, r)
}

// TestLocalWriteFails: a change that cannot be written is not made.
func TestLocalWriteFails(t *testing.T) {
	ctx := t.Context()
	st := &failing{Storage: newFS(t, t.TempDir())}
	l := openLocal(t, st)
	created, err := l.Create(ctx, items.Item{ID: "w", State: items.StatePending})
	require.NoError(t, err)
	ch, err := l.Subscribe(ctx)
	require.NoError(t, err)

	st.fail.Store(true)
	_, err = l.Update(ctx, "w", func(it *items.Item) error { return it.Succeed(0, nil) })
	require.ErrorIs(t, err, errDisk)
	_, err = l.Create(ctx, items.Item{ID: "x"})
	require.ErrorIs(t, err, errDisk)
	require.ErrorIs(t, l.Delete(ctx, "w"), errDisk)
	got, err := l.Get(ctx, "w")
	require.NoError(t, err)
	require.Equal(t, created, got)
	last, err := l.LastUpdated(ctx)
	require.NoError(t, err)
	require.Equal(t, created.Updated, last)
	_, err = l.Get(ctx, "x")
	require.ErrorIs(t, err, items.ErrNotFound)

	st.fail.Store(false)
	_, err = l.Update(ctx, "w", func(it *items.Item) error { return it.Succeed(0, nil) })
	require.NoError(t, err)
	e := itemstest.Next(t, ch)
	require.Equal(t, items.EventUpdated, e.Type, "the failed changes published nothing")
}

// TestLocalSlowSubscriber: a subscriber that falls behind loses events
// and is told so with EventResync before the next one it gets.
func TestLocalSlowSubscriber(t *testing.T) {
	ctx := t.Context()
	l := items.NewMemory()
	defer l.Close()
	ch, err := l.Subscribe(ctx)
	require.NoError(t, err)
	_, err = l.Create(ctx, items.Item{ID: "s"})
	require.NoError(t, err)
	const n = 600 // more than a subscriber's buffer
	for i := range n {
		_, err := l.Update(ctx, "s", func(it *items.Item) error { it.Attempts = i + 1; return nil })
		require.NoError(t, err)
	}
	got := 0
	for range cap(ch) {
		<-ch
		got++
	}
	require.Less(t, got, n+1)
	last, err := l.Update(ctx, "s", func(it *items.Item) error { it.Name = "last"; return nil })
	require.NoError(t, err)
	require.Equal(t, items.EventResync, itemstest.Next(t, ch).Type)
	e := itemstest.Next(t, ch)
	require.Equal(t, last.Updated, e.LastUpdated)
}

// TestLayout: the keys of an item's files.
func TestLayout(t *testing.T) {
	require.Equal(t, "items/x/", items.Dir("x"))
	require.Equal(t, "items/x/item.json", items.MetaKey("x"))
	require.Equal(t, "items/x/original/u.zip", items.OriginalKey("x", "u.zip"))
	require.Equal(t, "items/x/outputs/m.glb", items.OutputKey("x", "m.glb"))
	id := items.NewID()
	require.NoError(t, items.ValidateID(id))
	require.NoError(t, storage.ValidateKey(items.MetaKey(id)))
	require.True(t, strings.HasPrefix(items.OutputKey(id, "a"), items.Dir(id)))
	require.NotEqual(t, id, items.NewID())
}
