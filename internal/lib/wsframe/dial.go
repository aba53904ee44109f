package wsframe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrBadHandshake is returned by Dial when the server does not accept the
// WebSocket.
var ErrBadHandshake = errors.New("wsframe: bad handshake")

// ErrBadScheme is returned by Dial for a URL that is not ws:// or wss://,
// before it connects anywhere.
var ErrBadScheme = errors.New("wsframe: not a ws:// or wss:// URL")

// Dial opens a WebSocket to a ws:// or wss:// URL as a client, sending
// header with the handshake, which ctx bounds. It returns the connection
// and rest, what the server sent right behind its handshake response (read
// along with it), which comes before anything read from the connection.
// gorilla keeps those bytes in a buffer out of reach.
func Dial(ctx context.Context, rawURL string, header http.Header) (conn net.Conn, rest []byte, err error) {
	return DialTLS(ctx, rawURL, header, nil)
}

// DialTLS is Dial with the TLS configuration of wss:// URLs (nil: the
// system's roots); its ServerName defaults to the URL's host.
func DialTLS(ctx context.Context, rawURL string, header http.Header, tlsConfig *tls.Config) (conn net.Conn, rest []byte, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	port := "80"
	switch u.Scheme {
	case "ws":
	case "wss":
		port = "443"
	default:
		return nil, nil, fmt.Errorf("%w: %q", ErrBadScheme, rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	var d net.Dialer
	if conn, err = d.DialContext(ctx, "tcp", addr); err != nil {
		return nil, nil, err
	}
	if rest, err = handshake(ctx, &conn, u, header, tlsConfig); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, rest, nil
}

func handshake(ctx context.Context, conn *net.Conn, u *url.URL, header http.Header, tlsConfig *tls.Config) ([]byte, error) {
	// ctx ends the handshake by making the connection's I/O fail.
	c := *conn
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	if u.Scheme == "wss" {
		cfg := &tls.Config{}
		if tlsConfig != nil {
			cfg = tlsConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			stop()
			return nil, err
		}
		*conn = tc
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := &http.Request{Method: http.MethodGet, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, len(header)+4), Host: u.Host}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header["Upgrade"] = []string{"websocket"}
	req.Header["Connection"] = []string{"Upgrade"}
	req.Header["Sec-WebSocket-Key"] = []string{key}
	req.Header["Sec-WebSocket-Version"] = []string{"13"}
	err := req.Write(*conn)
	var br *bufio.Reader
	var resp *http.Response
	if err == nil {
		br = bufio.NewReader(*conn)
		// A 101 response has no body: ReadResponse reads nothing past
		// its header.
		resp, err = http.ReadResponse(br, req)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		!hasToken(resp.Header, "Upgrade", "websocket") ||
		!hasToken(resp.Header, "Connection", "upgrade") ||
		resp.Header.Get("Sec-Websocket-Accept") != acceptKey(key) {
		return nil, fmt.Errorf("%w: %s", ErrBadHandshake, resp.Status)
	}
	rest, _ := br.Peek(br.Buffered())
	return bytes.Clone(rest), c.SetDeadline(time.Time{})
}

// acceptKey is the Sec-WebSocket-Accept answer to key.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// hasToken tells whether a comma-separated header lists token.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
