package conversion_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
)

// TestDirectUpload: an item made for a direct upload stays UPLOADING, a
// reconvert before the file is there is refused and changes nothing, a
// file above the declared size is refused whether it comes through
// PutAwaited or straight into storage, and once the file is there,
// reconvert queues the first conversion, which completes.
func TestDirectUpload(t *testing.T) {
	ctx := context.Background()
	f := newService(t, queue.Options{}, func(c *conversion.Config) { c.MaxUpload = 100 })

	_, _, err := f.svc.BeginDirect(ctx, conversion.Options{}, "m.stl", 101)
	require.ErrorIs(t, err, conversion.ErrTooLarge)
	for _, name := range []string{"", "a/b.stl", "..", "x\x00.stl"} {
		_, _, err = f.svc.BeginDirect(ctx, conversion.Options{}, name, 0)
		require.ErrorIs(t, err, conversion.ErrInvalid, name)
	}
	_, _, err = f.svc.BeginDirect(ctx, conversion.Options{Webhook: "ftp://x"}, "m.stl", 0)
	require.ErrorIs(t, err, conversion.ErrInvalid)

	it, key, err := f.svc.BeginDirect(ctx, conversion.Options{}, "m.stl", 10)
	require.NoError(t, err)
	require.Equal(t, items.StateUploading, it.State)
	require.Equal(t, "m.stl", it.Name)
	require.True(t, strings.HasPrefix(key, items.Dir(it.ID)+"original/"), key)
	stored := strings.TrimPrefix(key, items.Dir(it.ID)+"original/")

	_, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.ErrorIs(t, err, conversion.ErrInvalid)
	require.Contains(t, err.Error(), "m.stl has not been uploaded")

	_, err = f.svc.PutAwaited(ctx, it.ID, "other.stl", strings.NewReader("x"))
	require.ErrorIs(t, err, conversion.ErrNotAwaited)
	_, err = f.svc.PutAwaited(ctx, it.ID, stored, strings.NewReader("01234567890"))
	require.ErrorIs(t, err, conversion.ErrTooLarge)
	_, err = f.st.Stat(ctx, key)
	require.Error(t, err, "nothing stored of a refused upload")

	// A presigned PUT reaches storage unchecked: reconvert checks it.
	_, err = f.st.Put(ctx, key, strings.NewReader("01234567890"))
	require.NoError(t, err)
	_, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.ErrorIs(t, err, conversion.ErrTooLarge)
	_, err = f.st.Stat(ctx, key)
	require.Error(t, err, "the oversized file is removed")
	got, err := f.svc.Get(ctx, it.ID)
	require.NoError(t, err)
	require.Equal(t, items.StateUploading, got.State)
	require.NotNil(t, got.Awaiting, "the item awaits its file still")

	n, err := f.svc.PutAwaited(ctx, it.ID, stored, strings.NewReader("0123456789"))
	require.NoError(t, err)
	require.Equal(t, int64(10), n)
	// A second PUT that fails leaves the first file as it was.
	_, err = f.svc.PutAwaited(ctx, it.ID, stored, strings.NewReader("too many bytes"))
	require.ErrorIs(t, err, conversion.ErrTooLarge)

	shattered := true
	got, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{ProcessShattered: &shattered})
	require.NoError(t, err)
	require.Equal(t, items.StatePending, got.State)
	require.Equal(t, 0, got.Generation, "the first conversion")
	require.True(t, got.ProcessShattered)
	require.Nil(t, got.Awaiting)
	require.Equal(t, []items.Original{{Name: "m.stl", Stored: stored, Size: 10}}, got.Originals)
	_, err = f.svc.PutAwaited(ctx, it.ID, stored, strings.NewReader("x"))
	require.ErrorIs(t, err, conversion.ErrNotAwaited, "no upload once converting")

	j := lease(t, f.svc, "farm-a")
	require.Equal(t, it.ID, j.Item)
	r, _, err := f.svc.OpenJobInput(ctx, j.ID, j.Token, 0)
	require.NoError(t, err)
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.Equal(t, "0123456789", string(b))
	_, err = complete(f.svc, j, "glb bytes")
	require.NoError(t, err)
	done, err := f.svc.Get(ctx, it.ID)
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, done.State)

	key, file, err := f.svc.OutputKey(ctx, it.ID, "GLB")
	require.NoError(t, err)
	require.Equal(t, items.OutputKey(it.ID, file.Name), key)
	_, _, err = f.svc.OutputKey(ctx, it.ID, "scs")
	require.ErrorIs(t, err, conversion.ErrNotFound)
	_, _, err = f.svc.OutputKey(ctx, "no-such-item", "glb")
	require.ErrorIs(t, err, conversion.ErrNotFound)

	// A reconvert now is an ordinary one.
	again, err := f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.NoError(t, err)
	require.Equal(t, 1, again.Generation)
}
