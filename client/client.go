// Package client is a Go client for drover's client protocol v1: it opens a
// session on a manager over WebSocket, runs tasks and collects their
// results, and resumes a dropped session. Programs and the drover command
// line use it; it holds no server logic.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/session"
)

// Options are the connect options of a session.
type Options struct {
	// Pool is the pool to run in; "" for the manager's default.
	Pool string
	// NoWait fails at once with code no_capacity instead of queueing.
	NoWait bool
	// Resume is the token of a dropped session to continue.
	Resume string
	// Query adds connect options of the application's own (labels, user).
	Query url.Values
	// Header is sent with the upgrade request (for example Authorization).
	Header http.Header
	// OnQueued is told each queue position while the session waits.
	OnQueued func(position int)
	// OnEvent receives session events (instance_lost, draining, ...).
	OnEvent func(name string, raw json.RawMessage)
	Dialer  *websocket.Dialer
}

// Error is an error frame's error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrClosed is returned by a session whose connection has ended.
var ErrClosed = errors.New("session connection closed")

// Result is one result: JSON data or a binary frame.
type Result struct {
	Data   json.RawMessage
	Binary []byte
}

// Session is an open session. Its methods are safe for concurrent use;
// tasks run one at a time.
type Session struct {
	ID       string
	Instance string
	Resume   string

	ws      *websocket.Conn
	opts    Options
	mu      sync.Mutex
	nextID  uint64
	closeMu sync.Mutex
	closed  bool
}

// Dial opens a session at url (ws://host:port/ws) and waits for its welcome.
func Dial(ctx context.Context, rawURL string, opts Options) (*Session, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad url: %w", err)
	}
	q := u.Query()
	for k, vs := range opts.Query {
		q[k] = append(q[k], vs...)
	}
	if opts.Pool != "" {
		q.Set("pool", opts.Pool)
	}
	if opts.NoWait {
		q.Set("wait", "false")
	}
	if opts.Resume != "" {
		q.Set("resume", opts.Resume)
	}
	u.RawQuery = q.Encode()
	d := opts.Dialer
	if d == nil {
		d = websocket.DefaultDialer
	}
	ws, resp, err := d.DialContext(ctx, u.String(), opts.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", u.Redacted(), err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	s := &Session{ws: ws, opts: opts}
	stop := context.AfterFunc(ctx, func() { _ = ws.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		f, raw, err := s.read()
		if err != nil {
			_ = ws.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		switch f.Type {
		case "welcome":
			s.ID, s.Instance, s.Resume = f.Session, f.Instance, f.Resume
			return s, nil
		case "queued":
			if opts.OnQueued != nil {
				opts.OnQueued(f.Position)
			}
		case "error":
			_ = ws.Close()
			return nil, f.Error
		case "event":
			s.event(f.Event, raw)
		}
	}
}

type frame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Data     json.RawMessage `json:"data"`
	Session  string          `json:"session"`
	Instance string          `json:"instance"`
	Resume   string          `json:"resume"`
	Position int             `json:"position"`
	Event    string          `json:"event"`
	Error    *Error          `json:"error"`
	binary   []byte
}

func (s *Session) read() (frame, []byte, error) {
	mt, b, err := s.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return frame{}, nil, fmt.Errorf("%w: %d %s", ErrClosed, ce.Code, ce.Text)
		}
		return frame{}, nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	if mt == websocket.BinaryMessage {
		return frame{Type: "binary", binary: b}, nil, nil
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, nil, fmt.Errorf("bad frame from the manager: %w", err)
	}
	if f.Type == "error" && f.Error == nil {
		f.Error = &Error{Code: session.CodeInternal, Message: "error frame without error"}
	}
	return f, b, nil
}

func (s *Session) event(name string, raw []byte) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(name, raw)
	}
}

// Execute runs one task and returns its results. data must be JSON.
func (s *Session) Execute(ctx context.Context, data json.RawMessage) ([]Result, error) {
	if !json.Valid(data) {
		return nil, errors.New("task data is not valid JSON")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	id := strconv.FormatUint(s.nextID, 10)
	msg := session.AppendTask(nil, []byte(id), data)
	if err := s.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.ws.SetReadDeadline(time.Now()) })
	defer stop()
	var results []Result
	for {
		f, raw, err := s.read()
		if err != nil {
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
			return results, err
		}
		switch f.Type {
		case "binary":
			results = append(results, Result{Binary: f.binary})
		case "result":
			if string(f.ID) == id {
				results = append(results, Result{Data: f.Data})
			}
		case "done":
			if string(f.ID) == id {
				return results, nil
			}
		case "error":
			if string(f.ID) == id || len(f.ID) == 0 || string(f.ID) == "null" {
				return results, f.Error
			}
		case "event":
			s.event(f.Event, raw)
		}
	}
}

// Logout ends the session and releases its instance.
func (s *Session) Logout() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"logout"}`))
	_ = s.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for err == nil {
		if _, _, rerr := s.ws.ReadMessage(); rerr != nil {
			break
		}
	}
	return errors.Join(err, s.ws.Close())
}

// Drop closes the connection without a close frame, as a network failure
// would: the session stays resumable with s.Resume for the grace window.
func (s *Session) Drop() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.closed = true
	return s.ws.NetConn().Close()
}
