// Package bodylimit is gin middleware that bounds every request body
// (Limit), with a bound of its own per route (Max, SetLimit) and a 413 in
// the API's own words (OnTooLarge). It lives apart from httpguard so that
// programs without a gin router (the reference worker) do not link gin.
package bodylimit

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/gin-gonic/gin"
)

// DefaultBodyLimit is what Limit's middleware allows a body on routes that
// do not say otherwise: a JSON request, not an upload.
const DefaultBodyLimit = 64 << 10

// TooLargeFunc answers a request whose body passed its limit: a 413 in
// the API's own error format.
type TooLargeFunc func(c *gin.Context, limit int64)

// Context keys of the middleware.
const (
	bodyKey  = "bodylimit.body"
	replyKey = "bodylimit.tooLarge"
)

// Limit is gin middleware that bounds every request body to def bytes
// (DefaultBodyLimit when 0), unless the route sets its own bound with
// SetLimit or Max before reading. A body over its bound fails the read
// that passes it with *http.MaxBytesError; a declared Content-Length over
// it fails the first read, before anything is read. Either way the
// response is a 413 from tooLarge (or the route's, OnTooLarge) with
// "Connection: close", whatever the handler writes after the failed read.
// A handler that wrote its status before then keeps it.
//
// Requests without a body pass untouched.
func Limit(def int64, tooLarge TooLargeFunc) gin.HandlerFunc {
	if def <= 0 {
		def = DefaultBodyLimit
	}
	return func(c *gin.Context) {
		r := c.Request
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			c.Next()
			return
		}
		gw := &guardWriter{ResponseWriter: c.Writer, c: c, reply: tooLarge}
		b := &limitedBody{src: r.Body, limit: def, declared: r.ContentLength, w: gw}
		r.Body = b
		c.Writer = gw
		c.Set(bodyKey, b)
		c.Next()
		// The handler wrote nothing after the failed read: gin would
		// answer 200 on its own.
		if gw.tripped.Load() && !gw.ResponseWriter.Written() {
			gw.intercept()
		}
	}
}

// SetLimit bounds c's request body to n bytes instead of Limit's default.
// Call it before the body is read. Without Limit's middleware it wraps the
// body in http.MaxBytesReader.
func SetLimit(c *gin.Context, n int64) {
	if v, ok := c.Get(bodyKey); ok {
		v.(*limitedBody).limit = n
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, n)
}

// Max is route middleware: SetLimit(c, n).
func Max(n int64) gin.HandlerFunc {
	return func(c *gin.Context) { SetLimit(c, n); c.Next() }
}

// OnTooLarge is middleware for a group whose errors have a format of
// their own: its routes answer an oversized body with f.
func OnTooLarge(f TooLargeFunc) gin.HandlerFunc {
	return func(c *gin.Context) { c.Set(replyKey, f); c.Next() }
}

// TooLarge reports whether err is a body read that passed its bound.
func TooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// limitedBody is a body with a bound that the route may change before it
// is read.
type limitedBody struct {
	src      io.ReadCloser
	limit    int64
	declared int64 // Content-Length, or -1
	n        int64
	started  bool
	err      error
	w        *guardWriter
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if !b.started {
		b.started = true
		if b.declared > b.limit {
			return 0, b.trip()
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	// One byte past the bound tells a body that ends there from a longer
	// one.
	if left := b.limit - b.n; int64(len(p)) > left+1 {
		p = p[:left+1]
	}
	n, err := b.src.Read(p)
	if int64(n) <= b.limit-b.n {
		b.n += int64(n)
		return n, err
	}
	n = int(b.limit - b.n)
	b.n = b.limit
	return n, b.trip()
}

func (b *limitedBody) trip() error {
	b.err = &http.MaxBytesError{Limit: b.limit}
	b.w.limit.Store(b.limit)
	b.w.tripped.Store(true)
	return b.err
}

func (b *limitedBody) Close() error { return b.src.Close() }

// guardWriter replaces the handler's response with the 413 once the body
// passed its bound: the first write after that writes the 413 instead,
// and the handler's own writes are dropped.
type guardWriter struct {
	gin.ResponseWriter
	c     *gin.Context
	reply TooLargeFunc

	// Set by the body's reader, which may run on another goroutine.
	tripped atomic.Bool
	limit   atomic.Int64

	// The writing goroutine's.
	replied  bool
	replying bool
	passed   bool // the handler's status went out before the body tripped
}

// intercept reports whether a write of the handler's is dropped, and
// writes the 413 at the first.
func (w *guardWriter) intercept() bool {
	if w.replying || w.passed {
		return false
	}
	if !w.tripped.Load() {
		w.passed = w.ResponseWriter.Written()
		return false
	}
	if w.replied {
		return true
	}
	if w.ResponseWriter.Written() {
		w.passed = true
		return false
	}
	w.replied, w.replying = true, true
	defer func() { w.replying = false }()
	h := w.Header()
	for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Disposition", "Content-Range", "Etag", "Last-Modified"} {
		h.Del(k)
	}
	h.Set("Connection", "close")
	reply := w.reply
	if v, ok := w.c.Get(replyKey); ok {
		reply = v.(TooLargeFunc)
	}
	limit := w.limit.Load()
	if reply == nil {
		w.c.String(http.StatusRequestEntityTooLarge, "the request body is too large\n")
	} else {
		reply(w.c, limit)
	}
	w.c.Abort()
	return true
}

func (w *guardWriter) WriteHeader(code int) {
	if w.intercept() {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *guardWriter) WriteHeaderNow() {
	if w.intercept() {
		return
	}
	w.ResponseWriter.WriteHeaderNow()
}

func (w *guardWriter) Write(p []byte) (int, error) {
	if w.intercept() {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *guardWriter) WriteString(s string) (int, error) {
	if w.intercept() {
		return len(s), nil
	}
	return w.ResponseWriter.WriteString(s)
}

// Flush sends the 413 first when the body tripped: a flush would
// otherwise send the handler's status.
func (w *guardWriter) Flush() {
	w.intercept()
	w.ResponseWriter.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *guardWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
