package httpguard

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// GuardBodies cuts off request bodies that trickle: a body must deliver at
// least minBytes every period until it ends, or its reads fail with a
// timeout and the connection is closed once the handler returns. A body
// of any size passes at that rate, where net/http's ReadTimeout would cut
// a large upload; a client that sends a byte now and then does not hold a
// connection and a handler for long.
//
// It works with the connection's read deadline (http.ResponseController):
// set to period when the request comes, moved again at the first read and
// then each time minBytes more have arrived, and left alone once the body
// has ended (net/http then reads the connection itself and clears it).
// Requests without a body are passed on untouched, so WebSocket upgrades
// and event streams never see a deadline from here.
func GuardBodies(h http.Handler, period time.Duration, minBytes int64) http.Handler {
	if period <= 0 {
		return h
	}
	minBytes = max(minBytes, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// A deadline from the start bounds what net/http reads of a body
		// the handler leaves unread, as it tries to keep the connection.
		if err := rc.SetReadDeadline(time.Now().Add(period)); err != nil {
			h.ServeHTTP(w, r) // a writer without deadlines: nothing to guard with
			return
		}
		b := &trickleBody{src: r.Body, rc: rc, period: period, min: minBytes}
		r.Body = b
		h.ServeHTTP(w, r)
		b.finish()
	})
}

// trickleBody is a request body whose reads move the connection's read
// deadline while enough data flows.
type trickleBody struct {
	src    io.ReadCloser
	rc     *http.ResponseController
	period time.Duration
	min    int64

	// Read's, from one goroutine at a time.
	started bool
	since   int64 // bytes since the deadline was last moved

	ended    atomic.Bool // the body hit EOF: the deadline is net/http's again
	timedOut atomic.Bool
}

func (b *trickleBody) Read(p []byte) (int, error) {
	if b.ended.Load() {
		return 0, io.EOF
	}
	// The deadline moves only before a read: after one that ended the
	// body, net/http may have started reading the connection itself.
	if !b.started || b.since >= b.min {
		b.started, b.since = true, 0
		_ = b.rc.SetReadDeadline(time.Now().Add(b.period))
	}
	n, err := b.src.Read(p)
	b.since += int64(n)
	switch {
	case err == io.EOF:
		b.ended.Store(true)
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
		err = ErrBodyTooSlow
	}
	return n, err
}

func (b *trickleBody) Close() error { return b.src.Close() }

// finish runs after the handler. A body left unread keeps a deadline for
// what net/http reads of it; a body cut off for its pace closes the
// connection, which net/http might otherwise keep for a next request.
func (b *trickleBody) finish() {
	switch {
	case b.timedOut.Load():
		if conn, _, err := b.rc.Hijack(); err == nil {
			_ = conn.Close()
		}
	case !b.ended.Load():
		_ = b.rc.SetReadDeadline(time.Now().Add(b.period))
	}
}

// ErrBodyTooSlow is the error of a body read that GuardBodies cut off.
var ErrBodyTooSlow = errBodyTooSlow{}

type errBodyTooSlow struct{}

func (errBodyTooSlow) Error() string   { return "httpguard: the request body arrived too slowly" }
func (errBodyTooSlow) Timeout() bool   { return true }
func (errBodyTooSlow) Temporary() bool { return false }
func (errBodyTooSlow) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}
