package clustertest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// Processes returns the command lines of the processes running in the
// container name (docker top).
func (c *Cluster) Processes(ctx context.Context, name string) ([]string, error) {
	top, err := c.cli.ContainerTop(ctx, c.id(name), nil)
	if err != nil {
		return nil, err
	}
	col := -1
	for i, t := range top.Titles {
		if t == "CMD" || t == "COMMAND" {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("docker top %s: no command column in %q", name, top.Titles)
	}
	var out []string
	for _, p := range top.Processes {
		if col < len(p) {
			out = append(out, p[col])
		}
	}
	return out, nil
}

// Entries returns the names of the entries of the directory dir in the
// container name, recursively, relative to dir ("a", "a/b"); nil, without
// an error, when dir does not exist.
func (c *Cluster) Entries(ctx context.Context, name, dir string) ([]string, error) {
	rc, _, err := c.cli.CopyFromContainer(ctx, c.id(name), dir)
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	base := path.Base(dir)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h.Name, base), "/"), "/")
		if rel != "" {
			out = append(out, rel)
		}
	}
}

// Running reports whether the container name runs and is not paused.
func (c *Cluster) Running(ctx context.Context, name string) (bool, error) {
	insp, err := c.cli.ContainerInspect(ctx, c.id(name))
	if err != nil {
		return false, err
	}
	return insp.State.Running && !insp.State.Paused, nil
}

// IsManager reports whether name is one of the cluster's managers.
func (c *Cluster) IsManager(name string) bool {
	for _, m := range c.Managers {
		if m == name {
			return true
		}
	}
	return false
}

// Metrics scrapes /metrics of the manager or farm name directly on its
// address (with the admin token for a manager, the farm token for a farm)
// and returns the samples without labels: go_goroutines,
// process_resident_memory_bytes, go_memstats_heap_inuse_bytes, ...
func (c *Cluster) Metrics(ctx context.Context, name string) (map[string]float64, error) {
	ip, err := c.Addr(name)
	if err != nil {
		return nil, err
	}
	url, token := "http://"+ip+":8282/metrics", FarmToken
	if c.IsManager(name) {
		url, token = "http://"+ip+":8181/metrics", AdminToken
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return testutil.FetchMetrics(ctx, url, token)
}
