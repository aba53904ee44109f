// Package dockertest gives drover's tests a Docker daemon and the reference
// worker image built from the source tree under test. It is not used by
// drover itself.
//
// Tests that need Docker call Client first: without a reachable daemon it
// skips the test, or fails it under CI=true, where the docker runtime must
// be tested.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// Client returns a client of the daemon DOCKER_HOST names (the local one by
// default), closed when the test ends. Without a daemon that answers, it
// fails the test under CI=true and skips it otherwise.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
		if err != nil {
			_ = cli.Close()
		}
	}
	if err != nil {
		testutil.Missing(t, "the Docker daemon is unreachable: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

var image struct {
	mu  sync.Mutex
	tag string
}

// WorkerImage returns the tag of the reference worker image of this source
// tree: the repository's Dockerfile with a static drover binary
// (CGO_ENABLED=0 go build ./cmd/drover), built by the daemon. The tag names
// a hash of the sources the binary is built from, so the test binaries of
// one run share the image, and so do later runs of the same source: it is
// built only when the daemon does not have it yet. Concurrent test
// binaries take turns. The images carry the label drover.test=worker;
// `docker image prune -a --filter label=drover.test=worker` removes those
// of older sources.
func WorkerImage(t testing.TB, cli *client.Client) string {
	t.Helper()
	image.mu.Lock()
	defer image.mu.Unlock()
	if image.tag != "" {
		return image.tag
	}
	tag, err := buildImage(cli)
	if err != nil {
		t.Fatalf("build the reference worker image: %v", err)
	}
	image.tag = tag
	return tag
}

func buildImage(cli *client.Client) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))

	unlock, err := lockFile(filepath.Join(os.TempDir(), "drover-dockertest.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	sum, err := sourceHash(root)
	if err != nil {
		return "", err
	}
	tag := "drover-worker:test-" + sum[:12]
	// Each step has its own bound: a go build with a cold cache, next to
	// other packages' race builds, can take minutes of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return tag, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", err
	}

	dir, err := os.MkdirTemp("", "drover-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "drover")
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer bcancel()
	gobuild := exec.CommandContext(bctx, "go", "build", "-trimpath", "-buildvcs=false", "-o", bin, "./cmd/drover")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return "", err
	}
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, dockerfile}, {"drover", 0o755, exe}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, &tarball, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{"drover.test": "worker"},
	})
	if err != nil {
		return "", fmt.Errorf("image build: %w", err)
	}
	defer resp.Body.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		return "", fmt.Errorf("image build: %w", err)
	}
	return tag, nil
}

// sourceHash hashes what the image is built from: the Go version, the
// module's non-test Go files, go.mod, go.sum and the Dockerfile.
func sourceHash(root string) (string, error) {
	h := sha256.New()
	_, _ = io.WriteString(h, runtime.Version()+"\x00")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		source := strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")
		if !source && name != "go.mod" && name != "go.sum" && name != "Dockerfile" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
		_, _ = h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash the sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// lockFile takes an exclusive lock on path, shared by every process on the
// host, and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil // closing releases the lock
}

// Containers returns the containers, in any state, that carry the label
// key=value.
func Containers(t testing.TB, cli *client.Client, key, value string) []container.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", key+"="+value)),
	})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	return list
}

// Gone reports whether the container id no longer exists.
func Gone(t testing.TB, cli *client.Client, id string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cli.ContainerInspect(ctx, id)
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatalf("inspect container %s: %v", id, err)
	}
	return cerrdefs.IsNotFound(err)
}
