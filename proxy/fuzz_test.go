package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The relay parses outside input in two places of its own: the client's
// upgrade request and the upstream's 101 response are rewritten header by
// header (the parsing itself is net/http's). These targets check that no input
// makes a rewrite produce a message that parses differently than intended or
// smuggles a hop-by-hop header through. The third checks the close frame
// writer against an independent parser.

// FuzzUpgradeRequest feeds arbitrary header blocks to the request rewrite.
func FuzzUpgradeRequest(f *testing.F) {
	f.Add("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n", "10.0.0.1:5000", "/a?b=c")
	f.Add("Connection: keep-alive, X-Secret, Upgrade\r\nX-Secret: 1\r\nX-Forwarded-For: 1.2.3.4\r\n", "[::1]:80", "/")
	f.Add("Host: evil\r\nTransfer-Encoding: chunked\r\nTe: trailers\r\nX-A: a\r\nX-A: b\r\n", "bad", "")
	f.Fuzz(func(t *testing.T, headers, remoteAddr, path string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: front\r\n" + headers + "\r\n")))
		if err != nil {
			return
		}
		req.RemoteAddr = remoteAddr
		u, err := url.Parse("ws://upstream.test:9000" + path)
		if err != nil || u.Host != "upstream.test:9000" {
			return
		}
		extra := extraHeader(http.Header{"Authorization": {"Bearer t"}, "Connection": {"close"}})

		out := buildUpgradeRequest(req, u, extra)
		br := bufio.NewReader(bytes.NewReader(out))
		got, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("rewritten request does not parse: %v\n%q", err, out)
		}
		if br.Buffered() != 0 {
			t.Fatalf("rewritten request has %d bytes after its head\n%q", br.Buffered(), out)
		}
		if got.Host != u.Host || got.RequestURI != u.RequestURI() {
			t.Fatalf("host %q uri %q, want %q %q", got.Host, got.RequestURI, u.Host, u.RequestURI())
		}
		if got.ContentLength != 0 || len(got.TransferEncoding) != 0 {
			t.Fatalf("rewritten request has a body")
		}
		want := map[string][]string{
			"Connection":    {"Upgrade"},
			"Upgrade":       {"websocket"},
			"Authorization": {"Bearer t"},
		}
		for k, v := range want {
			if !slices.Equal(got.Header[k], v) {
				t.Fatalf("%s = %q, want %q", k, got.Header[k], v)
			}
		}
		for _, k := range hopHeaders {
			if k != "Connection" && k != "Upgrade" && len(got.Header[k]) > 0 {
				t.Fatalf("hop-by-hop header %s forwarded", k)
			}
		}
		named := map[string]bool{}
		for _, v := range req.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				named[textproto.CanonicalMIMEHeaderKey(textproto.TrimString(tok))] = true
			}
		}
		for k, v := range req.Header {
			if _, set := want[k]; set || named[k] || k == "X-Forwarded-For" || slices.Contains(hopHeaders, k) {
				continue
			}
			if !slices.Equal(got.Header[k], v) {
				t.Fatalf("end-to-end header %s = %q, want %q", k, got.Header[k], v)
			}
		}
		if ip := clientIP(remoteAddr); ip != "" {
			xff := got.Header["X-Forwarded-For"]
			if len(xff) != 1 || !strings.HasSuffix(xff[0], ip) {
				t.Fatalf("X-Forwarded-For = %q, want it to end with %s", xff, ip)
			}
		}
	})
}

// FuzzSwitchingResponse feeds arbitrary upstream answers to the 101 rewrite.
func FuzzSwitchingResponse(f *testing.F) {
	f.Add("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n\x81\x02hi")
	f.Add("HTTP/1.1 101 OK\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade, Sec-WebSocket-Accept\r\nSec-WebSocket-Accept: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Add("HTTP/1.1 101 \r\nUpgrade: websocket\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\nX: \x00\r\n\r\n")
	f.Fuzz(func(t *testing.T, answer string) {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil)
		if err != nil {
			return
		}
		early := []byte("\x81\x05early")
		out := appendSwitchingResponse(nil, resp.Header)
		out = append(out, early...)
		br := bufio.NewReader(bytes.NewReader(out))
		got, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("rewritten response does not parse: %v\n%q", err, out)
		}
		if got.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", got.StatusCode)
		}
		if !slices.Equal(got.Header["Upgrade"], []string{"websocket"}) || !slices.Equal(got.Header["Connection"], []string{"Upgrade"}) {
			t.Fatalf("Upgrade %q Connection %q", got.Header["Upgrade"], got.Header["Connection"])
		}
		if len(got.Header["Content-Length"]) > 0 || len(got.Header["Transfer-Encoding"]) > 0 {
			t.Fatalf("101 with framing headers: %q", out)
		}
		if !hasToken(resp.Header["Connection"], "Sec-WebSocket-Accept") &&
			!slices.Equal(got.Header["Sec-Websocket-Accept"], resp.Header["Sec-Websocket-Accept"]) {
			t.Fatalf("Sec-WebSocket-Accept %q, want %q", got.Header["Sec-Websocket-Accept"], resp.Header["Sec-Websocket-Accept"])
		}
		// Stream bytes behind the head stay stream bytes.
		rest := make([]byte, br.Buffered())
		_, _ = br.Read(rest)
		if !bytes.Equal(rest, early) {
			t.Fatalf("bytes after the head: %q, want %q", rest, early)
		}
	})
}

// FuzzCloseFrame checks the close frame writer for any code, reason and key.
func FuzzCloseFrame(f *testing.F) {
	f.Add(uint16(1001), "going away", true, uint32(0x01020304))
	f.Add(uint16(1000), strings.Repeat("é", 70), false, uint32(0))
	f.Add(uint16(0), "\xff\xfe", true, uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, code uint16, reason string, masked bool, key uint32) {
		var k [4]byte
		binary.BigEndian.PutUint32(k[:], key)
		b := appendCloseFrame(nil, code, reason, masked, k)
		if len(b) > maxCloseFrame {
			t.Fatalf("frame of %d bytes", len(b))
		}
		fr, err := parseFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("frame does not parse: %v", err)
		}
		if !fr.fin || fr.op != 0x8 || fr.masked != masked {
			t.Fatalf("fin %v op %d masked %v", fr.fin, fr.op, fr.masked)
		}
		if masked && !bytes.Equal(b[2:6], k[:]) {
			t.Fatalf("key %x, want %x", b[2:6], k)
		}
		if got := binary.BigEndian.Uint16(fr.payload); got != code {
			t.Fatalf("code %d, want %d", got, code)
		}
		got := string(fr.payload[2:])
		if !strings.HasPrefix(reason, got) || len(got) > maxCloseReason {
			t.Fatalf("reason %q from %q", got, reason)
		}
		if len(reason) <= maxCloseReason && got != reason {
			t.Fatalf("reason %q cut, want %q", got, reason)
		}
		if utf8.ValidString(reason) && !utf8.ValidString(got) {
			t.Fatalf("reason %q is no longer valid UTF-8", got)
		}
		if utf8.ValidString(reason) && len(reason) > maxCloseReason && len(got) < maxCloseReason-3 {
			t.Fatalf("reason cut to %d bytes, more than a rune short of %d", len(got), maxCloseReason)
		}
	})
}
