// Package httpguard hardens drover's HTTP servers against slow and
// oversized clients: the limits every server gets (Timeouts), a guard that
// cuts off request bodies that trickle (GuardBodies) and one that cuts off
// clients that stop taking a response (GuardWrites); its subpackage
// bodylimit is the gin middleware that bounds every request body.
//
// It owns the limits, not the servers: each server that drover runs (the
// manager's public listener, `drover farm`'s API, the local farm's loopback
// server, the worker and viewer) builds its http.Server and applies
// Timeouts to it.
//
// # Why no ReadTimeout or WriteTimeout by default
//
// net/http's ReadTimeout bounds a whole request, body included, and its
// WriteTimeout a whole response: they would cut large uploads and
// downloads, long polls (waitUntilConversionDone) and server-sent events
// (/events). They do not cut WebSockets: net/http clears a connection's
// deadlines when a handler hijacks it (and gorilla's Upgrade clears them
// again), which the tests check through drover's upgrades and relays. So
// both are off unless configured, and narrower limits stand in: ReadHeader
// bounds the headers, GuardBodies requires a body to keep flowing, at least
// BodyMinBytes every Body period, whatever its size, and GuardWrites
// requires the client to take each write of a response within WriteStall,
// however long the response lasts.
package httpguard

import (
	"net/http"
	"time"
)

// Defaults of Timeouts.
const (
	DefaultReadHeader = 10 * time.Second
	DefaultIdle       = 2 * time.Minute
	// DefaultBody and DefaultBodyMinBytes: a body must deliver 16 KiB
	// every 30 s (about 550 bytes a second) until it ends. A body smaller
	// than that must arrive whole within 30 s.
	DefaultBody         = 30 * time.Second
	DefaultBodyMinBytes = 16 << 10
	// DefaultWriteStall: each write of a response must be taken by the
	// client within 30 s.
	DefaultWriteStall = 30 * time.Second
	// DefaultMaxHeaderBytes leaves room for a CS-API-Arg header of 64 KiB
	// (the conversion API's bound) and a token.
	DefaultMaxHeaderBytes = 128 << 10
)

// Timeouts are the limits of an HTTP server. Zero fields take the
// defaults; a negative duration turns that limit off.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers: a client that
	// trickles them (slowloris) is cut off. DefaultReadHeader.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included; off by default
	// (see the package doc): Body guards bodies instead.
	Read time.Duration
	// Write bounds writing a whole response; off by default, since it
	// would end event streams, long polls and large downloads.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request. DefaultIdle.
	Idle time.Duration
	// Body and BodyMinBytes: a request body must deliver BodyMinBytes
	// every Body period until it ends, or its connection is cut off.
	// DefaultBody and DefaultBodyMinBytes.
	Body         time.Duration
	BodyMinBytes int64
	// WriteStall: each write of a response must be taken by the client
	// within it, or the connection is cut off (GuardWrites); off when
	// Write is set. DefaultWriteStall.
	WriteStall time.Duration
	// MaxHeaderBytes bounds a request's headers; DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

// orDefault is d, def when d is zero, or 0 (off) when d is negative.
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return def
	}
	return d
}

// Resolved returns t with its defaults applied and the limits that are
// off as zero.
func (t Timeouts) Resolved() Timeouts {
	t.ReadHeader = orDefault(t.ReadHeader, DefaultReadHeader)
	t.Read = max(t.Read, 0)
	t.Write = max(t.Write, 0)
	t.Idle = orDefault(t.Idle, DefaultIdle)
	t.Body = orDefault(t.Body, DefaultBody)
	t.WriteStall = orDefault(t.WriteStall, DefaultWriteStall)
	if t.Write > 0 {
		t.WriteStall = 0 // the whole response is bounded already
	}
	if t.BodyMinBytes <= 0 {
		t.BodyMinBytes = DefaultBodyMinBytes
	}
	if t.MaxHeaderBytes <= 0 {
		t.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return t
}

// Apply sets srv's timeouts and header bound, and guards the bodies its
// Handler reads (GuardBodies) and the responses it writes (GuardWrites).
// Set srv.Handler first.
func (t Timeouts) Apply(srv *http.Server) {
	t = t.Resolved()
	srv.ReadHeaderTimeout = t.ReadHeader
	srv.ReadTimeout = t.Read
	srv.WriteTimeout = t.Write
	srv.IdleTimeout = t.Idle
	srv.MaxHeaderBytes = t.MaxHeaderBytes
	if srv.Handler == nil {
		return
	}
	if t.Body > 0 {
		srv.Handler = GuardBodies(srv.Handler, t.Body, t.BodyMinBytes)
	}
	if t.WriteStall > 0 {
		srv.Handler = GuardWrites(srv.Handler, t.WriteStall)
	}
}

// Server returns a server of h with t applied.
func (t Timeouts) Server(h http.Handler) *http.Server {
	srv := &http.Server{Handler: h}
	t.Apply(srv)
	return srv
}
