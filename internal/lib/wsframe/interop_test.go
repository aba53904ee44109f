package wsframe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// TestServerSideWithGorillaClient serves a gorilla client with a Reader
// and a Writer: fragmented and unfragmented messages and pings go in,
// echoes and pongs come out, and the close handshake completes.
func TestServerSideWithGorillaClient(t *testing.T) {
	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			done <- err
			return
		}
		nc := ws.NetConn()
		defer nc.Close()
		var w Writer
		w.Reset(nc, 5*time.Second)
		rd := Reader{R: bufio.NewReaderSize(nc, 256), FromClient: true, Limit: 1 << 20,
			Ping: func(p []byte) { _ = w.Pong(p) }}
		var buf []byte
		for {
			op, msg, err := rd.Next(buf[:0])
			buf = msg
			var ce *CloseError
			if errors.As(err, &ce) {
				done <- w.Close(ce.Code, "", time.Second)
				return
			}
			if err != nil {
				done <- err
				return
			}
			if op == OpText {
				err = w.Text(true, func(b []byte) []byte { return append(b, msg...) })
			} else {
				err = w.Binary(true, msg)
			}
			if err != nil {
				done <- err
				return
			}
		}
	}))
	defer srv.Close()

	// A small write buffer makes gorilla fragment the large messages.
	d := websocket.Dialer{WriteBufferSize: 1024}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(10*time.Second)))
	pongs := make(chan string, 1)
	ws.SetPongHandler(func(s string) error { pongs <- s; return nil })

	for _, n := range []int{0, 5, 125, 126, 5000, 70_000, 300_000} {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			p := bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n]
			require.NoError(t, ws.WriteMessage(mt, p))
			got, msg, err := ws.ReadMessage()
			require.NoError(t, err)
			require.Equal(t, mt, got)
			require.Equal(t, p, msg, "n=%d", n)
		}
	}
	require.NoError(t, ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)))
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("after ping")))
	_, msg, err := ws.ReadMessage() // the pong handler runs while reading
	require.NoError(t, err)
	require.Equal(t, "after ping", string(msg))
	require.Equal(t, "hi", <-pongs)

	require.NoError(t, ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second)))
	_, _, err = ws.ReadMessage()
	require.True(t, websocket.IsCloseError(err, 4001), "the close code is echoed: %v", err)
	require.NoError(t, <-done)
}

// TestDialKeepsWhatFollowsTheHandshake dials a gorilla server that sends a
// message right behind its handshake response: the reader Dial returns has
// it.
func TestDialKeepsWhatFollowsTheHandshake(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Token") != "secret" {
			http.Error(rw, "no", http.StatusForbidden)
			return
		}
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		_, msg, err := ws.ReadMessage()
		if err == nil {
			_ = ws.WriteMessage(websocket.BinaryMessage, msg)
		}
		_, _, _ = ws.ReadMessage()
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/any"

	_, _, err := Dial(context.Background(), url, nil)
	require.ErrorIs(t, err, ErrBadHandshake)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, rest, err := Dial(ctx, url, http.Header{"X-Token": {"secret"}})
	require.NoError(t, err)
	defer conn.Close()
	rd := Reader{R: bufio.NewReader(io.MultiReader(bytes.NewReader(rest), conn)), Limit: 1 << 10}
	op, msg, err := rd.Next(nil)
	require.NoError(t, err)
	require.Equal(t, OpText, op)
	require.Equal(t, "hello", string(msg))

	key := [4]byte{5, 6, 7, 8}
	_, err = conn.Write(AppendFrame(nil, OpText, []byte("masked"), &key))
	require.NoError(t, err)
	op, msg, err = rd.Next(msg[:0])
	require.NoError(t, err)
	require.Equal(t, OpBinary, op)
	require.Equal(t, "masked", string(msg))
}

// TestDialRefusesOtherSchemes points Dial at a WebSocket server that would
// accept it under any scheme: only ws:// reaches it, every other scheme is
// refused with ErrBadScheme before a connection is made.
func TestDialRefusesOtherSchemes(t *testing.T) {
	var (
		mu    sync.Mutex
		conns int
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err == nil {
			_ = ws.Close()
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return conns
	}

	for _, url := range []string{"http://", "https://", "ftp://", "WSS+unix://", "//"} {
		url += hostPort + "/"
		t.Run(url, func(t *testing.T) {
			c, _, err := Dial(t.Context(), url, nil)
			if c != nil {
				_ = c.Close()
			}
			require.ErrorIs(t, err, ErrBadScheme)
			require.Zero(t, accepted(), "no connection was made")
		})
	}

	// The server does take a WebSocket: the refusals above are Dial's.
	c, _, err := Dial(t.Context(), "ws://"+hostPort+"/", nil)
	require.NoError(t, err)
	_ = c.Close()
	require.Equal(t, 1, accepted())
}

func TestDialEndsWithItsContext(t *testing.T) {
	// A server that accepts but never answers the handshake.
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestDialReturnsWhatCameWithTheResponse has a server send its first frame
// in the same write as its handshake response: Dial must hand it back.
func TestDialReturnsWhatCameWithTheResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
		_, _ = c.Write(AppendFrame([]byte(resp), OpText, []byte("early"), nil))
		_, _ = c.Read(make([]byte, 1)) // until the client hangs up
	}()
	conn, rest, err := Dial(context.Background(), "ws://"+ln.Addr().String()+"/", nil)
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, AppendFrame(nil, OpText, []byte("early"), nil), rest)
}
