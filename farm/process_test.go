package farm

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAwaitExitWaitsForTheExit: awaitExit waits on the process's pidfd in
// the netpoller and returns once the process has exited, so that the wait
// which reaps it does not block.
func TestAwaitExitWaitsForTheExit(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "0.3")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	begin := time.Now()
	require.True(t, awaitExit(cmd.Process.Pid), "waited on a pidfd")
	require.GreaterOrEqual(t, time.Since(begin), 250*time.Millisecond, "returned before the process exited")
	reaped := make(chan error, 1)
	go func() { reaped <- cmd.Wait() }()
	select {
	case err := <-reaped:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("the exited process was not reaped")
	}
}
