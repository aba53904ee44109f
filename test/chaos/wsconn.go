//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// A tracked session speaks the WebSocket protocol itself (not through
// package client, which passes over frames of other tasks) so that every
// terminal frame of every task reaches the ledger, on whichever connection
// of the session it comes: a second answer to a task is seen.

// frame is a server frame.
type frame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Data     json.RawMessage `json:"data"`
	Session  string          `json:"session"`
	Instance string          `json:"instance"`
	Resume   string          `json:"resume"`
	Event    string          `json:"event"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// conn is one connection of a session; its reader passes every frame to
// frames and tells the ledger of terminal answers.
type conn struct {
	ws     *websocket.Conn
	frames chan frame
	closed chan struct{} // closed when the reader stops
	sid    string        // the session's id, from the welcome (reader's)
}

type tsess struct {
	l        *ledger
	url      string
	id       string
	instance string
	resume   string
	next     int
	c        *conn
}

var (
	// errCut: the connection closed under the task, or the manager stopped
	// answering pings and the client dropped it.
	errCut = errors.New("connection cut")
)

// answerError is an error answer to a task, or a refused open.
type answerError struct{ code, message string }

func (e *answerError) Error() string { return e.code }

// dial opens a connection (a new session, or a resume with token) and
// waits for its welcome.
func dial(ctx context.Context, l *ledger, wsURL, token string) (*tsess, *conn, frame, error) {
	u := wsURL
	if token != "" {
		u += "?resume=" + url.QueryEscape(token)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.DialContext(ctx, u, nil)
	if err != nil {
		return nil, nil, frame{}, fmt.Errorf("%w: %w", errCut, err)
	}
	s := &tsess{l: l, url: wsURL}
	c := &conn{ws: ws, frames: make(chan frame, 256), closed: make(chan struct{})}
	go read(l, c)
	for {
		select {
		case f := <-c.frames:
			switch f.Type {
			case "welcome":
				return s, c, f, nil
			case "error":
				ws.Close()
				ae := &answerError{code: "error"}
				if f.Error != nil {
					ae.code, ae.message = f.Error.Code, f.Error.Message
				}
				return nil, nil, f, ae
			}
		case <-c.closed:
			return nil, nil, frame{}, errCut
		case <-ctx.Done():
			ws.Close()
			return nil, nil, frame{}, fmt.Errorf("%w: no welcome: %w", errCut, ctx.Err())
		}
	}
}

// open opens a new session.
func open(ctx context.Context, l *ledger, wsURL string) (*tsess, error) {
	s, c, f, err := dial(ctx, l, wsURL, "")
	if err != nil {
		return nil, err
	}
	s.c, s.id, s.instance, s.resume = c, f.Session, f.Instance, f.Resume
	return s, nil
}

// reattach resumes s on a new connection; the welcome must name the same
// session. It returns the instance the welcome names.
func (s *tsess) reattach(ctx context.Context) (string, error) {
	_, c, f, err := dial(ctx, s.l, s.url, s.resume)
	if err != nil {
		return "", err
	}
	if f.Session != s.id {
		c.ws.Close()
		return f.Instance, fmt.Errorf("resumed session %s, want %s", f.Session, s.id)
	}
	s.c = c
	if f.Resume != "" {
		s.resume = f.Resume
	}
	return f.Instance, nil
}

// read passes the frames of c on; terminal frames go to the ledger under
// the session's id, which the welcome gives before any task is sent.
func read(l *ledger, c *conn) {
	defer close(c.closed)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var f frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		if f.Type == "welcome" {
			c.sid = f.Session
		}
		if f.Type == "done" || (f.Type == "error" && len(f.ID) > 0 && string(f.ID) != "null") {
			answer := "done"
			if f.Type == "error" && f.Error != nil {
				answer = f.Error.Code
			}
			if n := l.answered(c.sid+"/"+string(f.ID), answer); n > 1 {
				l.note("session %s task %s: answer %d (%s)", c.sid, f.ID, n, answer)
			}
		}
		select {
		case c.frames <- f:
		default: // nobody waits: the ledger has what matters
		}
	}
}

// Execute sends one task and waits for its answer: the results' data and
// nil, an *answerError, or errCut. A manager that sends nothing for stall
// is pinged; one that does not pong within 2 s is taken for gone and the
// connection dropped (errCut). An answer that never comes while pongs do
// is a loss, reported after limit.
func (s *tsess) Execute(ctx context.Context, what string, data string, stall, limit time.Duration) ([]json.RawMessage, error) {
	s.next++
	id := strconv.Itoa(s.next)
	key := s.id + "/" + id
	r := s.l.sent(key, what)
	msg := `{"type":"task","id":` + id + `,"data":` + data + `}`
	if err := s.c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		s.l.cutTask(r)
		s.drop()
		return nil, errCut
	}
	var results []json.RawMessage
	began := time.Now()
	pinged := time.Time{}
	timer := time.NewTimer(stall)
	defer timer.Stop()
	for {
		select {
		case f := <-s.c.frames:
			switch {
			case f.Type == "pong":
				pinged = time.Time{}
				timer.Reset(stall)
			case string(f.ID) != id:
			case f.Type == "result":
				results = append(results, f.Data)
			case f.Type == "done":
				return results, nil
			case f.Type == "error":
				ae := &answerError{code: "error"}
				if f.Error != nil {
					ae.code, ae.message = f.Error.Code, f.Error.Message
				}
				s.l.answer(ae.code, ae.message)
				return results, ae
			}
		case <-s.c.closed:
			s.l.cutTask(r)
			return nil, errCut
		case <-timer.C:
			if !pinged.IsZero() {
				// No pong: the manager is gone or frozen, as a client
				// sees it.
				s.l.cutTask(r)
				s.drop()
				return nil, errCut
			}
			if time.Since(began) > limit {
				s.l.note("session %s task %s (%s): no answer after %v while the manager answers pings", s.id, id, what, limit)
				s.drop()
				return nil, errCut
			}
			pinged = time.Now()
			_ = s.c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`))
			timer.Reset(2 * time.Second)
		case <-ctx.Done():
			s.l.cutTask(r)
			s.drop()
			return nil, errCut
		}
	}
}

// drop closes the connection without a close frame.
func (s *tsess) drop() {
	_ = s.c.ws.NetConn().Close()
	<-s.c.closed
}

// logout ends the session.
func (s *tsess) logout() {
	_ = s.c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"logout"}`))
	_ = s.c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-s.c.closed
	_ = s.c.ws.Close()
}
