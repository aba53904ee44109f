package safezip

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCheckName checks that every name CheckName accepts stays below the
// directory it is joined to, whatever the name, and that acceptance is
// stable: the returned path is accepted again unchanged.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{
		"a.step", "dir/", "dir/sub/part.stl", "../evil", "/etc/passwd", "a/../../b",
		`..\evil`, "a//b", "./a", "a\x00b", "\xff", "..", "...", "a/..b/c",
	} {
		f.Add(s)
	}
	const base = "/srv/item/zip"
	f.Fuzz(func(t *testing.T, name string) {
		got, err := CheckName(name)
		if err != nil {
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("CheckName(%q): error %v does not wrap ErrUnsafeEntry", name, err)
			}
			return
		}
		joined := filepath.Join(base, got)
		if !strings.HasPrefix(joined, base+"/") {
			t.Fatalf("CheckName(%q) = %q, which joins to %q outside %s", name, got, joined, base)
		}
		if joined != base+"/"+got {
			t.Fatalf("CheckName(%q) = %q is not clean: joins to %q", name, got, joined)
		}
		if strings.ContainsAny(got, "\\\x00\n") || !utf8.ValidString(got) {
			t.Fatalf("CheckName(%q) = %q has a backslash, a control character or bad UTF-8", name, got)
		}
		for _, elem := range strings.Split(got, "/") {
			if elem == "" || elem == "." || elem == ".." {
				t.Fatalf("CheckName(%q) = %q has the element %q", name, got, elem)
			}
		}
		again, err := CheckName(got)
		if err != nil || again != got {
			t.Fatalf("CheckName(%q) = %q, %v; want %q, nil", got, again, err, got)
		}
	})
}
