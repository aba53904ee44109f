// Package worker is drover's reference instance program, used for tests,
// demos and benchmarks. It is a WebSocket server that speaks the native
// protocol (the JSON envelope of client protocol v1): the manager sends
// {"type":"task","id":ID,"data":DATA} and the worker answers with results,
// binary frames and a done frame, or an error frame, serving the tasks of one
// connection strictly in order.
//
// The task data is a JSON object whose "command" member picks what to do:
// echo, sleep, set, get, reset, pid, model, stream, results, fail and crash.
// The key/value state of set and get belongs to the Worker, that is to the
// process, and is shared by all its connections: it shows that a session
// stays on its instance. reset empties it, which is how a manager pool that
// reuses instances clears one between sessions.
//
// The package owns the worker's protocol loop and its commands. It does not
// register with farms or know about sessions: a farm starts it with
// DROVER_PORT and DROVER_INSTANCE_ID in the environment, as any native
// instance program, and DROVER_READY_FD, where the worker writes a byte
// once it listens.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/hijackserve"
)

// Config configures a Worker. The zero value works once DROVER_PORT is set.
type Config struct {
	// Addr is the listen address when Run makes the listener; default
	// "Host:$DROVER_PORT".
	Addr string
	// Host is the listen host with $DROVER_PORT when Addr is empty;
	// default 127.0.0.1. In a container, 0.0.0.0: the farm reaches the
	// worker at the container's address.
	Host string
	// ModelDir is the directory of the model the instance was started for;
	// the model command lists it. Empty: no model.
	ModelDir string
	// InstanceID is reported by the pid command; default $DROVER_INSTANCE_ID.
	InstanceID string
	// Logger receives connection and lifecycle logs; nil discards them.
	Logger *slog.Logger
	// Exit ends the process for the crash command; nil means os.Exit. Tests
	// inject their own to observe a crash without dying.
	Exit func(code int)
}

// ErrNoAddr is returned by Run when neither Config.Addr nor DROVER_PORT says
// where to listen.
var ErrNoAddr = errors.New("worker: no listen address: set Config.Addr or DROVER_PORT")

const (
	// maxMessageSize is the read limit per message, the same bound the
	// manager applies to client frames.
	maxMessageSize = 16 << 20
	// bufSize is the initial size of every per-connection buffer: tasks
	// and results are small.
	bufSize = 4096
	// closeGrace bounds a connection's close handshake at shutdown.
	closeGrace = time.Second
)

// Worker serves the native protocol. Create it with New; it is safe for
// concurrent use by any number of connections.
type Worker struct {
	log        *slog.Logger
	exit       func(code int)
	addr       string
	modelDir   string
	instanceID string
	pid        int
	upgrader   websocket.Upgrader

	mu    sync.RWMutex
	state map[string][]byte // raw JSON values; replaced, never mutated
}

// New returns a Worker for cfg, filling defaults from the environment.
func New(cfg Config) *Worker {
	w := &Worker{
		log:        cfg.Logger,
		exit:       cfg.Exit,
		addr:       cfg.Addr,
		modelDir:   cfg.ModelDir,
		instanceID: cfg.InstanceID,
		pid:        os.Getpid(),
		state:      make(map[string][]byte),
		upgrader: websocket.Upgrader{
			// gorilla answers the handshake only (conn.go frames the
			// messages): no buffer sizes, so it reuses net/http's.
			//
			// The worker listens on loopback and its only client is the
			// farm's manager side: there is no browser origin to check.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.exit == nil {
		w.exit = os.Exit
	}
	if w.addr == "" {
		if port := os.Getenv("DROVER_PORT"); port != "" {
			host := cfg.Host
			if host == "" {
				host = "127.0.0.1"
			}
			w.addr = net.JoinHostPort(host, port)
		}
	}
	if w.instanceID == "" {
		w.instanceID = os.Getenv("DROVER_INSTANCE_ID")
	}
	return w
}

// Handler returns the WebSocket endpoint; it answers on any path. A
// connection ends when the peer closes it or when the request's context is
// done: an embedding http.Server propagates its shutdown through BaseContext,
// as Serve does.
func (w *Worker) Handler() http.Handler {
	return http.HandlerFunc(w.serveHTTP)
}

func (w *Worker) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	ws, err := w.upgrader.Upgrade(rw, r, nil)
	if err != nil {
		// Upgrade has already answered with an HTTP error.
		w.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	w.serveConn(r.Context(), ws.NetConn())
}

// Serve accepts connections on ln until ctx is done, then closes ln, sends a
// close frame (1001, going away) to every connection, waits for them to end
// and returns nil. It returns an error only when ln fails first.
func (w *Worker) Serve(ctx context.Context, ln net.Listener) error {
	return hijackserve.Serve(ctx, ln, w.Handler(), w.log, "worker")
}

// Run listens on cfg.Addr (or cfg.Host:$DROVER_PORT) and serves until ctx
// is done.
func Run(ctx context.Context, cfg Config) error {
	w := New(cfg)
	if w.addr == "" {
		return ErrNoAddr
	}
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		return fmt.Errorf("worker: listen: %w", err)
	}
	// Debug: under a farm every line on stderr is logged again by the farm.
	w.log.Debug("worker listening", "addr", ln.Addr().String(), "instance", w.instanceID, "pid", w.pid)
	notifyReady()
	return w.Serve(ctx, ln)
}

// notifyReady tells a farm that the worker listens, if the farm gave it a
// descriptor for that ($DROVER_READY_FD): the farm then takes it as ready
// without probing its port. Best effort: without the byte the farm probes.
func notifyReady() {
	v := os.Getenv("DROVER_READY_FD")
	if v == "" {
		return
	}
	_ = os.Unsetenv("DROVER_READY_FD") // not for the worker's children
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	_, _ = f.Write([]byte{'\n'})
	_ = f.Close()
}
