// Package testutil holds small helpers shared by drover's tests. It is not
// used by drover itself.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// SyncBuffer is a bytes.Buffer safe for writers on many goroutines: a
// process's output, or a logger's.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Missing ends a test whose dependency (a program, a daemon) is missing: it
// fails under CI=true, where every test must run, and skips otherwise.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s (CI=true: this test must run; scripts/setup.sh installs what it needs)", msg)
	}
	tb.Skipf("skipping: %s", msg)
}

// Program returns the path of a program from a Debian package: on PATH, or
// in the sbin and bin directories a non-root PATH may lack. A missing one
// ends the test through Missing.
func Program(tb testing.TB, name, pkg string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	Missing(tb, "%s not found: install the Debian package %s", name, pkg)
	return ""
}
