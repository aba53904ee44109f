package items_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/storage"
)

// BenchmarkUpdate: one item updated over and over, as a conversion's
// attempts and webhook deliveries do. On storage every update writes and
// syncs the item's record.
func BenchmarkUpdate(b *testing.B) {
	for _, bb := range []struct {
		name string
		open func(b *testing.B) items.Store
	}{
		{"memory", func(*testing.B) items.Store { return items.NewMemory() }},
		{"storage", func(b *testing.B) items.Store {
			fs, err := storageFS(b)
			require.NoError(b, err)
			l, err := items.Open(b.Context(), fs, items.Options{})
			require.NoError(b, err)
			return l
		}},
		{"redis", func(b *testing.B) items.Store {
			srv := redistest.Start(b)
			r, err := items.NewRedis(b.Context(), items.RedisOptions{URL: srv.URL()})
			require.NoError(b, err)
			return r
		}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			st := bb.open(b)
			defer st.Close()
			ctx := b.Context()
			_, err := st.Create(ctx, items.Item{ID: "b", Name: "part.step", State: items.StatePending})
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Update(ctx, "b", func(it *items.Item) error { it.Attempts++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func storageFS(b *testing.B) (*storage.FS, error) {
	fs, err := storage.NewFS(b.TempDir())
	if err == nil {
		b.Cleanup(func() { _ = fs.Close() })
	}
	return fs, err
}
