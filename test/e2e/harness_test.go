package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/classcad"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/proxy"
)

const (
	farmToken  = "e2e-farm-token-7f3a91"
	adminToken = "e2e-admin-token-c28d04"

	// The stream pools' liveliness interval: a silent instance dies after
	// three of them.
	liveliness = 200 * time.Millisecond

	// The dial-never pool: three attempts of 1 s, 100 ms apart. Each
	// attempt must outlast the start of a -race child on a loaded machine,
	// which notes its spawn (spawnLogEnv) first thing.
	neverStartTimeout = time.Second
	neverRetries      = 2
	neverBackoff      = 100 * time.Millisecond

	// waitFor bounds every wait for something that should happen soon.
	waitFor = 15 * time.Second
)

// stack is one manager and one farm in this process, the farm registered
// with the manager over REST by its agent, as `drover farm` does, and
// reached by the manager over HTTP through the farm's server; the instances
// are child processes.
type stack struct {
	t       *testing.T
	m       *manager.Manager
	mgr     *httptest.Server
	farm    *farm.Farm
	farmURL string
	spawns  string // the children's spawn log
	logs    *testutil.SyncBuffer
}

// newStack starts a manager and a farm with one pool per child mode:
// stdio, dial, dial-early, dial-never, stream and stream-silent; 2 slots.
func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackWith(t, stackOptions{})
}

// stackOptions change what newStackWith starts.
type stackOptions struct {
	// pools replaces the child pools.
	pools func(farmURL string) []farm.PoolSpec
	// warm is the manager's warm count per pool (default none: one spawn
	// per session).
	warm map[string]int
	// farmID is the farm's id (default derived from the test's name).
	farmID string
	// modelsDir is the farm's models directory.
	modelsDir string
}

// newStackWith starts a manager and a farm as opts say.
func newStackWith(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	spawns := filepath.Join(t.TempDir(), "spawns")

	// The farm's address is needed before the farm: stream children report
	// to it.
	farmHTTP := httptest.NewUnstartedServer(nil)
	farmURL := "http://" + farmHTTP.Listener.Addr().String()

	pools := childPools(spawns, farmURL)
	if opts.pools != nil {
		pools = opts.pools(farmURL)
	}
	id := opts.farmID
	if id == "" {
		id = "e2e-" + strings.NewReplacer("/", "-", " ", "-").Replace(strings.ToLower(t.Name()))
	}
	f, err := farm.New(farm.Config{
		ID:        id,
		Name:      "e2e",
		Slots:     2,
		Pools:     pools,
		ModelsDir: opts.modelsDir,
		Logger:    log.With("component", "farm"),
	})
	require.NoError(t, err)
	relay := proxy.New(proxy.Options{Logger: log.With("component", "farm-relay")})
	fsrv, err := farm.NewServer(f, farm.ServerConfig{Token: farmToken, Relay: relay,
		Logger: log.With("component", "farm-server")})
	require.NoError(t, err)
	farmHTTP.Config.Handler = fsrv
	farmHTTP.Start()

	var mpools []manager.Pool
	for _, name := range f.Pools() {
		mpools = append(mpools, manager.Pool{Name: name, Warm: opts.warm[name]})
	}
	m, err := manager.New(manager.Config{
		FarmToken:         farmToken,
		AdminToken:        adminToken,
		HeartbeatInterval: 200 * time.Millisecond,
		Pools:             mpools,
		Logger:            log.With("component", "manager"),
	})
	require.NoError(t, err)
	mgr := httptest.NewServer(m.Handler())

	agent, err := farm.NewAgent(farm.AgentConfig{
		Farm:         f,
		Managers:     []string{mgr.URL},
		Token:        farmToken,
		AdvertiseURL: farmURL,
		RetryMin:     20 * time.Millisecond,
		RetryMax:     200 * time.Millisecond,
		Logger:       log.With("component", "agent"),
	})
	require.NoError(t, err)
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(actx) }()

	st := &stack{t: t, m: m, mgr: mgr, farm: f, farmURL: farmURL, spawns: spawns, logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// The manager first: it stops the instances of its sessions through
		// the farm, which must still be there.
		require.NoError(t, m.Shutdown(ctx))
		stopAgent()
		require.NoError(t, <-agentDone)
		mgr.Close()
		require.NoError(t, relay.Shutdown(ctx))
		farmHTTP.Close()
		require.NoError(t, fsrv.Close())
		require.NoError(t, f.Close(ctx))
		if t.Failed() {
			t.Logf("log of the manager and the farm:\n%s", logs.String())
		}
	})

	st.eventually("the farm to register with the manager", func() bool {
		for _, sf := range m.Status().Farms {
			if sf.ID == f.ID() && sf.Remote && sf.Live {
				return true
			}
		}
		return false
	})
	return st
}

// childPools are the farm's pools: this test binary in each child mode.
func childPools(spawns, farmURL string) []farm.PoolSpec {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	// A -race binary sleeps a second in exit unless told otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	pool := func(name, protocol string, env ...string) farm.PoolSpec {
		return farm.PoolSpec{
			Name:     name,
			Command:  exe,
			Protocol: protocol,
			Env: append([]string{childEnv + "=" + name, "GORACE=" + gorace, spawnLogEnv + "=" + spawns},
				env...),
			// Generous: a -race child on a loaded machine starts slowly.
			StartTimeout: 20 * time.Second,
		}
	}
	dialArgs := classcad.Args

	stdio := pool("stdio", farm.ProtocolStdio)
	stdio.Delimiter = delimiter

	dial := pool("dial", farm.ProtocolDial)
	dial.Args = dialArgs
	early := pool("dial-early", farm.ProtocolDial)
	early.Args = append(slices.Clone(dialArgs), "--early")

	never := pool("dial-never", farm.ProtocolDial)
	never.Args = dialArgs
	never.StartTimeout = neverStartTimeout
	never.SpawnRetries = neverRetries
	never.SpawnBackoff = neverBackoff

	// Stream instances are ready at their ready report and die after three
	// silent intervals; the pinging one pings twice per interval.
	stream := pool("stream", farm.ProtocolStream, farmURLEnv+"="+farmURL, pingEnv+"="+(liveliness/2).String())
	stream.Readiness = farm.ReadinessLiveliness
	stream.Liveliness = liveliness

	silent := pool("stream-silent", farm.ProtocolStream, farmURLEnv+"="+farmURL)
	silent.Readiness = farm.ReadinessLiveliness
	silent.Liveliness = liveliness

	return []farm.PoolSpec{stdio, dial, early, never, stream, silent}
}

// wsURL is the manager's URL for path (with its query), as ws://.
func (st *stack) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(st.mgr.URL, "http") + path
}

// ctx bounds one test's client calls.
func (st *stack) ctx() context.Context {
	ctx, cancel := context.WithTimeout(st.t.Context(), 30*time.Second)
	st.t.Cleanup(cancel)
	return ctx
}

// farmInstance returns the farm's record of instance id.
func (st *stack) farmInstance(id string) (farm.Instance, bool) {
	for _, inst := range st.farm.Instances() {
		if inst.ID == id {
			return inst, true
		}
	}
	return farm.Instance{}, false
}

// managerInstance returns the manager's record of instance id.
func (st *stack) managerInstance(id string) (manager.StatusInstance, bool) {
	for _, inst := range st.m.Status().Instances {
		if inst.ID == id {
			return inst, true
		}
	}
	return manager.StatusInstance{}, false
}

// requireEmpty waits until neither the manager nor the farm holds a
// session or an instance any more, and every slot is free again.
func (st *stack) requireEmpty() {
	st.t.Helper()
	st.eventually("the manager and the farm to hold nothing", func() bool {
		ms := st.m.Status()
		fs := st.farm.Status()
		return len(ms.Sessions) == 0 && len(ms.Instances) == 0 && ms.Capacity.Busy == 0 &&
			len(fs.Instances) == 0 && fs.Free == fs.Slots
	})
}

// spawned returns the spawn log lines of mode: "INSTANCE-ID PID" each.
func (st *stack) spawned(mode string) []string {
	st.t.Helper()
	b, err := os.ReadFile(st.spawns)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(st.t, err)
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), mode+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// eventually polls cond until it holds: for state that has no event to wait
// on (a process reaped by the farm, a slot freed in the background).
func (st *stack) eventually(what string, cond func() bool) {
	st.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			st.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireGone waits until process pid no longer exists.
func (st *stack) requireGone(pid int) {
	st.t.Helper()
	require.Positive(st.t, pid)
	st.eventually("process to be gone", func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	})
}
