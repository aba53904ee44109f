package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/app"
)

// The targets of `drover bench`. Each is one or more child processes the
// tool starts on free loopback ports and stops at the end.
const (
	TargetDirect   = "direct"    // one reference worker serving every connection
	TargetDirect64 = "direct-64" // one worker per connection, started as a farm starts them
	TargetNginx    = "nginx"     // Debian's nginx proxying to the direct worker
	// TargetNginx64 is nginx proxying each connection to its own worker of
	// direct-64 (tput only): the same proxy in front of the workers
	// drover's sessions run on.
	TargetNginx64   = "nginx-64"
	TargetHAProxy   = "haproxy"    // Debian's HAProxy proxying to the direct worker
	TargetDrover    = "drover"     // `drover up` as a child process
	TargetWebsocket = "websocketd" // websocketd serving the stdio line program
	// TargetRemote and TargetRemoteDirect are a `drover manager` with a
	// `drover farm` in another process (stream only): the farm relays
	// viewers to its instances, or (direct) advertises their own ports.
	TargetRemote       = "drover-remote"
	TargetRemoteDirect = "drover-remote-direct"
)

// Targets lists the targets in report order.
var Targets = []string{TargetDirect, TargetDirect64, TargetNginx, TargetNginx64, TargetHAProxy, TargetDrover, TargetWebsocket,
	TargetRemote, TargetRemoteDirect}

// lineProgram is the line program of the stdio scenario, run by websocketd
// and by drover's stdio pool alike: it echoes each line, then writes "."
// (drover's end-of-task delimiter; websocketd clients wait for it too).
// GNU sed -u reads and flushes line by line (mawk would wait for a full
// input buffer).
var lineProgram = []string{"sed", "-u", "a " + lineDelimiter}

const lineDelimiter = "."

// startLimit bounds the start of one server.
const startLimit = time.Minute

// server is a started target.
type server struct {
	name string
	url  string // WebSocket URL of the task path
	// streamURL, for drover, is the URL of /stream sessions of the relay
	// pool.
	streamURL string
	// streamOnly: the target serves the stream scenario's /stream alone.
	streamOnly bool
	urlAt      func(i int) string // per connection, when connections go to different servers
	addrs      []string           // direct-64: its workers' addresses
	procs      []*proc
	// pids returns the processes whose CPU and memory are the target's:
	// for drover the manager process alone (its instances are the same
	// workers as direct-64's).
	pids func() []int
	// status, for drover, is the URL of /status.
	status string
}

func (s *server) urlFor(i int) string {
	if s.urlAt != nil {
		return s.urlAt(i)
	}
	return s.url
}

func (s *server) stop() {
	for _, p := range s.procs {
		p.stop(10 * time.Second)
	}
}

func ownPIDs(ps []*proc) func() []int {
	return func() []int {
		out := make([]int, 0, len(ps))
		for _, p := range ps {
			out = append(out, p.pid())
		}
		return out
	}
}

// withChildren counts the process and its children (nginx's workers).
func withChildren(p *proc) func() []int {
	return func() []int { return append([]int{p.pid()}, children(p.pid())...) }
}

// lookPath finds a server's program, or says how to get it.
func lookPath(name, pkg string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		// Debian puts nginx and haproxy in /usr/sbin, which a user's PATH
		// may lack.
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			if p := filepath.Join(dir, name); isExec(p) {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not found (install the Debian package %s, or run scripts/setup.sh)", name, pkg)
	}
	return path, nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// startWorkerProc starts `drover worker` on addr.
func (b *bench) startWorkerProc(ctx context.Context, name, addr string) (*proc, error) {
	argv := append(b.droverArgv("worker"), "--addr="+addr)
	p, err := startProc(name, argv, b.cfg.Env)
	if err != nil {
		return nil, err
	}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	return p, nil
}

func (b *bench) droverArgv(args ...string) []string {
	argv := append([]string(nil), b.cfg.Drover...)
	return append(append(argv, args...), "--log-level=warn")
}

func (b *bench) startDirect(ctx context.Context) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := b.startWorkerProc(ctx, TargetDirect, addr)
	if err != nil {
		return nil, err
	}
	return &server{name: TargetDirect, url: "ws://" + addr + "/", procs: []*proc{p}, pids: ownPIDs([]*proc{p})}, nil
}

// startDirect64 starts one worker per connection the way a farm starts an
// instance: `drover worker` with DROVER_PORT in its environment.
func (b *bench) startDirect64(ctx context.Context, n int) (*server, error) {
	s := &server{name: TargetDirect64}
	addrs := make([]string, 0, n)
	for i := range n {
		addr, err := freeAddr()
		if err != nil {
			s.stop()
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		p, err := startProc(fmt.Sprintf("%s[%d]", TargetDirect64, i), b.droverArgv("worker"),
			append(append([]string(nil), b.cfg.Env...), "DROVER_PORT="+port))
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs = append(s.procs, p)
		addrs = append(addrs, addr)
	}
	for i, p := range s.procs {
		if err := p.waitTCP(ctx, addrs[i], startLimit); err != nil {
			s.stop()
			return nil, err
		}
	}
	s.url = "ws://" + addrs[0] + "/"
	s.urlAt = func(i int) string { return "ws://" + addrs[i%len(addrs)] + "/" }
	s.addrs = addrs
	s.pids = ownPIDs(s.procs)
	return s, nil
}

// nginxConf proxies WebSockets to upstream with 64 KiB buffers and no
// buffering of responses.
const nginxConf = `daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {{nofile}};
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections {{maxconn}}; }
http {
  access_log off;
  client_body_temp_path {{dir}}/body;
  proxy_temp_path {{dir}}/proxy;
  fastcgi_temp_path {{dir}}/fastcgi;
  uwsgi_temp_path {{dir}}/uwsgi;
  scgi_temp_path {{dir}}/scgi;
  server {
    listen {{listen}};
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection "upgrade";
    proxy_buffering off;
    proxy_buffer_size 64k;
    proxy_buffers 4 64k;
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
{{locations}}  }
}
`

// nginxLocations routes / to the one upstream, or /w/I to the I-th of
// several.
func nginxLocations(upstreams []string) string {
	if len(upstreams) == 1 {
		return "    location / { proxy_pass http://" + upstreams[0] + "; }\n"
	}
	var b strings.Builder
	for i, u := range upstreams {
		fmt.Fprintf(&b, "    location = /w/%d { proxy_pass http://%s/; }\n", i, u)
	}
	return b.String()
}

// haproxyConf proxies to upstream with two threads.
const haproxyConf = `global
  nbthread 2
  maxconn {{maxconn}}
defaults
  mode http
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend fe
  bind {{listen}}
  default_backend be
backend be
  server w {{upstream}}
`

// maxConn is the client connections a proxy can take within the open-file
// limit: two descriptors each, and some to spare.
func (b *bench) maxConn() uint64 {
	return max(b.nofile, 1024)/2 - 64
}

func expand(tmpl string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(tmpl)
}

// startNginx starts nginx in front of upstream; with more than one, the
// I-th connection (urlAt) goes to the I-th.
func (b *bench) startNginx(ctx context.Context, name string, upstreams ...string) (*server, error) {
	bin, err := lookPath("nginx", "nginx")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(b.dir, "nginx")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	text := expand(nginxConf, "{{dir}}", dir, "{{listen}}", addr, "{{locations}}", nginxLocations(upstreams),
		"{{nofile}}", strconv.FormatUint(max(b.nofile, 1024), 10), "{{maxconn}}", strconv.FormatUint(b.maxConn(), 10))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc(name, []string{bin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf}, nil)
	if err != nil {
		return nil, err
	}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	s := &server{name: name, url: "ws://" + addr + "/", procs: []*proc{p}, pids: withChildren(p)}
	if len(upstreams) > 1 {
		s.url = "ws://" + addr + "/w/0"
		s.urlAt = func(i int) string { return fmt.Sprintf("ws://%s/w/%d", addr, i%len(upstreams)) }
	}
	return s, nil
}

func (b *bench) startHAProxy(ctx context.Context, upstream string) (*server, error) {
	bin, err := lookPath("haproxy", "haproxy")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(b.dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(expand(haproxyConf, "{{listen}}", addr, "{{upstream}}", upstream,
		"{{maxconn}}", strconv.FormatUint(b.maxConn(), 10))), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc(TargetHAProxy, []string{bin, "-db", "-f", conf}, nil)
	if err != nil {
		return nil, err
	}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	return &server{name: TargetHAProxy, url: "ws://" + addr + "/", procs: []*proc{p}, pids: withChildren(p)}, nil
}

// envNames returns the names of the variables of env (KEY=value).
func envNames(env []string) []string {
	names := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k != "" {
			names = append(names, k)
		}
	}
	return names
}

func (b *bench) startWebsocketd(ctx context.Context) (*server, error) {
	bin, err := lookPath("websocketd", "websocketd")
	if err != nil {
		return nil, err
	}
	prog, err := exec.LookPath(lineProgram[0])
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	// The program gets the environment drover's instances get, the
	// bench's own (websocketd passes only PATH and LD_LIBRARY_PATH unless
	// told): the same program in another locale is another workload (sed
	// with LANG=C.UTF-8 loads the locale's data on each start).
	argv := append([]string{bin, "--address=127.0.0.1", "--port=" + port, "--loglevel=error",
		"--passenv=" + strings.Join(envNames(os.Environ()), ","), prog}, lineProgram[1:]...)
	p, err := startProc(TargetWebsocket, argv, nil)
	if err != nil {
		return nil, err
	}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	return &server{name: TargetWebsocket, url: "ws://" + addr + "/", procs: []*proc{p}, pids: withChildren(p)}, nil
}

// The pools of the drover target.
const (
	poolDefault = "default" // the reference worker, warm
	poolCold    = "cold"    // the reference worker, nothing warm
	poolLines   = "lines"   // the stdio line program, warm
	poolRelay   = "relay"   // the reference worker as a stream pool: /stream relays to it byte for byte
	// poolColdContainer is the reference worker image, nothing warm: a
	// container per session.
	poolColdContainer = "cold-container"
)

// droverPools is the YAML config of the drover target: the pool of
// `drover up` with warm workers, a pool with none warm (cold opens), a
// stdio pool of the line program and a stream pool of reference workers.
func droverPools(exe string, warm, lines, relay int, image string) (string, error) {
	prog, err := exec.LookPath(lineProgram[0])
	if err != nil {
		return "", err
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // JSON strings are YAML
	args := make([]string, 0, len(lineProgram)-1)
	for _, a := range lineProgram[1:] {
		args = append(args, q(a))
	}
	worker := workerYAML(exe) + "    protocol: native\n"
	out := "pools:\n" +
		"  - name: " + poolDefault + "\n    warm: " + strconv.Itoa(warm) + "\n" + worker +
		"  - name: " + poolCold + "\n    warm: 0\n" + worker +
		"  - name: " + poolLines + "\n    warm: " + strconv.Itoa(lines) + "\n    command: " + q(prog) +
		"\n    args: [" + strings.Join(args, ", ") + "]\n    protocol: stdio\n    delimiter: " + q(lineDelimiter) + "\n" +
		"  - name: " + poolRelay + "\n    warm: " + strconv.Itoa(relay) + "\n" +
		strings.Replace(worker, "protocol: native", "protocol: stream\n    initial_use: 1h", 1) // see startDroverRemote
	if image != "" {
		out += "  - name: " + poolColdContainer + "\n    warm: 0\n    runtime: docker\n    image: " + q(image) +
			"\n    protocol: native\n"
	}
	return out, nil
}

// dockerImage checks that the Docker daemon answers and has image.
func dockerImage(ctx context.Context, image string) error {
	bin, err := exec.LookPath("docker")
	if err != nil {
		return fmt.Errorf("docker not found: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "image", "inspect", "--format", "{{.Id}}", image).CombinedOutput(); err != nil {
		return fmt.Errorf("image %s not on the Docker host (make image builds it): %s", image, strings.TrimSpace(string(out)))
	}
	return nil
}

// workerYAML is the command and args of a pool of reference workers, as
// `drover up` starts them next to exe (app.WorkerCommand).
func workerYAML(exe string) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	cmd, args := app.WorkerCommand(exe)
	args = append(args, "--log-level=warn")
	for i := range args {
		args[i] = q(args[i])
	}
	return "    command: " + q(cmd) + "\n    args: [" + strings.Join(args, ", ") + "]\n"
}

// startDrover runs `drover up` with its default security and limits, warm
// instances of the default pool and lines instances of the stdio pool.
func (b *bench) startDrover(ctx context.Context, name string, warm, lines, relay, slots int) (*server, error) {
	exe := b.cfg.Drover[0]
	if !filepath.IsAbs(exe) {
		var err error
		if exe, err = exec.LookPath(exe); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(b.dir, "drover")
	if err != nil {
		return nil, err
	}
	yaml, err := droverPools(exe, warm, lines, relay, b.image)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	argv := b.droverArgv("up", "--addr="+addr, "--config="+conf, "--data="+filepath.Join(dir, "data"),
		"--instances="+strconv.Itoa(slots), "--warm="+strconv.Itoa(warm), "--job-slots=0")
	p, err := startProc(name, argv, append(append([]string(nil), b.cfg.Env...), "XDG_STATE_HOME="+dir))
	if err != nil {
		return nil, err
	}
	s := &server{name: name, url: "ws://" + addr + "/ws", streamURL: "ws://" + addr + "/stream?pool=" + poolRelay, procs: []*proc{p},
		pids: func() []int { return []int{p.pid()} }, status: "http://" + addr + "/status"}
	if err := p.waitTCP(ctx, addr, startLimit); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.waitWarm(ctx, map[string]int{poolDefault: warm, poolLines: lines, poolRelay: relay}); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitWarm waits until drover's pools hold at least want idle instances,
// and then, for restWait at most, until it is at rest: no instance
// starting, bound or stopping in any pool. A measurement then does not
// share the CPU with the end of the one before (the stops and removals of
// cold containers, the refills of the warm pool).
func (s *server) waitWarm(ctx context.Context, want map[string]int) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	var warmAt time.Time
	for {
		ok, rest, st := s.warm(ctx, want)
		switch {
		case ok && (rest || time.Since(warmAt) > restWait && !warmAt.IsZero()):
			return nil
		case ok && warmAt.IsZero():
			warmAt = time.Now()
		case !ok:
			last = st
		}
		if s.procs[0].exited() {
			return fmt.Errorf("%s exited: %s", s.name, s.procs[0].out.String())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: instances not warm within 2m: %s", s.name, last)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// restWait bounds waitWarm's wait for a stack at rest: a session some
// client left without closing keeps its instance for the resume window.
const restWait = 10 * time.Second

// warm reports whether drover's pools hold want idle instances, and whether
// every instance on its books is idle (rest); why says what is missing.
func (s *server) warm(ctx context.Context, want map[string]int) (ok, rest bool, why string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.status, nil)
	req.Close = true // no idle connection outlives the run
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, false, err.Error()
	}
	defer resp.Body.Close()
	var st struct {
		Pools []struct {
			Name      string `json:"name"`
			Instances int    `json:"instances"`
			Idle      int    `json:"idle"`
			Starting  int    `json:"starting"`
		} `json:"pools"`
		Queue []json.RawMessage `json:"queue"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, false, fmt.Sprintf("status %d: %v", resp.StatusCode, err)
	}
	idle := map[string]int{}
	rest = true
	for _, p := range st.Pools {
		idle[p.Name] = p.Idle
		rest = rest && p.Starting == 0 && p.Instances == p.Idle
	}
	for name, n := range want {
		if idle[name] < n {
			return false, false, fmt.Sprintf("pool %s: %d of %d idle", name, idle[name], n)
		}
	}
	return true, rest, ""
}

// queued returns the number of sessions waiting in drover's queue.
func (s *server) queued(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.status, nil)
	req.Close = true // no idle connection outlives the run
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st struct {
		Queue []json.RawMessage `json:"queue"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return -1
	}
	return len(st.Queue)
}

// startDroverRemote runs a `drover manager` and a separate `drover farm`
// registered with it, whose only pool is the stream pool of the stream
// scenario (relay warm instances): the remote-farm case of /stream. With
// direct the farm advertises its instances' own ports (--direct), and the
// manager relays a viewer straight to its instance; without, a viewer
// crosses the manager's relay and then the farm's.
func (b *bench) startDroverRemote(ctx context.Context, name string, relay int, direct bool) (*server, error) {
	exe := b.cfg.Drover[0]
	if !filepath.IsAbs(exe) {
		var err error
		if exe, err = exec.LookPath(exe); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(b.dir, name)
	if err != nil {
		return nil, err
	}
	mconf := filepath.Join(dir, "manager.yaml")
	fconf := filepath.Join(dir, "farm.yaml")
	if err := os.WriteFile(mconf, []byte("pools:\n  - name: "+poolRelay+"\n    warm: "+strconv.Itoa(relay)+"\n"), 0o600); err != nil {
		return nil, err
	}
	// initial_use: the farm kills a stream instance no viewer connected to
	// within it (60 s by default, as a HOOPS streaming server does), unless
	// the manager started it warm. Builds before the warm start option
	// (--drover-bin) did not say so, and the warm ones here wait minutes
	// for the stream scenario.
	if err := os.WriteFile(fconf, []byte("pools:\n  - name: "+poolRelay+"\n"+workerYAML(exe)+"    protocol: stream\n    initial_use: 1h\n"), 0o600); err != nil {
		return nil, err
	}
	maddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	faddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	token := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	env := append(append([]string(nil), b.cfg.Env...), "XDG_STATE_HOME="+dir)
	mp, err := startProc(name+"-manager", b.droverArgv("manager", "--addr="+maddr, "--config="+mconf,
		"--data="+filepath.Join(dir, "data")), append(env, "DROVER_FARM_TOKEN="+token))
	if err != nil {
		return nil, err
	}
	s := &server{name: name, url: "ws://" + maddr + "/ws", streamURL: "ws://" + maddr + "/stream?pool=" + poolRelay,
		streamOnly: true, procs: []*proc{mp}, status: "http://" + maddr + "/status"}
	if err := mp.waitTCP(ctx, maddr, startLimit); err != nil {
		s.stop()
		return nil, err
	}
	fargs := []string{"farm", "--addr=" + faddr, "--manager=http://" + maddr, "--config=" + fconf,
		"--instances=" + strconv.Itoa(relay+2), "--job-slots=0", "--state-dir=" + filepath.Join(dir, "farm")}
	if direct {
		// The farm sees no connection to a directly reached instance: its
		// orphan sweep would stop them.
		fargs = append(fargs, "--direct", "--orphan-grace=-1s")
	}
	fp, err := startProc(name+"-farm", b.droverArgv(fargs...), append(env, "DROVER_TOKEN="+token))
	if err != nil {
		s.stop()
		return nil, err
	}
	// The farm stops first: its instances go before the manager does.
	s.procs = []*proc{fp, mp}
	s.pids = ownPIDs(s.procs)
	if err := fp.waitTCP(ctx, faddr, startLimit); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.waitWarm(ctx, map[string]int{poolRelay: relay}); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}
