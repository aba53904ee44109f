// Package convtest gives drover's conversion tests a fake converter: the
// static program in ./fakeconv, built from the source tree under test, and
// a FROM scratch image holding it, for the docker converter runtime; and
// the models and archives they upload (fixtures.go): a cube as STL and OBJ,
// ZIP archives as hostile as a test needs. The CAD models are cadtest's.
// It is not used by drover itself.
package convtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// ImagePath is where the fake converter is in Image's image.
const ImagePath = "/fakeconv"

var fake struct {
	mu   sync.Mutex
	path string
	sum  string
	tag  string
}

// Build returns the path of the fake converter, built static
// (CGO_ENABLED=0) once per test binary into a directory of the system's
// temporary directory named after a hash of its source, so later runs of
// the same source reuse it.
func Build(t testing.TB) string {
	t.Helper()
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.path != "" {
		return fake.path
	}
	path, sum, err := buildProgram()
	if err != nil {
		t.Fatalf("build the fake converter: %v", err)
	}
	fake.path, fake.sum = path, sum
	return path
}

func buildProgram() (string, string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	src := filepath.Join(root, "internal", "testkit", "convtest", "fakeconv")
	main, err := os.ReadFile(filepath.Join(src, "main.go"))
	if err != nil {
		return "", "", err
	}
	h := sha256.Sum256(main)
	sum := hex.EncodeToString(h[:])[:12]
	dir := filepath.Join(os.TempDir(), "drover-fakeconv-"+sum)
	bin := filepath.Join(dir, "fakeconv")
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o100 != 0 {
		return bin, sum, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	// Built beside and renamed: concurrent test binaries never see half
	// a program.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	gobuild := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", filepath.Join(tmp, "fakeconv"), ".")
	gobuild.Dir = src
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "fakeconv"), bin); err != nil {
		return "", "", err
	}
	return bin, sum, nil
}

// Image returns the tag of an image FROM scratch that holds the fake
// converter at ImagePath, built by the daemon when it does not have it
// yet. The images carry the label drover.test=fakeconv.
func Image(t testing.TB, cli *client.Client) string {
	t.Helper()
	bin := Build(t)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.tag != "" {
		return fake.tag
	}
	tag := "drover-fakeconv:test-" + fake.sum
	if err := buildImage(cli, tag, bin); err != nil {
		t.Fatalf("build the fake converter's image: %v", err)
	}
	fake.tag = tag
	return tag
}

func buildImage(cli *client.Client, tag, bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return err
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	dockerfile := []byte("FROM scratch\nCOPY fakeconv " + ImagePath + "\nENTRYPOINT [\"" + ImagePath + "\"]\n")
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, dockerfile}, {"fakeconv", 0o755, exe}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := cli.ImageBuild(ctx, &tarball, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{"drover.test": "fakeconv"},
	})
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	defer resp.Body.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	return nil
}
