// Package proxy relays WebSocket connections to an upstream byte for byte.
//
// It owns the pass-through path of stream sessions: a Relay forwards the
// client's upgrade request to an upstream, hands the upstream's answer back,
// and after a 101 joins the two TCP connections so that the kernel moves the
// bytes (splice on Linux). It tracks the connections it hijacked, so Shutdown
// can say goodbye to both ends with a close frame and wait for them, and it
// enforces idle and lifetime limits.
//
// When the relay ends a connection itself (Shutdown, a limit, a cancelled
// request context) it first stops both copy loops, then writes a close frame
// with code 1001 to each side and closes them. It does not track frame
// boundaries, so such a close frame may follow a partly relayed frame; see
// Relay.Shutdown.
//
// It does not parse, re-frame or inspect WebSocket messages after the
// handshake, and it knows nothing of sessions, farms or instances: the caller
// authorizes the client, picks the upstream URL and passes any credentials
// through Options.Header.
package proxy
