package storage_test

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/drover-dev/drover/storage"
	"github.com/drover-dev/drover/storage/storagetest"
)

// FuzzValidateKey checks that every key ValidateKey accepts is a plain
// relative path that stays below any directory it is joined to, and that
// a prefix made of it is accepted too.
func FuzzValidateKey(f *testing.F) {
	for _, k := range storagetest.InvalidKeys {
		f.Add(k)
	}
	for _, k := range []string{"a", "items/x/original/part one.step", "..a", "a..", ".a/b", "模型.glb", "C:/x", "c:x", "NUL", "a/NUL.txt", "a:b", "/.."} {
		f.Add(k)
	}
	base := filepath.FromSlash("/data/drover")
	f.Fuzz(func(t *testing.T, key string) {
		if storage.ValidateKey(key) != nil {
			if storage.ValidatePrefix(key) == nil && key != "" && !strings.HasSuffix(key, "/") {
				t.Fatalf("prefix %q accepted, key refused", key)
			}
			return
		}
		if storage.ValidatePrefix(key) != nil || storage.ValidatePrefix(key+"/") != nil {
			t.Fatalf("key %q accepted, as a prefix refused", key)
		}
		if !utf8.ValidString(key) || len(key) > storage.MaxKeyLen {
			t.Fatalf("accepted %q: not UTF-8 or too long", key)
		}
		if strings.ContainsAny(key, "\\\x00") || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
			t.Fatalf("accepted %q", key)
		}
		for _, elem := range strings.Split(key, "/") {
			if elem == "" || elem == "." || elem == ".." || strings.HasPrefix(elem, storage.TempPrefix) {
				t.Fatalf("accepted %q with element %q", key, elem)
			}
		}
		if !filepath.IsLocal(filepath.FromSlash(key)) {
			t.Fatalf("accepted %q, not local", key)
		}
		joined := filepath.Join(base, filepath.FromSlash(key))
		if !strings.HasPrefix(joined, base+string(filepath.Separator)) {
			t.Fatalf("accepted %q, joined it is %q", key, joined)
		}
		if filepath.ToSlash(filepath.Clean(filepath.FromSlash(key))) != key {
			t.Fatalf("accepted %q, not clean", key)
		}
	})
}
