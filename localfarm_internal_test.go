package drover

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/session"
)

// newStopped builds a server of one pool on a local farm of fc, not yet
// started; the test's end stops it.
func newStopped(t *testing.T, fc farm.Config, pool Pool) *Server {
	t.Helper()
	srv, err := New(Config{Addr: "127.0.0.1:0", Farm: fc, Pools: []Pool{pool}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	})
	return srv
}

// serveLocalFarm serves srv's farm, as Start would, and returns it.
func serveLocalFarm(t *testing.T, srv *Server) *localFarm {
	t.Helper()
	handle, err := srv.serveFarm("farm-token", manager.HTTPTimeouts{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	return handle.(*localFarm)
}

// The manager in drover's process reaches the local farm's stdio
// instances over an in-process connection, while their advertised URL
// stays the farm server's, which other managers dial.
func TestLocalFarmConnectsAdaptedInstances(t *testing.T) {
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	srv := newStopped(t, farm.Config{Slots: 2}, Pool{Pool: manager.Pool{Name: "cat"},
		PoolSpec: farm.PoolSpec{Command: cat, Protocol: farm.ProtocolStdio, IdleGap: 50 * time.Millisecond}})
	lf := serveLocalFarm(t, srv)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := lf.StartInstanceWith(ctx, "cat", farm.StartOptions{})
	require.NoError(t, err)
	require.True(t, lf.Serves(info.URL), "advertised at the farm server: %s", info.URL)

	conn, served, err := lf.ConnectInstance(info)
	require.NoError(t, err)
	require.True(t, served)
	defer conn.Close()
	key := [4]byte{9, 8, 7, 6}
	_, err = conn.Write(wsframe.AppendFrame(nil, wsframe.OpText, []byte(`{"type":"task","id":1,"data":{"over":"the pair"}}`), &key))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	rd := wsframe.Reader{R: bufio.NewReader(conn)}
	var types []session.FrameType
	for len(types) == 0 || types[len(types)-1] == session.FrameResult {
		_, msg, err := rd.Next(nil)
		require.NoError(t, err)
		var fr session.Frame
		require.NoError(t, session.Decode(msg, &fr))
		if fr.Type == session.FrameResult {
			require.JSONEq(t, `{"over":"the pair"}`, string(fr.Data))
		}
		types = append(types, fr.Type)
	}
	require.Equal(t, []session.FrameType{session.FrameResult, session.FrameDone}, types)

	// An instance with no farm-server URL (a native one at its own port)
	// is not the pair's: the manager dials it.
	other := info
	other.URL = ""
	_, served, err = lf.ConnectInstance(other)
	require.NoError(t, err)
	require.False(t, served)
}

// A stdio program that dies mid-task, reached over that connection: the
// task gets one answer, instance_lost, when the program dies (the
// connection closes with the instance), not at a timeout.
func TestLocalStdioProgramDiesMidTask(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	// Echoes lines until one says die; then kills itself with SIGKILL.
	prog := `while read -r l; do case "$l" in *die*) kill -9 $$;; *) echo "$l";; esac; done`
	srv := newStopped(t, farm.Config{Slots: 2}, Pool{Pool: manager.Pool{Name: "sh", Warm: 1},
		PoolSpec: farm.PoolSpec{Command: sh, Args: []string{"-c", prog}, Protocol: farm.ProtocolStdio,
			IdleGap: 50 * time.Millisecond}})
	require.NoError(t, srv.Start())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	s, err := srv.Manager().Open(ctx, manager.OpenOptions{Pool: "sh"})
	require.NoError(t, err)
	defer func() { _ = s.Close() }()
	res, err := s.Execute(ctx, []byte(`{"say":"hi"}`))
	require.NoError(t, err)
	require.Len(t, res, 1)

	begin := time.Now()
	_, err = s.Execute(ctx, []byte(`{"say":"die"}`))
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeInstanceLost, se.Code)
	require.Less(t, time.Since(begin), 5*time.Second, "the loss is seen when the program dies, not at a timeout")
}

// A stop on the local farm gets the farm's stop grace even when the
// caller's context has ended (placement's own timeout), as on a remote
// farm: the instance's SIGTERM handler runs.
func TestLocalFarmStopKeepsTheGrace(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	marker := filepath.Join(t.TempDir(), "stopped")
	srv := newStopped(t, farm.Config{Slots: 1, StopGrace: time.Minute}, Pool{Pool: manager.Pool{Name: "sh"},
		PoolSpec: farm.PoolSpec{Command: sh,
			// It says when its trap is set; the trap runs once the
			// sleep in the foreground has gone.
			Args: []string{"-c", `trap 'echo bye > "$0"; exit 0' TERM; : > "$0.ready"; while :; do sleep 0.05; done`,
				marker},
			Protocol: farm.ProtocolStdio}})
	lf := serveLocalFarm(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := lf.StartInstanceWith(ctx, "sh", farm.StartOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := os.Stat(marker + ".ready")
		return err == nil
	}, 10*time.Second, time.Millisecond, "the trap was never set")

	ended, end := context.WithCancel(context.Background())
	end() // the caller has stopped waiting
	require.NoError(t, lf.StopInstance(ended, info.ID))
	b, err := os.ReadFile(marker)
	require.NoError(t, err, "the instance was killed before its SIGTERM handler ran")
	require.Equal(t, "bye\n", string(b))
}
