package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// failover measures how fast a client hears of a failure, each round on
// fresh processes:
//
//   - farm killed: a `drover manager` and a `drover farm` (its instances go
//     with it: the farm kills them as it dies); from the farm's SIGKILL
//     until the client's session gets instance_lost;
//   - farm frozen: the same with SIGSTOP to the farm and its instances,
//     as a host that stops answering (no connection breaks): the manager
//     notices the missed heartbeats;
//   - manager killed: two managers sharing a redis-server, one farm
//     registered with both; from the SIGKILL of the client's manager until
//     its session, resumed on the other manager with its token, has
//     answered a task.
func (b *bench) failover(ctx context.Context) error {
	for r := range b.cfg.Rounds {
		b.progress("failover: round %d/%d: farm killed", r+1, b.cfg.Rounds)
		d, err := b.farmLost(ctx, false)
		if err != nil {
			return fmt.Errorf("farm killed: %w", err)
		}
		b.res.add(BenchFailover, "farm killed → instance_lost", "ms", TargetDrover, ms(d))
		b.progress("failover: round %d/%d: farm frozen", r+1, b.cfg.Rounds)
		if d, err = b.farmLost(ctx, true); err != nil {
			return fmt.Errorf("farm frozen: %w", err)
		}
		b.res.add(BenchFailover, "farm frozen → instance_lost", "ms", TargetDrover, ms(d))
		b.progress("failover: round %d/%d: manager killed", r+1, b.cfg.Rounds)
		d, err = b.managerLost(ctx)
		if errors.Is(err, errNoRedis) {
			return b.skip("redis", err)
		}
		if err != nil {
			return fmt.Errorf("manager killed: %w", err)
		}
		b.res.add(BenchFailover, "manager killed → resumed", "ms", TargetDrover, ms(d))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// failoverLimit bounds each wait of the failover scenario.
const failoverLimit = 30 * time.Second

// cluster is the processes of one failover trial.
type cluster struct {
	b     *bench
	dir   string
	token string
	procs []*proc
}

func (b *bench) newCluster(name string) (*cluster, error) {
	dir, err := os.MkdirTemp(b.dir, name)
	if err != nil {
		return nil, err
	}
	return &cluster{b: b, dir: dir, token: "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)}, nil
}

func (c *cluster) stop() {
	for _, p := range c.procs {
		_ = syscall.Kill(p.pid(), syscall.SIGCONT) // a frozen one cannot stop
		p.stop(5 * time.Second)
	}
}

// manager starts a `drover manager` with one warm instance in the default
// pool; extra are more flags.
func (c *cluster) manager(ctx context.Context, name string, extra ...string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := append([]string{"manager", "--addr=" + addr, "--warm=1", "--data=" + filepath.Join(c.dir, name)}, extra...)
	p, err := startProc(name, c.b.droverArgv(args...),
		append(append([]string(nil), c.b.cfg.Env...), "XDG_STATE_HOME="+c.dir, "DROVER_FARM_TOKEN="+c.token))
	if err != nil {
		return nil, "", err
	}
	c.procs = append([]*proc{p}, c.procs...) // stopped after the farms
	return p, addr, p.waitTCP(ctx, addr, startLimit)
}

// farm starts a `drover farm` of the reference worker registered with
// managers (addresses).
func (c *cluster) farm(ctx context.Context, managers ...string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	urls := make([]string, len(managers))
	for i, m := range managers {
		urls[i] = "http://" + m
	}
	p, err := startProc("farm", c.b.droverArgv("farm", "--addr="+addr, "--manager="+strings.Join(urls, ","),
		"--instances=4", "--job-slots=0", "--state-dir="+filepath.Join(c.dir, "farm")),
		append(append([]string(nil), c.b.cfg.Env...), "XDG_STATE_HOME="+c.dir, "DROVER_TOKEN="+c.token))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, p.waitTCP(ctx, addr, startLimit)
}

// warmAt waits until the manager p at addr has an idle instance.
func warmAt(ctx context.Context, p *proc, addr string) error {
	s := &server{name: p.name, status: "http://" + addr + "/status", procs: []*proc{p}}
	return s.waitWarm(ctx, map[string]int{poolDefault: 1})
}

// failSession is a client session of the failover scenario.
type failSession struct {
	ws     *websocket.Conn
	resume string
}

// openSession opens a session at url and runs one echo task on it.
func openSession(ctx context.Context, url string) (*failSession, error) {
	ws, _, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	s := &failSession{ws: ws}
	_ = ws.SetReadDeadline(time.Now().Add(failoverLimit))
	var w struct{ Type, Resume string }
	if err := ws.ReadJSON(&w); err != nil {
		_ = ws.Close()
		return nil, err
	}
	if w.Type != "welcome" {
		_ = ws.Close()
		return nil, fmt.Errorf("expected a welcome, got %q", w.Type)
	}
	s.resume = w.Resume
	if err := s.task(); err != nil {
		_ = ws.Close()
		return nil, err
	}
	return s, nil
}

// task runs one echo task and waits for its done frame.
func (s *failSession) task() error {
	if err := s.ws.WriteMessage(websocket.TextMessage, echoFrame); err != nil {
		return err
	}
	for {
		var f struct{ Type, Event string }
		if err := s.ws.ReadJSON(&f); err != nil {
			return err
		}
		switch f.Type {
		case "done":
			return nil
		case "error", "event":
			return fmt.Errorf("task answered with %s %s", f.Type, f.Event)
		}
	}
}

// farmLost returns the time from the farm's SIGKILL (or, frozen, its and
// its instances' SIGSTOP) until the client hears instance_lost.
func (b *bench) farmLost(ctx context.Context, frozen bool) (time.Duration, error) {
	c, err := b.newCluster("farmlost")
	if err != nil {
		return 0, err
	}
	defer c.stop()
	mp, maddr, err := c.manager(ctx, "manager")
	if err != nil {
		return 0, err
	}
	fp, err := c.farm(ctx, maddr)
	if err != nil {
		return 0, err
	}
	if err := warmAt(ctx, mp, maddr); err != nil {
		return 0, err
	}
	s, err := openSession(ctx, "ws://"+maddr+"/ws")
	if err != nil {
		return 0, err
	}
	defer s.ws.Close()
	t0 := time.Now()
	if frozen {
		// The farm first: no instance exit reaches it.
		pids := append([]int{fp.pid()}, children(fp.pid())...)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
		defer func() {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}()
	} else if err := syscall.Kill(fp.pid(), syscall.SIGKILL); err != nil {
		return 0, err
	}
	_ = s.ws.SetReadDeadline(t0.Add(failoverLimit))
	for {
		var f struct{ Type, Event string }
		if err := s.ws.ReadJSON(&f); err != nil {
			return 0, fmt.Errorf("waiting for instance_lost: %w", err)
		}
		if f.Type == "event" && f.Event == "instance_lost" {
			return time.Since(t0), nil
		}
	}
}

var errNoRedis = errors.New("redis-server is needed for two managers")

// managerLost returns the time from the SIGKILL of the client's manager
// until its session, resumed on the other manager, answered a task.
func (b *bench) managerLost(ctx context.Context) (time.Duration, error) {
	bin, err := lookPath("redis-server", "redis-server")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNoRedis, err)
	}
	c, err := b.newCluster("managerlost")
	if err != nil {
		return 0, err
	}
	defer c.stop()
	raddr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := strings.Cut(raddr, ":")
	rp, err := startProc("redis-server", []string{bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", c.dir}, nil)
	if err != nil {
		return 0, err
	}
	c.procs = append(c.procs, rp) // stopped last
	if err := rp.waitTCP(ctx, raddr, startLimit); err != nil {
		return 0, err
	}
	redis := "--redis=redis://" + raddr + "/0"
	ap, aaddr, err := c.manager(ctx, "manager-a", redis)
	if err != nil {
		return 0, err
	}
	_, baddr, err := c.manager(ctx, "manager-b", redis)
	if err != nil {
		return 0, err
	}
	if _, err := c.farm(ctx, aaddr, baddr); err != nil {
		return 0, err
	}
	if err := warmAt(ctx, ap, aaddr); err != nil {
		return 0, err
	}
	s, err := openSession(ctx, "ws://"+aaddr+"/ws")
	if err != nil {
		return 0, err
	}
	defer s.ws.Close()
	t0 := time.Now()
	if err := syscall.Kill(ap.pid(), syscall.SIGKILL); err != nil {
		return 0, err
	}
	// The client notices the broken connection, then resumes elsewhere.
	_ = s.ws.SetReadDeadline(t0.Add(failoverLimit))
	for {
		if _, _, err := s.ws.ReadMessage(); err != nil {
			break
		}
	}
	_ = s.ws.Close()
	noticed := time.Since(t0)
	for attempt := 1; ; attempt++ {
		r, err := openResumed(ctx, "ws://"+baddr+"/ws?resume="+s.resume)
		if err == nil {
			err = r.task()
			_ = r.ws.Close()
			if err == nil {
				d := time.Since(t0)
				b.progress("failover: connection broken after %s, resumed after %s, attempt %d", noticed, d, attempt)
				return d, nil
			}
		}
		if attempt == 1 {
			b.progress("failover: first resume failed after %s: %v", time.Since(t0), err)
		}
		if time.Since(t0) > failoverLimit {
			return 0, fmt.Errorf("not resumed within %s: %w", failoverLimit, err)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// openResumed dials a resume URL and reads the welcome.
func openResumed(ctx context.Context, url string) (*failSession, error) {
	ws, _, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(failoverLimit))
	var w json.RawMessage
	if err := ws.ReadJSON(&w); err != nil {
		_ = ws.Close()
		return nil, err
	}
	var f struct{ Type string }
	_ = json.Unmarshal(w, &f)
	if f.Type != "welcome" {
		_ = ws.Close()
		return nil, fmt.Errorf("resume answered %s", clip(w))
	}
	return &failSession{ws: ws}, nil
}
