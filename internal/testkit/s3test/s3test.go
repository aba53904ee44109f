// Package s3test runs real S3-compatible servers for tests: versitygw
// with its posix backend in a temporary directory, one process per Start,
// on a free loopback port, with credentials of its own, stopped when the
// test ends. No fake: what passes here talks S3 to a server that checks
// signatures, ranges, conditions and multipart uploads.
//
// The versitygw binary is built by scripts/setup.sh into
// bin/versitygw-<Version>/versitygw of the module; $DROVER_VERSITYGW
// names another. Without it a test is skipped, or fails when CI=true.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/storage"
)

// Version is the versitygw release scripts/setup.sh builds.
const Version = "v1.8.0"

// Region is the servers' region.
const Region = "us-east-1"

const (
	readyWithin = 20 * time.Second
	stopWithin  = 5 * time.Second
)

// Server is one versitygw process.
type Server struct {
	// Endpoint is the server's host:port (plain HTTP).
	Endpoint string
	// AccessKey and SecretKey are the root user's credentials: random,
	// so that a test can grep for them.
	AccessKey, SecretKey string
	// Dir is the posix backend's directory: one subdirectory per bucket.
	Dir string

	out testutil.SyncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the path of the versitygw binary, or ends tb through
// testutil.Missing.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("DROVER_VERSITYGW"); p != "" {
		return p
	}
	if root, err := moduleRoot(); err == nil {
		p := filepath.Join(root, "bin", "versitygw-"+Version, "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	testutil.Missing(tb, "versitygw %s not found: scripts/setup.sh builds it into bin/versitygw-%s/ (or set DROVER_VERSITYGW)", Version, Version)
	return ""
}

// moduleRoot is the directory of the go.mod above the working directory
// (a test runs in its package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start launches versitygw on a free 127.0.0.1 port and returns once it
// answers. It is stopped when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary(tb)
	s := &Server{AccessKey: "AK" + random(9), SecretKey: "SK" + random(18), Dir: tb.TempDir()}
	tb.Cleanup(s.Stop)
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err == nil {
			s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			err = s.start(bin)
		}
		if err == nil {
			return s
		}
		if attempt == 2 {
			tb.Fatalf("s3test: %v\n%s", err, s.out.String())
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start(bin string) error {
	cmd := exec.Command(bin, "--port", s.Endpoint, "--region", Region, "--quiet", "posix", s.Dir)
	// Credentials through the environment: not on a command line that ps
	// shows. Nothing else of the test's environment goes along.
	cmd.Env = []string{"ROOT_ACCESS_KEY_ID=" + s.AccessKey, "ROOT_SECRET_ACCESS_KEY=" + s.SecretKey,
		"PATH=" + os.Getenv("PATH"), "HOME=" + s.Dir}
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyWithin)
	for {
		select {
		case <-exited:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("versitygw exited at start")
		default:
		}
		// Any S3 answer (403 without a signature) means it serves.
		resp, err := client.Get("http://" + s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			if resp.Header.Get("X-Amz-Request-Id") != "" || resp.StatusCode == http.StatusForbidden {
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("versitygw did not answer on %s within %v", s.Endpoint, readyWithin)
		}
		time.Sleep(50 * time.Millisecond) // an outside process: poll until it answers
	}
}

// Log is what the server printed.
func (s *Server) Log() string { return s.out.String() }

// Stop terminates the server and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopWithin):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Client is a minio-go client of the server with the root credentials.
func (s *Server) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region: Region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		tb.Fatalf("s3test: client: %v", err)
	}
	return c
}

var buckets atomic.Int64

// Bucket creates a bucket no other call in the test binary names and
// returns its name.
func (s *Server) Bucket(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("drover-test-%d-%s", buckets.Add(1), random(3))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client(tb).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		tb.Fatalf("s3test: make bucket: %v", err)
	}
	return name
}

// Config is the storage configuration of bucket on the server, with the
// root credentials.
func (s *Server) Config(bucket string) storage.S3Config {
	return storage.S3Config{Endpoint: s.Endpoint, Region: Region, Bucket: bucket, PathStyle: true, Insecure: true,
		AccessKey: s.AccessKey, SecretKey: s.SecretKey}
}

// Storage opens a fresh bucket of the server as storage.S3.
func (s *Server) Storage(tb testing.TB) *storage.S3 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := storage.NewS3(ctx, s.Config(s.Bucket(tb)))
	if err != nil {
		tb.Fatalf("s3test: storage: %v", err)
	}
	return st
}
