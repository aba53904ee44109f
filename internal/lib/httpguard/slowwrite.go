package httpguard

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// GuardWrites cuts off clients that stop reading a response (the other
// side of slowloris: ask for a large download, then read nothing): every
// write and flush of a handler must be taken by the client within period,
// or it fails and the connection is closed. A response of any length, an
// event stream with long gaps and a long poll all pass, where net/http's
// WriteTimeout would cut them; only a write that stalls is cut.
//
// The connection's write deadline is moved before each write, cleared when
// the request comes (a kept-alive connection must not carry the last
// response's deadline into the next request's "100 Continue"), and set
// once more when the handler returns, for what net/http still writes. Use
// it only on a server without a WriteTimeout, whose deadline it would
// replace.
func GuardWrites(h http.Handler, period time.Duration) http.Handler {
	if period <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Time{}); err != nil {
			h.ServeHTTP(w, r) // a writer without deadlines: nothing to guard with
			return
		}
		gw := &stallWriter{ResponseWriter: w, rc: rc, period: period}
		h.ServeHTTP(gw, r)
		if !gw.hijacked {
			// What net/http still writes (the end of a chunked body) is
			// bounded as the handler's writes were.
			_ = rc.SetWriteDeadline(time.Now().Add(period))
		}
	})
}

// stallWriter moves the connection's write deadline before each write.
type stallWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	period   time.Duration
	hijacked bool
}

func (w *stallWriter) arm() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.period)) }

func (w *stallWriter) Write(p []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(p)
}

func (w *stallWriter) WriteHeader(code int) {
	// A 1xx is written at once; a final status waits for the body.
	w.arm()
	w.ResponseWriter.WriteHeader(code)
}

func (w *stallWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
}

// FlushError is what http.ResponseController calls.
func (w *stallWriter) FlushError() error {
	w.arm()
	return w.rc.Flush()
}

// Hijack hands the connection over; net/http clears its deadlines, and
// nothing here sets one again.
func (w *stallWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := w.rc.Hijack()
	w.hijacked = w.hijacked || err == nil
	return conn, brw, err
}

// CloseNotify serves the handlers that still ask (gin's writer passes the
// call on); a writer without it never notifies.
func (w *stallWriter) CloseNotify() <-chan bool {
	//nolint:staticcheck // passing on a deprecated interface that callers may use
	if cn, ok := w.ResponseWriter.(http.CloseNotifier); ok {
		return cn.CloseNotify()
	}
	return make(chan bool)
}

// Unwrap lets http.ResponseController reach the connection's own
// methods (read deadlines, EnableFullDuplex).
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
