package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// The banner counts the warm instances the pools ask for, not --warm.
func TestUpBannerCountsWarm(t *testing.T) {
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	dir := t.TempDir()
	cfg := "instances: 4\npools:\n" +
		"  - {name: a, command: " + cat + ", protocol: stdio, warm: 1}\n" +
		"  - {name: b, command: " + cat + ", protocol: stdio, warm: 2}\n"
	require.NoError(t, os.WriteFile(dir+"/drover.yaml", []byte(cfg), 0o600))
	u := startUp(t, "--config", dir+"/drover.yaml")
	require.Contains(t, u.banner, "drover is up: 4 instance slots, 3 warm\n")

	u = startUp(t, "--instances", "3", "--warm", "1")
	require.Contains(t, u.banner, "drover is up: 3 instance slots, 1 warm\n", "the default pool takes --warm")
}
