// Package haproxytest runs a real HAProxy (the Debian package) in front of
// test servers, with the shipped deploy/haproxy.cfg rewritten for the test
// (loopback ports, the test's servers, fast checks): a client frontend
// whose backends are checked with GET /health, and a farm frontend whose
// backends are checked with GET /livez. The stats socket tells which
// servers HAProxy holds up.
package haproxytest

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// Options configure Start.
type Options struct {
	// Config is the configuration file to run, rewritten by render:
	// normally the shipped deploy/haproxy.cfg.
	Config string
	// Backends are the managers' host:port addresses, named m0, m1, ...
	Backends []string
	// Inter is the health check interval (default 200 ms); a server goes
	// down after two failed checks and up after two good ones.
	Inter time.Duration
	// Cert replaces the PEM file (certificate and key) of binds with
	// `crt FILE`, such as deploy/haproxy-tls.cfg's.
	Cert string
}

// Proxy is a running HAProxy.
type Proxy struct {
	// Client is the client frontend's host:port; Farms the farm API's.
	Client, Farms string
	sock          string
	out           *testutil.SyncBuffer
}

// render rewrites the shipped configuration for a test: its binds go to
// free loopback ports, its stats socket into dir, its servers become the
// test's backends (m0, m1, ...) and checks run every inter.
func render(shipped, sock, inter, cert string, binds map[string]string, backends []string) (string, error) {
	var out strings.Builder
	inBackend, serversDone := false, false
	for line := range strings.Lines(shipped) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "backend" || f[0] == "frontend" || f[0] == "defaults" || f[0] == "global":
			inBackend, serversDone = f[0] == "backend", false
		case f[0] == "stats" && len(f) > 2 && f[1] == "socket":
			line = "    stats socket " + sock + " mode 600 level admin\n"
		case f[0] == "bind":
			addr, ok := binds[f[1]]
			if !ok {
				return "", fmt.Errorf("no test address for bind %s", f[1])
			}
			rest := f[2:]
			for i := range rest {
				if rest[i] == "crt" && i+1 < len(rest) {
					rest[i+1] = cert
				}
			}
			line = "    " + strings.Join(append([]string{"bind", addr}, rest...), " ") + "\n"
		case f[0] == "default-server":
			line = strings.Replace(line, "inter 1s", "inter "+inter, 1)
		case f[0] == "server" && inBackend:
			if !serversDone {
				for i, b := range backends {
					fmt.Fprintf(&out, "    server m%d %s check\n", i, b)
				}
				serversDone = true
			}
			continue
		}
		out.WriteString(line)
	}
	return out.String(), nil
}

// Start runs haproxy in the foreground until the test ends. Without the
// haproxy binary it fails the test under CI=true and skips it otherwise.
func Start(t testing.TB, o Options) *Proxy {
	t.Helper()
	bin := testutil.Program(t, "haproxy", "haproxy")
	if o.Inter <= 0 {
		o.Inter = 200 * time.Millisecond
	}
	dir := t.TempDir()
	p := &Proxy{Client: freeAddr(t), Farms: freeAddr(t), sock: filepath.Join(dir, "stats.sock"),
		out: &testutil.SyncBuffer{}}
	shipped, err := os.ReadFile(o.Config)
	if err != nil {
		t.Fatal(err)
	}
	text, err := render(string(shipped), p.sock, fmt.Sprintf("%dms", o.Inter.Milliseconds()), o.Cert,
		map[string]string{":80": p.Client, ":443": p.Client, ":8282": p.Farms, ":8443": p.Farms,
			"127.0.0.1:8404": freeAddr(t)}, o.Backends)
	if err != nil {
		t.Fatalf("%s: %v", o.Config, err)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("--- haproxy output ---\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", p.sock); err == nil {
			_ = c.Close()
			return p
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited at start:\n%s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy's stats socket did not appear:\n%s", p.out.String())
		}
	}
}

// Status returns the state HAProxy holds for each server of backend (for
// example "managers"): "UP", "DOWN", or a transition such as "UP 1/2".
func (p *Proxy) Status(backend string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("empty stats")
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[strings.TrimPrefix(name, "# ")] = i
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) <= col["status"] || row[col["pxname"]] != backend {
			continue
		}
		if sv := row[col["svname"]]; sv != "FRONTEND" && sv != "BACKEND" {
			out[sv] = row[col["status"]]
		}
	}
	return out, nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
