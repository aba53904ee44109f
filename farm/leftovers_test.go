package farm

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseProcStat(t *testing.T) {
	// minflt … cstime, priority, nice, num_threads, itrealvalue, starttime (22), …
	tail := " 0 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10 18446744073709551615"
	for _, tc := range []struct {
		name string
		stat string
		want procInfo
		ok   bool
	}{
		{"plain", "42 (sleep) S 1 42 42 0 -1 4194560" + tail, procInfo{pgrp: 42, start: 123456}, true},
		{"spaces and parens in the name", "42 (a) b (c) S 1 40 40 0 -1 4194560" + tail, procInfo{pgrp: 40, start: 123456}, true},
		{"zombie", "42 (x) Z 1 42 42 0 -1 4194560" + tail, procInfo{pgrp: 42, start: 123456, zombie: true}, true},
		{"short", "42 (x) S 1 42", procInfo{}, false},
		{"no name", "42 x S 1 42 42", procInfo{}, false},
		{"garbage pgrp", "42 (x) S 1 x 42 0 -1 4194560" + tail, procInfo{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseProcStat([]byte(tc.stat))
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}
	// And the real thing: field 22 is this process's start time.
	st, ok := readProcStat(os.Getpid())
	require.True(t, ok)
	require.Equal(t, syscall.Getpgrp(), st.pgrp)
	require.Positive(t, st.start)
}

func readState(t *testing.T, dir string) stateDoc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, StateFileName))
	require.NoError(t, err)
	var doc stateDoc
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc
}

func TestStateFileFollowsInstances(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "state")
	f := newTestFarm(t, Config{ID: "f1", Slots: 2, Pools: []PoolSpec{childPool("p", "listen")}, StateDir: dir})
	require.Equal(t, stateDoc{Farm: "f1"}, readState(t, dir), "an empty list to begin with")

	var insts []Instance
	for range 2 {
		inst, err := f.StartInstance(startCtx(t), "p")
		require.NoError(t, err)
		killOnCleanup(t, inst.PID)
		insts = append(insts, inst)
	}
	f.state.flush() // written off the spawn path
	doc := readState(t, dir)
	require.Len(t, doc.Instances, 2)
	for _, rec := range doc.Instances {
		st, ok := readProcStat(rec.PID)
		require.True(t, ok)
		require.Equal(t, st.start, rec.Start)
		require.Equal(t, rec.PID, rec.PGID, "each instance leads its own group")
	}

	require.NoError(t, f.StopInstance(startCtx(t), insts[0].ID))
	f.state.flush()
	doc = readState(t, dir)
	require.Len(t, doc.Instances, 1)
	require.Equal(t, insts[1].ID, doc.Instances[0].ID)
	require.Equal(t, insts[1].PID, doc.Instances[0].PID)

	require.NoError(t, f.Close(startCtx(t)))
	require.Empty(t, readState(t, dir).Instances)
}

// sleeper starts this test binary as a process that only sleeps, in a
// process group of its own, and reaps it in the background.
func sleeper(t *testing.T) (pid int, exited <-chan struct{}) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=sleep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	return cmd.Process.Pid, done
}

func writeState(t *testing.T, dir string, recs ...stateRecord) {
	t.Helper()
	b, err := json.Marshal(stateDoc{Farm: "old", Instances: recs})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFileName), b, 0o600))
}

func TestLeftoversKilledOnlyWhenTheyAreOurs(t *testing.T) {
	dir := t.TempDir()
	ours, oursExited := sleeper(t)
	other, otherExited := sleeper(t)
	st, ok := readProcStat(ours)
	require.True(t, ok)
	ost, ok := readProcStat(other)
	require.True(t, ok)
	writeState(t, dir,
		stateRecord{ID: "p-1", PID: ours, PGID: ours, Start: st.start},
		// A pid reused by another process: its start time differs.
		stateRecord{ID: "p-2", PID: other, PGID: other, Start: ost.start + 1},
		// Never the farm's own group, init or everyone.
		stateRecord{ID: "p-3", PID: os.Getpid(), PGID: syscall.Getpgrp()},
		stateRecord{ID: "p-4", PID: 1, PGID: 1},
		stateRecord{ID: "p-5", PID: -1, PGID: -1},
	)

	log, logs := capture(t)
	f := newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}, StateDir: dir, Logger: log})
	select {
	case <-oursExited:
	case <-time.After(waitFor):
		t.Fatal("the recorded process survived")
	}
	select {
	case <-otherExited:
		t.Fatal("a process that only shares a recorded pid was killed")
	case <-time.After(50 * time.Millisecond):
	}
	require.Empty(t, readState(t, dir).Instances, "the list is emptied")
	require.Equal(t, f.ID(), readState(t, dir).Farm)
	require.Contains(t, logs.String(), "killed instance processes left by the farm's previous run")
}

func TestLeftoversBadStateFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFileName), []byte("{not json"), 0o600))
	newTestFarm(t, Config{ID: "f1", Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}, StateDir: dir})
	require.Equal(t, stateDoc{Farm: "f1"}, readState(t, dir))
}

// A farm killed with SIGKILL takes its instances with it (parent-death
// signal), but a grandchild in an instance's group outlives them; the next
// farm on the same state directory kills it.
func TestLeftoversKilledAtRestart(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	require.NoError(t, err)
	helper := exec.Command(exe)
	helper.Env = append(os.Environ(), roleEnv+"=statefarm", "DROVER_FARM_TEST_STATE="+dir)
	helper.Stderr = t.Output()
	out, err := helper.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, helper.Start())
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the helper farm printed no pids")
	var pids []int
	for _, s := range strings.Fields(line) {
		pid, err := strconv.Atoi(s)
		require.NoError(t, err)
		killOnCleanup(t, pid)
		pids = append(pids, pid)
	}
	require.Len(t, pids, 3)
	instances, grandchild := pids[:2], pids[2]
	_, pgrp, ok := procStat(grandchild)
	require.True(t, ok)
	require.Equal(t, instances[0], pgrp, "the grandchild is in its instance's group")
	require.Len(t, readState(t, dir).Instances, 2)

	require.NoError(t, helper.Process.Kill())
	_ = helper.Wait()
	requireGone(t, instances...)
	time.Sleep(50 * time.Millisecond)
	require.False(t, gone(grandchild), "the grandchild outlives the farm: the parent-death signal is not for it")

	newTestFarm(t, Config{Slots: 1, Pools: []PoolSpec{childPool("p", "listen")}, StateDir: dir})
	require.True(t, gone(grandchild), "New returns once the leftovers are gone")
	require.Empty(t, readState(t, dir).Instances)
}

func TestStableIDAndStateDir(t *testing.T) {
	a, b := StableID("127.0.0.1:8282"), StableID("127.0.0.1:8283")
	require.Equal(t, a, StableID("127.0.0.1:8282"), "stable")
	require.NotEqual(t, a, b)
	require.Regexp(t, `^[a-z0-9-]+-[0-9a-f]{8}$`, a)

	t.Setenv("XDG_STATE_HOME", "/var/state")
	require.Equal(t, "/var/state/drover/farm-x_y", DefaultStateDir("x/y"))
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("TMPDIR", "/tmp")
	require.Equal(t, "/tmp/drover-farm-f1", DefaultStateDir("f1"))
}
