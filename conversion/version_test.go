package conversion_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
)

// TestJobInputVersion: a reconversion of unchanged files leases them in the
// same version (a farm's cache hit); a replaced file gets another.
func TestJobInputVersion(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{}, "cube.stl", strings.NewReader("solid a"))
	require.NoError(t, err)
	first := lease(t, f.svc, "f")
	require.Len(t, first.Inputs, 1)
	require.NotEmpty(t, first.Inputs[0].Version)

	_, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.NoError(t, err)
	second := lease(t, f.svc, "f")
	require.Equal(t, first.Inputs[0].Version, second.Inputs[0].Version, "unchanged file, same version")

	// The file is replaced (as a presigned upload would), with the same
	// size.
	got, err := f.svc.Get(ctx, it.ID)
	require.NoError(t, err)
	_, err = f.st.Put(ctx, items.OriginalKey(it.ID, got.Originals[0].Stored), strings.NewReader("solid b"))
	require.NoError(t, err)
	_, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{})
	require.NoError(t, err)
	third := lease(t, f.svc, "f")
	require.NotEqual(t, first.Inputs[0].Version, third.Inputs[0].Version, "a replaced file has a new version")
}
