package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// hopHeaders belong to one transport connection (RFC 9110 §7.6.1), not to the
// message, so the relay never forwards them as they came. Upgrade and
// Connection are written anew for the WebSocket handshake.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// checkUpgrade reports whether req asks for a WebSocket upgrade the relay can
// pass on: a body-less HTTP/1.1 GET with Connection: upgrade and Upgrade:
// websocket. The upstream checks the Sec-WebSocket-* headers.
func checkUpgrade(req *http.Request) error {
	switch {
	case req.Method != http.MethodGet:
		return fmt.Errorf("%w: method %s", ErrNotWebSocket, req.Method)
	case !req.ProtoAtLeast(1, 1):
		return fmt.Errorf("%w: %s", ErrNotWebSocket, req.Proto)
	case !hasToken(req.Header["Connection"], "upgrade"), !hasToken(req.Header["Upgrade"], "websocket"):
		return fmt.Errorf("%w: no Connection: upgrade and Upgrade: websocket", ErrNotWebSocket)
	case req.ContentLength != 0:
		// A body would reach the upstream as stream bytes.
		return fmt.Errorf("%w: request has a body", ErrNotWebSocket)
	}
	return nil
}

// hasToken reports whether the comma-separated header values contain token,
// compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// removeHopHeaders deletes from h the hop-by-hop headers and those its
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if t = textproto.TrimString(t); t != "" {
				h.Del(t)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// copyEndToEnd adds the end-to-end headers of src to dst, leaving out
// Content-Length, which the writer of dst sets.
func copyEndToEnd(dst, src http.Header) {
	h := src.Clone()
	removeHopHeaders(h)
	delete(h, "Content-Length")
	for k, vv := range h {
		dst[k] = append(dst[k], vv...)
	}
}

// extraHeader returns a canonical copy of Options.Header without the headers
// the relay writes itself.
func extraHeader(src http.Header) http.Header {
	if len(src) == 0 {
		return nil
	}
	h := make(http.Header, len(src))
	for k, vv := range src {
		h[textproto.CanonicalMIMEHeaderKey(k)] = append([]string(nil), vv...)
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	delete(h, "Host")
	return h
}

// buildUpgradeRequest writes the request the relay sends upstream: req's
// end-to-end headers, then extra, X-Forwarded-For with req's client address
// appended, and a fresh Connection/Upgrade pair; Host, path and query are u's.
// http.Header.Write drops invalid names and turns CR and LF in values into
// spaces, so no header can split the request.
func buildUpgradeRequest(req *http.Request, u *url.URL, extra http.Header) []byte {
	h := make(http.Header, len(req.Header)+len(extra)+1)
	for k, vv := range req.Header {
		h[k] = vv // never modified in place: only replaced or deleted
	}
	removeHopHeaders(h)
	delete(h, "Host")
	for k, vv := range extra {
		h[k] = vv
	}
	if ip := clientIP(req.RemoteAddr); ip != "" {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h["X-Forwarded-For"] = []string{ip}
	}
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{"websocket"}

	var b bytes.Buffer
	b.Grow(1024)
	b.WriteString("GET ")
	b.WriteString(u.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(u.Host)
	b.WriteString("\r\n")
	_ = h.Write(&b) // a bytes.Buffer does not fail
	b.WriteString("\r\n")
	return b.Bytes()
}

// appendSwitchingResponse appends to dst the 101 response the client gets:
// the upstream's end-to-end headers (Sec-WebSocket-Accept, -Protocol,
// -Extensions, cookies …) with a fresh Connection/Upgrade pair.
func appendSwitchingResponse(dst []byte, upstream http.Header) []byte {
	h := make(http.Header, len(upstream))
	copyEndToEnd(h, upstream)
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{"websocket"}
	b := bytes.NewBuffer(dst)
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// clientIP returns the IP of a "host:port" remote address, or "" if it has
// none.
func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil || net.ParseIP(host) == nil {
		return ""
	}
	return host
}
