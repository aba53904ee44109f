package farm

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/bearer"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Relayer splices a client's WebSocket to an upstream WebSocket byte for
// byte and returns when the connection is over. *proxy.Relay implements it.
type Relayer interface {
	ServeWebSocket(w http.ResponseWriter, r *http.Request, upstream string) error
}

// RequireFunc registers the farm with the manager at managerURL, offering it
// slots instance slots (0: all), and reports whether the first registration
// succeeded within ctx. It backs awv3's GET /require.
type RequireFunc func(ctx context.Context, managerURL string, slots int) (registered bool, err error)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Token is the farm token every request must carry as
	// "Authorization: Bearer <token>". Required.
	Token string
	// Relay carries /instances/:id connections to the instances. Required.
	Relay Relayer
	// Require, when set, serves awv3's GET /require/:ip/:port/:instances.
	Require RequireFunc
	// OrphanGrace is how long a ready instance may go without a connection
	// through the farm before the farm stops it (default
	// DefaultOrphanGrace; negative: never). Managers connect to an instance as soon as it is ready and
	// stop it when they drop the connection, so an instance nobody is
	// connected to belongs to a manager that died or forgot it, and would
	// otherwise hold its slot for good.
	OrphanGrace time.Duration
	// Direct advertises native and stream instances at their own ports
	// (ws://Addr/), so managers connect to them without the farm's relay;
	// Config.Host must then be reachable by the managers. Such connections
	// do not pass the farm, so OrphanGrace should be off (negative).
	Direct bool
	// Gatherer, when set, is served at /metrics (behind the token too).
	Gatherer prometheus.Gatherer
	// Logger receives the server's log; nil discards. The token is never
	// logged.
	Logger *slog.Logger
}

// DefaultOrphanGrace is ServerConfig.OrphanGrace's default, and drover
// farm's --orphan-grace. It is longer than a manager's default resume grace
// (30 s): a session whose manager died may resume through another manager
// until then, on the same instance, which must still be there.
const DefaultOrphanGrace = 45 * time.Second

const (
	maxRequestBody = 64 << 10
	pathRequire    = "/require/"
	pathLiveliness = "/liveliness/"
)

// Server is a farm's HTTP face: the API managers use to start and stop
// instances and read the farm's status, the instances' WebSockets relayed
// through the farm's one port, and awv3's /require. Every route wants the
// farm token. Make it with NewServer, serve it as an http.Handler, Close it.
//
// Routes (the bodies are farmapi's):
//
//	POST   /api/v1/instances      {"pool"} → Instance (ready; URL empty)
//	                              404 unknown pool, 429 no free slot,
//	                              503 draining or closed, 504 start timeout
//	DELETE /api/v1/instances/:id  204; 404 when the farm has no such instance
//	PUT    /api/v1/instances/:id/files
//	                              {"files":[…]}: files into the instance's
//	                              session directory; 204, 404 unknown
//	                              instance, 400 bad name, 409 no session
//	                              directory, 502 fetch failed
//	GET    /api/v1/status         FarmStatus
//	GET    /instances/:id         the instance's native-protocol WebSocket
//	GET    /require/:ip/:port/:n  register with the manager at http://ip:port
//	                              offering n slots (empty or "all": every
//	                              slot); the token may also come as ?token=
//	POST   /liveliness/:id        a stream instance's report,
//	                              ?liveliness=ready|ping|disconnect (HOOPS
//	                              SC server style); 204, 404 unknown
//	                              instance, 400 bad report
//	GET    /metrics               Prometheus metrics, when configured
//
// Liveliness reports come from the instances, which run on the farm's host
// and must not know the farm token: from a loopback address they need none,
// and neither does a container's report on its own instance, from its
// address on its network (the farm must listen where containers reach it).
// Instance ids are random, so one local program cannot easily report for
// another's instance.
//
// Errors are JSON: {"message": "..."}.
type Server struct {
	f     *Farm
	cfg   ServerConfig
	token bearer.Checker
	log   *slog.Logger
	mux   *http.ServeMux

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu    sync.Mutex
	conns map[string]int       // open connections by instance id
	quiet map[string]time.Time // since when a ready instance has had none
}

var _ http.Handler = (*Server)(nil)

// NewServer returns the server for f. It starts the orphan sweeper; Close
// stops it.
func NewServer(f *Farm, cfg ServerConfig) (*Server, error) {
	if cfg.Token == "" {
		return nil, errors.New("farm: server needs a token")
	}
	if cfg.Relay == nil {
		return nil, errors.New("farm: server needs a relay")
	}
	cfg.OrphanGrace = cmp.Or(cfg.OrphanGrace, DefaultOrphanGrace)
	s := &Server{
		f:     f,
		cfg:   cfg,
		token: bearer.NewChecker(cfg.Token),
		log:   cfg.Logger,
		mux:   http.NewServeMux(),
		conns: map[string]int{},
		quiet: map[string]time.Time{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mux.HandleFunc("POST "+PathInstances, s.serveStart)
	s.mux.HandleFunc("DELETE "+PathInstances+"/{id}", s.serveStop)
	s.mux.HandleFunc("PUT "+PathInstances+"/{id}"+farmapi.PathFiles, s.serveFiles)
	s.mux.HandleFunc("POST "+PathInstances+"/{id}"+farmapi.PathConnected, s.serveConnected)
	s.mux.HandleFunc("GET "+PathStatus, s.serveStatus)
	s.mux.HandleFunc("GET "+PathInstance+"{id}", s.serveInstance)
	s.mux.HandleFunc("GET "+pathRequire+"{ip}/{port}", s.serveRequire)
	s.mux.HandleFunc("GET "+pathRequire+"{ip}/{port}/{instances...}", s.serveRequire)
	s.mux.HandleFunc("POST "+pathLiveliness+"{id}", s.serveLiveliness)
	if cfg.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	if cfg.OrphanGrace > 0 {
		s.wg.Add(1)
		go s.sweep()
	}
	return s, nil
}

// Close stops the orphan sweeper and the stops it started, and waits for
// them. It does not touch connections or the farm. Idempotent.
func (s *Server) Close() error {
	s.once.Do(s.cancel)
	s.wg.Wait()
	return nil
}

// ServeHTTP checks the token, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// awv3 managers call /require with the token in the query.
	if !s.token.Request(r, strings.HasPrefix(r.URL.Path, pathRequire)) && !localReport(r) && !s.containerReport(r) {
		// The path names no secret; the query may, so it is not logged.
		s.log.Warn("unauthorized farm API request", "method", r.Method, "path", r.URL.Path,
			"remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "missing or wrong token")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) serveStart(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&req); err != nil {
		s.badBody(w, "start", err)
		return
	}
	if req.Pool == "" {
		writeError(w, http.StatusBadRequest, "bad start request, it names no pool")
		return
	}
	inst, err := s.f.StartInstanceWith(r.Context(), req.Pool, StartOptions{Model: req.Model, SessionDir: req.SessionDir, Warm: req.Warm})
	if err != nil {
		code := farmapi.Status(err)
		if code == http.StatusInternalServerError && r.Context().Err() != nil {
			code = http.StatusServiceUnavailable // the manager gave up; nobody reads this
		}
		s.fail(w, code, "start", err)
		return
	}
	// The manager reaches the instance through this farm, building the URL
	// from the address it registered the farm with, unless the farm
	// advertises its instances' own ports (native and stream only: the
	// others are spoken to by the farm).
	inst.URL = ""
	if s.cfg.Direct && (inst.Protocol == "" || inst.Protocol == ProtocolNative || inst.Protocol == ProtocolStream) {
		inst.URL = "ws://" + inst.Addr + "/"
	}
	writeJSON(w, http.StatusOK, inst)
}

// serveConnected hears from a manager that it relays a client to a stream
// instance's own port (Direct), which the farm does not see.
func (s *Server) serveConnected(w http.ResponseWriter, r *http.Request) {
	if err := s.f.StreamConnected(r.PathValue("id")); err != nil {
		writeError(w, http.StatusNotFound, msgNoInstance)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveStop stops an instance and answers once it is gone. A manager that
// stops waiting (its own timeout, or it died) does not cut the stop short:
// the instance still gets its stop grace, since what it does on SIGTERM
// (save, flush, hand back a licence) does not depend on who is listening.
func (s *Server) serveStop(w http.ResponseWriter, r *http.Request) {
	err := s.f.StopInstance(context.WithoutCancel(r.Context()), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, msgNoInstance)
	case err != nil:
		s.fail(w, http.StatusInternalServerError, "stop", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// maxFilesBody bounds an AddFilesRequest.
const maxFilesBody = 1 << 20

func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request) {
	var req farmapi.AddFilesRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFilesBody)).Decode(&req); err != nil {
		s.badBody(w, "files", err)
		return
	}
	if err := s.f.AddSessionFiles(r.Context(), r.PathValue("id"), req.Files); err != nil {
		s.fail(w, farmapi.Status(err), "session files", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.f.Status())
}

func (s *Server) serveInstance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h, upstream, err := s.f.Endpoint(id)
	if err != nil {
		s.log.Debug("instance connection refused", "instance", id, "err", err)
		writeError(w, http.StatusNotFound, msgNoInstance)
		return
	}
	// The token was for the farm; the instance program must not see it.
	r = r.Clone(r.Context())
	r.Header.Del("Authorization")
	s.track(id, 1)
	defer s.track(id, -1)
	if h != nil {
		h.ServeHTTP(w, r)
		return
	}
	if err := s.cfg.Relay.ServeWebSocket(w, r, upstream); err != nil {
		s.log.Debug("instance connection ended", "instance", id, "err", err)
	}
}

// localReport reports whether r is a liveliness report from this host.
func localReport(r *http.Request) bool {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, pathLiveliness) {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// containerReport reports whether r is a liveliness report from the
// container of the instance it is about.
func (s *Server) containerReport(r *http.Request) bool {
	id, ok := strings.CutPrefix(r.URL.Path, pathLiveliness)
	if r.Method != http.MethodPost || !ok {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := s.f.containerIP(id)
	return ip != nil && ip.Equal(net.ParseIP(host))
}

func (s *Server) serveLiveliness(w http.ResponseWriter, r *http.Request) {
	err := s.f.Liveliness(r.PathValue("id"), r.URL.Query().Get("liveliness"))
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, msgNoInstance)
	case errors.Is(err, ErrBadLiveliness):
		writeError(w, http.StatusBadRequest, "bad liveliness report")
	case err != nil:
		s.fail(w, http.StatusInternalServerError, "liveliness", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) serveRequire(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Require == nil {
		writeError(w, http.StatusNotImplemented, "this farm does not register on request")
		return
	}
	host, port := r.PathValue("ip"), r.PathValue("port")
	if !validHost(host) {
		writeError(w, http.StatusBadRequest, "bad manager host "+strconv.Quote(host))
		return
	}
	// Digits only: Atoi takes "+80", which makes no URL.
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strings.Trim(port, "0123456789") != "" {
		writeError(w, http.StatusBadRequest, "bad manager port "+strconv.Quote(port))
		return
	}
	slots := 0 // all
	if n := strings.Trim(r.PathValue("instances"), "/"); n != "" && n != "all" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 {
			writeError(w, http.StatusBadRequest, "instances must be a positive number or \"all\"")
			return
		}
		slots = min(v, s.f.Slots())
	}
	manager := "http://" + net.JoinHostPort(host, port)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	registered, err := s.cfg.Require(ctx, manager, slots)
	if err != nil {
		s.log.Warn("register on request", "manager", manager, "err", err)
		writeError(w, http.StatusServiceUnavailable, "could not register with that manager")
		return
	}
	offered := slots
	if offered == 0 {
		offered = s.f.Slots()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"farm": s.f.ID(), "manager": manager, "slots": offered, "registered": registered})
}

// validHost accepts an IP address or a DNS name.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

// track counts open connections per instance; an instance's quiet time
// starts when its last connection ends.
func (s *Server) track(id string, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.conns[id] + delta
	if n > 0 {
		s.conns[id] = n
		delete(s.quiet, id)
		return
	}
	delete(s.conns, id)
	s.quiet[id] = time.Now()
}

// sweep stops the ready instances that had no connection for OrphanGrace.
func (s *Server) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.cfg.OrphanGrace/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			for _, id := range s.orphans(now) {
				s.log.Warn("stopping an instance nobody is connected to", "instance", id,
					"quiet_for", s.cfg.OrphanGrace)
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					if err := s.f.StopInstance(s.ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
						s.log.Warn("stop orphaned instance", "instance", id, "err", err)
					}
				}()
			}
		}
	}
}

// orphans returns the ready instances quiet for OrphanGrace. An instance
// first seen without a connection starts its quiet time then.
func (s *Server) orphans(now time.Time) []string {
	insts := s.f.Instances()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	live := make(map[string]bool, len(insts))
	for _, in := range insts {
		live[in.ID] = true
		// Stream instances wait for their viewer under their own watch
		// (InitialUse, liveliness).
		if in.State != StateReady || in.Protocol == ProtocolStream || s.conns[in.ID] > 0 {
			continue
		}
		since, ok := s.quiet[in.ID]
		if !ok {
			s.quiet[in.ID] = now
			continue
		}
		if now.Sub(since) >= s.cfg.OrphanGrace {
			out = append(out, in.ID)
			delete(s.quiet, in.ID)
		}
	}
	for id := range s.quiet {
		if !live[id] {
			delete(s.quiet, id)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// msgNoInstance answers a request about an instance the farm does not run.
const msgNoInstance = "no such instance"

// badBody answers a request body that is not the JSON it should be, or is
// over its bound.
func (s *Server) badBody(w http.ResponseWriter, what string, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "the "+what+" request is larger than the farm accepts")
		return
	}
	s.log.Info("bad request body", "request", what, "err", err)
	writeError(w, http.StatusBadRequest, "bad "+what+" request, the body must be its JSON")
}

// fail answers an error of the farm with a plain sentence for its status;
// the error itself, which may name paths, commands and addresses, goes to
// the log.
func (s *Server) fail(w http.ResponseWriter, code int, what string, err error) {
	msg := "internal error"
	switch code {
	case http.StatusNotFound:
		msg = "no such pool or instance"
	case http.StatusBadRequest:
		msg = "the farm refuses that model"
	case http.StatusConflict:
		msg = "the instance has no session directory"
	case http.StatusBadGateway:
		msg = "the farm could not fetch a model file from the managers"
	case http.StatusTooManyRequests:
		msg = "no free instance slot"
	case http.StatusServiceUnavailable:
		msg = "the farm is draining or closed"
	case http.StatusGatewayTimeout:
		msg = "the instance did not become ready in time"
	}
	if code == http.StatusInternalServerError {
		s.log.Warn("farm api", "request", what, "err", err)
	} else {
		s.log.Debug("farm api", "request", what, "status", code, "err", err)
	}
	writeError(w, code, msg)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}
