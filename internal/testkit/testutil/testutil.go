// Package testutil holds small helpers shared by drover's tests. It is not
// used by drover itself.
package testutil

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// FetchMetrics GETs the Prometheus page at url, with token as a bearer
// when set, and returns its unlabelled samples (ParseMetrics).
func FetchMetrics(ctx context.Context, url, token string) (map[string]float64, error) {
	body, err := GetOK(ctx, url, token)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return ParseMetrics(body)
}

// GetOK GETs url, with token as a bearer when set, and returns the body of
// a 200 answer for the caller to close; any other status is an error.
func GetOK(ctx context.Context, url, token string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// ParseMetrics reads the unlabelled samples of a Prometheus text page
// (go_goroutines, process_resident_memory_bytes, ...) by name; comments
// and labelled samples are passed over.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if x, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = x
		}
	}
	return out, sc.Err()
}
