// Package viewer is drover's reference stream instance: a stand-in for the
// HOOPS SC server that streaming sessions (GET /api/streamingSession) run
// when no HOOPS binaries are at hand. It serves the converted models in one
// directory over a WebSocket, so that a viewer (a browser page, a test)
// can list them and fetch one as a GLB.
//
// The protocol (text frames are JSON):
//
//	→ {"type":"list"}
//	← {"type":"list","models":["cube","gear"]}
//	→ {"type":"get","name":"cube"}      (or "cube.glb")
//	← {"type":"model","name":"cube","size":1234}
//	← binary frames of at most 1 MiB, size bytes in all
//	← {"type":"end","name":"cube"}
//	← {"type":"error","error":"…"}      for a request it cannot serve
//
// Models are the regular files ending in .glb directly in the directory;
// a name never reaches outside it (no separators, no "..", and os.Root
// refuses symbolic links that leave it). Requests on one connection are
// served in order.
//
// The package owns the protocol and its server. Which directory it serves
// and who may connect are the farm's and the manager's: a farm starts it
// with the session's model directory and its port, and the manager relays
// only viewers that hold the session's token.
package viewer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/hijackserve"
)

// Frame types.
const (
	TypeList  = "list"
	TypeGet   = "get"
	TypeModel = "model"
	TypeEnd   = "end"
	TypeError = "error"
)

const (
	// ChunkSize is the largest binary frame of a model.
	ChunkSize = 1 << 20
	// MaxRequest bounds a request frame.
	MaxRequest = 4 << 10
	// maxName bounds a model name.
	maxName = 255
	// Ext is the extension of the files the viewer serves as models.
	Ext = ".glb"
	// writeTimeout bounds one frame's write: a viewer that stops reading
	// does not hold the instance for ever.
	writeTimeout = 30 * time.Second
)

// Errors of ParseRequest and of name checks.
var (
	ErrBadRequest = errors.New("viewer: bad request")
	ErrBadName    = errors.New("viewer: bad model name")
	ErrNoModel    = errors.New("viewer: no such model")
)

// Request is one request frame.
type Request struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
}

// Reply is a text frame the viewer sends.
type Reply struct {
	Type   string   `json:"type"`
	Name   string   `json:"name,omitempty"`
	Size   int64    `json:"size,omitempty"`
	Models []string `json:"models,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// ParseRequest reads a request frame: a JSON object with a known type,
// and for get a name that CheckName accepts. Unknown keys are ignored.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, fmt.Errorf("%w: longer than %d bytes", ErrBadRequest, MaxRequest)
	}
	if !utf8.Valid(data) {
		return r, fmt.Errorf("%w: not UTF-8", ErrBadRequest)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return Request{}, fmt.Errorf("%w: not a JSON object", ErrBadRequest)
	}
	str := func(key string) (string, error) {
		v, ok := raw[key]
		if !ok {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("%w: %s is not a string", ErrBadRequest, key)
		}
		return s, nil
	}
	var err error
	if r.Type, err = str("type"); err != nil {
		return Request{}, err
	}
	switch r.Type {
	case TypeList:
	case TypeGet:
		if r.Name, err = str("name"); err != nil {
			return Request{}, err
		}
		if err := CheckName(r.Name); err != nil {
			return Request{}, err
		}
	case "":
		return Request{}, fmt.Errorf("%w: no type", ErrBadRequest)
	default:
		return Request{}, fmt.Errorf("%w: unknown type %q", ErrBadRequest, r.Type)
	}
	return r, nil
}

// CheckName accepts a model name that stays in its directory: one path
// element, not "." or "..", not hidden, without separators or control
// characters, at most 255 bytes.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > maxName:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadName, maxName)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: %q starts with a dot", ErrBadName, name)
	case strings.ContainsFunc(name, func(r rune) bool {
		return r == '/' || r == '\\' || r == utf8.RuneError || unicode.IsControl(r)
	}):
		return fmt.Errorf("%w: %q has a separator or a control character", ErrBadName, name)
	}
	return nil
}

// fileName is the file a model name stands for: the name as it is when it
// ends in .glb, else the name with .glb added.
func fileName(name string) string {
	if strings.HasSuffix(strings.ToLower(name), Ext) {
		return name
	}
	return name + Ext
}

// Config configures a Viewer.
type Config struct {
	// Dir is the directory of models. Required.
	Dir string
	// Logger receives the viewer's log; nil discards.
	Logger *slog.Logger
}

// Viewer serves the models of one directory. Safe for concurrent use.
type Viewer struct {
	dir      string
	log      *slog.Logger
	upgrader websocket.Upgrader
}

// New returns a Viewer of cfg.Dir.
func New(cfg Config) (*Viewer, error) {
	if cfg.Dir == "" {
		return nil, errors.New("viewer: no model directory")
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("viewer: model directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("viewer: model directory %s is no directory", cfg.Dir)
	}
	v := &Viewer{dir: cfg.Dir, log: cfg.Logger, upgrader: websocket.Upgrader{
		ReadBufferSize: 4096, WriteBufferSize: 64 << 10,
		// Viewers come through the manager's relay, which admitted them by
		// their session's token; a browser's origin is the manager's.
		CheckOrigin: func(*http.Request) bool { return true },
	}}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	return v, nil
}

// List returns the model names in the directory, sorted.
func (v *Viewer) List() ([]string, error) {
	entries, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("viewer: list models: %w", err)
	}
	names := []string{}
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || CheckName(n) != nil || !strings.HasSuffix(strings.ToLower(n), Ext) {
			continue
		}
		names = append(names, n[:len(n)-len(Ext)])
	}
	slices.Sort(names)
	return names, nil
}

// Open opens the model of name (checked with CheckName); its size comes
// with it. ErrNoModel: there is none.
func (v *Viewer) Open(name string) (*os.File, int64, error) {
	if err := CheckName(name); err != nil {
		return nil, 0, err
	}
	root, err := os.OpenRoot(v.dir)
	if err != nil {
		return nil, 0, fmt.Errorf("viewer: model directory: %w", err)
	}
	defer root.Close()
	f, err := root.Open(fileName(name))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %q", ErrNoModel, name)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, 0, fmt.Errorf("%w: %q", ErrNoModel, name)
	}
	return f, fi.Size(), nil
}

// Handler is the viewer's WebSocket endpoint, on any path.
func (v *Viewer) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := v.upgrader.Upgrade(w, r, nil)
		if err != nil {
			v.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
			return
		}
		v.serveConn(r.Context(), ws)
	})
}

// serveConn serves one viewer until it leaves or ctx ends.
func (v *Viewer) serveConn(ctx context.Context, ws *websocket.Conn) {
	ws.SetReadLimit(MaxRequest)
	stop := context.AfterFunc(ctx, func() {
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "viewer shutting down"), time.Now().Add(time.Second))
		_ = ws.Close()
	})
	defer stop()
	defer ws.Close()
	buf := make([]byte, ChunkSize)
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				v.log.Debug("viewer connection ended", "err", err)
			}
			return
		}
		if typ != websocket.TextMessage {
			err = fmt.Errorf("%w: requests are JSON text frames", ErrBadRequest)
		}
		var req Request
		if err == nil {
			req, err = ParseRequest(data)
		}
		if err == nil {
			err = v.serve(ws, req, buf)
		}
		if err != nil {
			var we writeError
			if errors.As(err, &we) {
				return // the viewer is gone
			}
			if werr := v.reply(ws, Reply{Type: TypeError, Error: publicError(err)}); werr != nil {
				return
			}
		}
	}
}

// writeError marks a failed write: the connection is over.
type writeError struct{ error }

func (v *Viewer) reply(ws *websocket.Conn, r Reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return writeError{err}
	}
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return writeError{err}
	}
	return nil
}

func (v *Viewer) serve(ws *websocket.Conn, req Request, buf []byte) error {
	switch req.Type {
	case TypeList:
		names, err := v.List()
		if err != nil {
			v.log.Warn("list models", "err", err)
			return err
		}
		return v.reply(ws, Reply{Type: TypeList, Models: names})
	case TypeGet:
		f, size, err := v.Open(req.Name)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := v.reply(ws, Reply{Type: TypeModel, Name: req.Name, Size: size}); err != nil {
			return err
		}
		// Exactly size bytes go out: the header promised them.
		r := io.LimitReader(f, size)
		for sent := int64(0); sent < size; {
			n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-sent)])
			if err != nil {
				// The file shrank under us: the viewer cannot use a short
				// model, and the header is out.
				v.log.Warn("model read failed", "name", req.Name, "err", err)
				return writeError{err}
			}
			_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
				return writeError{err}
			}
			sent += int64(n)
		}
		return v.reply(ws, Reply{Type: TypeEnd, Name: req.Name})
	}
	return fmt.Errorf("%w: unknown type %q", ErrBadRequest, req.Type)
}

// publicError is what a viewer reads for err: the request's fault in
// plain words, never the server's paths.
func publicError(err error) string {
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadName), errors.Is(err, ErrNoModel):
		return strings.TrimPrefix(err.Error(), "viewer: ")
	}
	return "internal error"
}

// Serve serves viewers on ln until ctx is done, then closes ln and every
// connection (1001) and waits for them.
func (v *Viewer) Serve(ctx context.Context, ln net.Listener) error {
	return hijackserve.Serve(ctx, ln, v.Handler(), v.log, "viewer")
}

// Run listens on addr and serves the models of cfg.Dir until ctx is done.
// An empty addr means 127.0.0.1:$DROVER_PORT, as a farm starts it.
func Run(ctx context.Context, addr string, cfg Config) error {
	v, err := New(cfg)
	if err != nil {
		return err
	}
	if addr == "" {
		port := os.Getenv("DROVER_PORT")
		if port == "" {
			return errors.New("viewer: no listen address: give one or set DROVER_PORT")
		}
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("viewer: listen: %w", err)
	}
	v.log.Debug("viewer listening", "addr", ln.Addr().String(), "models", cfg.Dir)
	return v.Serve(ctx, ln)
}
