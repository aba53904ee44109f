package items_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/items"
)

func TestState(t *testing.T) {
	for _, tt := range []struct {
		s                       items.State
		valid, failed, terminal bool
		reason                  string
	}{
		{items.StateUploading, true, false, false, ""},
		{items.StatePending, true, false, false, ""},
		{items.StateSuccess, true, false, true, ""},
		{items.Failed("Conversion Error"), true, true, true, "Conversion Error"},
		{items.Failed("Specify startPath with ZIP"), true, true, true, "Specify startPath with ZIP"},
		{"ERROR - Unzip Error", true, true, true, "Unzip Error"},
		{"ERROR - ", false, true, true, ""},
		{"ERROR", false, false, false, ""},
		{"ERROR - a\tb", false, true, true, "a\tb"},
		{"", false, false, false, ""},
		{"pending", false, false, false, ""},
	} {
		t.Run(string(tt.s), func(t *testing.T) {
			require.Equal(t, tt.valid, tt.s.Valid())
			require.Equal(t, tt.failed, tt.s.Failed())
			require.Equal(t, tt.terminal, tt.s.Terminal())
			require.Equal(t, tt.reason, tt.s.Reason())
		})
	}
}

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "0", items.NewID(), "A_b-9", "lastUpdated"} {
		require.NoError(t, items.ValidateID(id), id)
	}
	for _, id := range []string{"", "-a", "_a", "a.b", "a/b", "..", "a b", "a\x00", "é"} {
		require.ErrorIs(t, items.ValidateID(id), items.ErrInvalid, id)
	}
}

// TestItemMethods: Succeed and Fail check the generation before the
// state; Reconvert clears what belonged to the last conversion.
func TestItemMethods(t *testing.T) {
	it := items.Item{ID: "x", State: items.StateSuccess, Generation: 1}
	require.ErrorIs(t, it.Succeed(0, nil), items.ErrStale)
	require.ErrorIs(t, it.Succeed(1, nil), items.ErrTerminal)
	require.ErrorIs(t, it.Fail(1, "", "d"), items.ErrInvalid)
	it.Reconvert()
	require.ErrorIs(t, it.Fail(1, "Conversion Error", "d"), items.ErrStale)
	require.NoError(t, it.Fail(2, "Conversion Error", "d"))
	require.Equal(t, items.Failed("Conversion Error"), it.State)

	files := []items.File{{Name: "a"}}
	it = items.Item{ID: "y", State: items.StatePending, Delivery: &items.Delivery{Attempts: 1},
		Awaiting: &items.Original{Name: "m.stl", Size: 5}}
	require.NoError(t, it.Succeed(0, files))
	files[0].Name = "changed"
	require.Equal(t, "a", it.Files[0].Name, "Succeed copies the files")
	c := it.Clone()
	c.Files[0].Name, c.Delivery.Attempts, c.Awaiting.Size = "c", 2, 9
	require.Equal(t, "a", it.Files[0].Name)
	require.Equal(t, 1, it.Delivery.Attempts, "Clone is deep")
	require.Equal(t, int64(5), it.Awaiting.Size, "Clone is deep")
}
