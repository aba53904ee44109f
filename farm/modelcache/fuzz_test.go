package modelcache_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm/modelcache"
)

// FuzzParseName checks the reading of the cache directory's file names,
// which a restarted farm trusts to decide what it may remove: only the
// names the cache makes are entries or temporary files, and every entry
// name it makes parses back to its key's hash.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"", ".lock", ".part-", ".part-123", "notes.txt", "../x", ".part-a/b",
		modelcache.EntryName("a"), strings.ToUpper(modelcache.EntryName("a")),
		modelcache.EntryName("a") + "x", modelcache.HashKey("a")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		kind, hash := modelcache.ParseName(name)
		switch kind {
		case modelcache.NameEntry:
			require.Len(t, hash, 64)
			require.True(t, strings.HasPrefix(name, hash+"-"))
			require.Len(t, name, 64+1+16)
			require.Equal(t, strings.ToLower(name), name)
			require.NotContains(t, name, "/")
		case modelcache.NamePart:
			require.Empty(t, hash)
			require.True(t, strings.HasPrefix(name, ".part-"))
			require.NotContains(t, name, "/")
		case modelcache.NameOther:
			require.Empty(t, hash)
		default:
			t.Fatalf("kind %d", kind)
		}
		k, h := modelcache.ParseName(modelcache.EntryName(name))
		require.Equal(t, modelcache.NameEntry, k)
		require.Equal(t, modelcache.HashKey(name), h)
	})
}
