package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/conversion/queue"
)

// kindColdContainer is the open kind of a new container per session.
const kindColdContainer = "drover-cold-container"

// targetGorilla is the label of the direct worker in the idle scenario: a
// plain gorilla/websocket server, one goroutine per connection.
const targetGorilla = "gorilla"

// idle measures, for each target, the growth of the server process's RSS
// while Idle client connections are open, divided by Idle. Every round
// starts fresh server processes: memory a process freed stays mapped, and
// a second measurement on the same process would reuse it.
//
// drover's idle clients are sessions waiting in its queue (?wait=true)
// behind a session that holds its only instance: drover cannot bind them
// without one instance each, and the figure is about connections.
func (b *bench) idle(ctx context.Context) error {
	n := b.cfg.Idle
	b.progress("idle: open-file limit %d", b.nofile)
	for r := range b.cfg.Rounds {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		w, err := b.startWorkerProc(ctx, targetGorilla, addr)
		if err != nil {
			return err
		}
		upstream := addr
		err = func() error {
			defer w.stop(5 * time.Second)
			type cand struct {
				name  string
				start func() (*server, func() error, error)
			}
			cands := []cand{{targetGorilla, func() (*server, func() error, error) {
				return &server{name: targetGorilla, url: "ws://" + addr + "/", pids: ownPIDs([]*proc{w})}, nil, nil
			}}}
			if b.servers[TargetNginx] != nil {
				cands = append(cands, cand{TargetNginx, func() (*server, func() error, error) {
					s, err := b.startNginx(ctx, TargetNginx, upstream)
					return s, nil, err
				}})
			}
			if b.servers[TargetHAProxy] != nil {
				cands = append(cands, cand{TargetHAProxy, func() (*server, func() error, error) {
					s, err := b.startHAProxy(ctx, upstream)
					return s, nil, err
				}})
			}
			if b.hasTarget(TargetDrover) {
				cands = append(cands, cand{TargetDrover, func() (*server, func() error, error) { return b.startQueuedDrover(ctx) }})
			}
			for _, c := range cands {
				s, release, err := c.start()
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				b.progress("idle: round %d/%d: %s, %d connections", r+1, b.cfg.Rounds, c.name, n)
				kib, err := idleKiBOf(ctx, s, n)
				if release != nil {
					_ = release()
				}
				if s.procs != nil {
					s.stop()
				}
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				b.res.add(BenchIdle, "memory per connection", "KiB", c.name, kib)
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	if b.hasTarget(TargetDrover) && b.cfg.IdleScale > 0 {
		return b.idleAtScale(ctx)
	}
	return nil
}

// startQueuedDrover starts drover up with one instance, which a session
// then holds: the idle connections are sessions waiting in its queue.
// release lets that session go.
func (b *bench) startQueuedDrover(ctx context.Context) (*server, func() error, error) {
	s, err := b.startDrover(ctx, TargetDrover, 1, 0, 0, 1)
	if err != nil {
		return nil, nil, err
	}
	hold, err := dial(ctx, s.url, echoFrame)
	if err != nil {
		s.stop()
		return nil, nil, err
	}
	hold.deadline(time.Now().Add(readyLimit))
	if _, err := hold.roundTrip(hold.task); err != nil {
		hold.close()
		s.stop()
		return nil, nil, fmt.Errorf("take the only instance: %w", err)
	}
	s.url += "?wait=true"
	return s, func() error { hold.close(); return nil }, nil
}

// idleFileHeadroom is what the scale run leaves of the open-file limit to
// the processes' other descriptors: the client and the manager each hold
// one per connection.
const idleFileHeadroom = 1000

// idleAtScale runs drover once with as many idle connections as asked for
// (50,000) or as the open-file limit allows, one process each side, and
// records the memory per connection and how long the manager took to let
// every connection go once the client had closed them.
func (b *bench) idleAtScale(ctx context.Context) error {
	n := b.cfg.IdleScale
	if room := int(b.nofile) - idleFileHeadroom; n > room {
		n = room
		b.progress("idle: %d connections at scale need an open-file limit above %d; this machine allows %d: measuring %d",
			b.cfg.IdleScale, b.cfg.IdleScale+idleFileHeadroom, b.nofile, n)
	}
	b.scaleRun = [2]int{n, b.cfg.IdleScale}
	if n <= b.cfg.Idle {
		return nil
	}
	s, release, err := b.startQueuedDrover(ctx)
	if err != nil {
		return fmt.Errorf("idle at scale: %w", err)
	}
	defer s.stop()
	defer func() { _ = release() }()
	b.progress("idle: drover at scale, %d connections", n)
	kib, err := idleKiBOf(ctx, s, n)
	if err != nil {
		return fmt.Errorf("idle at scale: %w", err)
	}
	b.res.add(BenchIdle, "memory per connection at scale", "KiB", TargetDrover, kib)
	return nil
}

// idleKiBOf holds n connections to s and returns the growth of its RSS
// per connection, once the RSS has settled.
func idleKiBOf(ctx context.Context, s *server, n int) (float64, error) {
	before, err := settledRSS(ctx, s)
	if err != nil {
		return 0, err
	}
	files := openFiles(s.pids())
	d := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: 30 * time.Second}
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for g := range errs {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, _, err := d.DialContext(ctx, s.url, nil)
				if err != nil {
					errs[g] = fmt.Errorf("idle connection %d: %w", i+1, err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	after, err := settledRSS(ctx, s)
	if err != nil {
		return 0, err
	}
	for i, c := range conns {
		_ = c.Close()
		conns[i] = nil
	}
	// The server must let go of every connection, promptly.
	if err := filesBackTo(ctx, s, files, n); err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// filesBackTo waits until s's processes hold no more open files than
// before (less a few of the n connections' worth: a server may keep a
// descriptor or two it opened meanwhile), at most idleRelease.
func filesBackTo(ctx context.Context, s *server, before, n int) error {
	start := time.Now()
	for {
		now := openFiles(s.pids())
		if now <= before+max(n/1000, 8) {
			return nil
		}
		if time.Since(start) > idleRelease {
			return fmt.Errorf("%d of %d closed connections still open on the server after %s", now-before, n, idleRelease)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// idleRelease bounds how long a server may take to close the connections
// its clients closed.
const idleRelease = 30 * time.Second

// openFiles counts the open descriptors of pids.
func openFiles(pids []int) int {
	n := 0
	for _, pid := range pids {
		if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd"); err == nil {
			n += len(ents)
		}
	}
	return n
}

// settledRSS waits until the RSS of s's processes stops changing (by
// under 0.5% over five polls 400 ms apart: 2 s, longer than a server's
// own reaction to silence such as drover's second before a silent
// connection gives back its reader; at most 30 s) and returns it.
func settledRSS(ctx context.Context, s *server) (int64, error) {
	last, same := rssKiB(s.pids()), 0
	for end := time.Now().Add(30 * time.Second); same < 5 && time.Now().Before(end); {
		if err := sleep(ctx, 400*time.Millisecond); err != nil {
			return 0, err
		}
		v := rssKiB(s.pids())
		if d := v - last; d*200 <= last && -d*200 <= last {
			same++
		} else {
			same = 0
		}
		last = v
	}
	return last, nil
}

// open measures session-open latency: dial, first echo task answered,
// on the direct worker (connection only), on drover's warm pool, on its
// cold pool (a new process per session) and, with Docker and the image,
// on its cold-container pool (a new container per session).
func (b *bench) open(ctx context.Context) error {
	dr := b.servers[TargetDrover]
	type kind struct {
		name, url string
		srv       *server
	}
	kinds := []kind{{TargetDirect, b.servers[TargetDirect].url, nil}}
	if dr != nil {
		kinds = append(kinds, kind{"drover-warm", dr.url, dr}, kind{"drover-cold", dr.url + "?pool=" + poolCold + "&wait=true", dr})
		if b.image != "" {
			kinds = append(kinds, kind{kindColdContainer, dr.url + "?pool=" + poolColdContainer + "&wait=true", dr})
		}
	}
	for r := range b.cfg.Rounds {
		for _, k := range kinds {
			if k.srv != nil {
				if err := b.rewarm(ctx, k.srv); err != nil {
					return err
				}
			}
			b.progress("open: round %d/%d: %s", r+1, b.cfg.Rounds, k.name)
			lat := make([]time.Duration, 0, b.cfg.Opens)
			for range b.cfg.Opens {
				t0 := time.Now()
				c, err := dial(ctx, k.url, echoFrame)
				if err != nil {
					return fmt.Errorf("%s: %w", k.name, err)
				}
				c.deadline(time.Now().Add(readyLimit))
				_, err = c.roundTrip(c.task)
				lat = append(lat, time.Since(t0))
				c.close()
				if err != nil {
					return fmt.Errorf("%s: %w", k.name, failure(ctx, err))
				}
			}
			slices.Sort(lat)
			b.res.add(BenchOpen, "p50", "ms", k.name, micros(lat, 0.5)/1e3)
			b.res.add(BenchOpen, "p99", "ms", k.name, micros(lat, 0.99)/1e3)
		}
	}
	return nil
}

// exchanger is one stdio client connection: exchange sends a line and
// waits for its echo and the delimiter.
type exchanger interface {
	exchange() error
	close()
}

// stdioPayload is the line of the stdio scenario, 100 bytes with its
// quotes: a JSON string, so that drover passes it through as is.
var stdioPayload = `"` + strings.Repeat("0123456789", 10)[:98] + `"`

type droverLine struct{ c *client }

func (d droverLine) exchange() error { _, err := d.c.roundTrip(d.c.task); return err }
func (d droverLine) close()          { d.c.close() }

type wsdLine struct {
	ws  *websocket.Conn
	pm  *websocket.PreparedMessage
	buf []byte
}

func (l *wsdLine) exchange() error {
	if err := l.ws.WritePreparedMessage(l.pm); err != nil {
		return err
	}
	for {
		_, r, err := l.ws.NextReader()
		if err != nil {
			return err
		}
		if l.buf, err = readAll(l.buf[:0], r); err != nil {
			return err
		}
		if bytes.Equal(l.buf, []byte(lineDelimiter)) {
			return nil
		}
	}
}

func (l *wsdLine) close() {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = l.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	_ = l.ws.Close()
}

func (b *bench) stdioOpener(s *server) func(ctx context.Context) (exchanger, error) {
	if s.name == TargetDrover {
		task := []byte(`{"type":"task","id":1,"data":` + stdioPayload + `}`)
		return func(ctx context.Context) (exchanger, error) {
			c, err := dial(ctx, s.url+"?pool="+poolLines+"&wait=true", task)
			if err != nil {
				return nil, err
			}
			c.deadline(time.Now().Add(readyLimit + stallLimit + 2*b.cfg.Duration))
			return droverLine{c}, nil
		}
	}
	return func(ctx context.Context) (exchanger, error) {
		ws, _, err := dialer.DialContext(ctx, s.url, nil)
		if err != nil {
			return nil, err
		}
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte(stdioPayload))
		if err != nil {
			_ = ws.Close()
			return nil, err
		}
		_ = ws.SetReadDeadline(time.Now().Add(readyLimit + stallLimit + 2*b.cfg.Duration))
		return &wsdLine{ws: ws, pm: pm, buf: make([]byte, 0, 256)}, nil
	}
}

// stdio measures lines per second at StdioClients connections and
// sessions opened per second (each a new process) at StdioOpeners at once,
// through drover's stdio pool and websocketd, on the same line program.
func (b *bench) stdio(ctx context.Context) error {
	ts := b.targets(TargetWebsocket, TargetDrover)
	return b.rounds(ctx, BenchStdio, ts, func(ctx context.Context, s *server) error {
		open := b.stdioOpener(s)
		v, _, err := ratePerSecond(ctx, b.cfg.StdioClients, b.cfg.Duration, open, false, nil)
		if err != nil {
			return fmt.Errorf("messages: %w", err)
		}
		b.res.add(BenchStdio, "msgs/s at "+itoa(b.cfg.StdioClients)+" clients", "", s.name, v)
		if err := b.rewarm(ctx, s); err != nil {
			return err
		}
		// The server process's own CPU over the measured opens (drover
		// up, websocketd; not the programs they start): the session
		// rate is bound by CPU here, which the rate alone hides in noise.
		var cpu []float64
		mark := func() { cpu = append(cpu, cpuSeconds(s.pids()[:1])) }
		v, n, err := ratePerSecond(ctx, b.cfg.StdioOpeners, b.cfg.Duration, open, true, mark)
		if err != nil {
			return fmt.Errorf("opens: %w", err)
		}
		b.res.add(BenchStdio, "sessions/s at "+itoa(b.cfg.StdioOpeners)+" concurrent", "", s.name, v)
		if len(cpu) == 2 && n > 0 {
			b.res.add(BenchStdio, stdioCPUMetric, "ms", s.name, (cpu[1]-cpu[0])/float64(n)*1e3)
		}
		return nil
	})
}

// stdioCPUMetric is the stdio figure that is a cost, not a rate.
const stdioCPUMetric = "server CPU per session"

// ratePerSecond runs workers loops for a warm-up and then d, and returns
// the exchanges per second (perSession false: each worker keeps one
// connection) or the sessions per second (true: each loop opens a
// connection, makes one exchange and closes it), and how many finished in
// d. mark, if set, is called as d begins and as it ends.
func ratePerSecond(parent context.Context, workers int, d time.Duration, open func(context.Context) (exchanger, error), perSession bool, mark func()) (float64, int64, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		count atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	errs := make([]error, workers)
	for i := range workers {
		wg.Go(func() {
			var e exchanger
			defer func() {
				if e != nil {
					e.close()
				}
			}()
			for !stop.Load() {
				if e == nil {
					var err error
					if e, err = open(ctx); err != nil {
						errs[i] = err
						cancel()
						return
					}
				}
				if err := e.exchange(); err != nil {
					if !stop.Load() {
						errs[i] = failure(ctx, err)
						cancel()
					}
					return
				}
				if perSession {
					e.close()
					e = nil
				}
				count.Add(1)
			}
		})
	}
	if mark == nil {
		mark = func() {}
	}
	var n int64
	measure := func() (float64, error) {
		if err := sleep(ctx, warmup(d)); err != nil {
			return 0, err
		}
		mark()
		c0, t0 := count.Load(), time.Now()
		if err := sleep(ctx, d); err != nil {
			return 0, err
		}
		n = count.Load() - c0
		elapsed := time.Since(t0)
		mark()
		return float64(n) / elapsed.Seconds(), nil
	}
	v, err := measure()
	stop.Store(true)
	wg.Wait()
	if e := errors.Join(errs...); e != nil {
		return 0, 0, e
	}
	if err == nil && v <= 0 {
		err = errors.New("nothing finished in the measured time")
	}
	return v, n, err
}

// Jobs: the loop of conversion/queue's benchmark (enqueue, lease,
// complete with a no-op converter, as farms run them), against the memory
// queue and a Redis queue on a redis-server started here.
const (
	jobProducers = 4
	jobConsumers = 8
	jobSlots     = 4
)

func (b *bench) jobs(ctx context.Context) error {
	mem, err := queue.NewMemory(queue.Options{})
	if err != nil {
		return err
	}
	defer mem.Close()
	queues := []struct {
		name string
		q    queue.Queue
	}{{"memory", mem}}
	if red, stop, err := b.startRedisQueue(ctx); err != nil {
		if err := b.skip("redis", err); err != nil {
			return err
		}
	} else {
		defer stop()
		queues = append(queues, struct {
			name string
			q    queue.Queue
		}{"redis", red})
	}
	for r := range b.cfg.Rounds {
		for _, q := range queues {
			b.progress("jobs: round %d/%d: %s", r+1, b.cfg.Rounds, q.name)
			v, err := runJobs(ctx, q.q, b.cfg.Jobs, fmt.Sprintf("r%d-", r))
			if err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			b.res.add(BenchJobs, "jobs/s", "", q.name, v)
		}
	}
	return nil
}

func (b *bench) startRedisQueue(ctx context.Context) (queue.Queue, func(), error) {
	bin, err := lookPath("redis-server", "redis-server")
	if err != nil {
		return nil, nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	_, port, _ := strings.Cut(addr, ":")
	dir, err := os.MkdirTemp(b.dir, "redis")
	if err != nil {
		return nil, nil, err
	}
	p, err := startProc("redis-server", []string{bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir}, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		p.stop(time.Second)
		return nil, nil, err
	}
	q, err := queue.NewRedis(ctx, queue.Options{}, queue.RedisOptions{URL: "redis://" + addr + "/0", Poll: time.Second})
	if err != nil {
		p.stop(time.Second)
		return nil, nil, err
	}
	return q, func() { _ = q.Close(); p.stop(5 * time.Second) }, nil
}

// runJobs pushes n jobs through q and returns the jobs completed per
// second.
func runJobs(ctx context.Context, q queue.Queue, n int, prefix string) (float64, error) {
	payload := []byte(`{"input":"in/part.step","outputs":["glb","png"]}`)
	var next, done atomic.Int64
	total := int64(n)
	errs := make([]error, jobProducers+jobConsumers)
	var wg sync.WaitGroup
	t0 := time.Now()
	for p := range jobProducers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				if err := q.Enqueue(ctx, queue.Job{ID: prefix + strconv.FormatInt(i, 10), Item: "item", Payload: payload}); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	for c := range jobConsumers {
		consumer := "farm" + strconv.Itoa(c)
		wg.Go(func() {
			for done.Load() < total && ctx.Err() == nil {
				ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: consumer, Max: jobSlots, Wait: 50 * time.Millisecond})
				if err != nil {
					errs[jobProducers+c] = err
					return
				}
				for _, l := range ls {
					if _, err := q.Complete(ctx, l.JobID, l.Token); err != nil {
						errs[jobProducers+c] = err
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
