package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The reference worker is drover-worker when an executable of that name
// sits next to drover, and `drover worker` otherwise.
func TestWorkerCommand(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "drover")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))

	cmd, args := WorkerCommand(exe)
	require.Equal(t, exe, cmd)
	require.Equal(t, []string{"worker"}, args)

	lean := filepath.Join(dir, "drover-worker")
	require.NoError(t, os.WriteFile(lean, []byte("#!/bin/sh\n"), 0o644))
	cmd, _ = WorkerCommand(exe)
	require.Equal(t, exe, cmd, "not executable: not taken")

	require.NoError(t, os.Chmod(lean, 0o755))
	cmd, args = WorkerCommand(exe)
	require.Equal(t, lean, cmd)
	require.Empty(t, args)
}
