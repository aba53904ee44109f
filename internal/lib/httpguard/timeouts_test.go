package httpguard_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/httpguard"
)

func TestResolved(t *testing.T) {
	got := httpguard.Timeouts{}.Resolved()
	require.Equal(t, httpguard.Timeouts{ReadHeader: httpguard.DefaultReadHeader, Idle: httpguard.DefaultIdle,
		Body: httpguard.DefaultBody, BodyMinBytes: httpguard.DefaultBodyMinBytes, WriteStall: httpguard.DefaultWriteStall,
		MaxHeaderBytes: httpguard.DefaultMaxHeaderBytes}, got)
	off := httpguard.Timeouts{ReadHeader: -1, Idle: -1, Body: -1, WriteStall: -1}.Resolved()
	require.Zero(t, off.ReadHeader)
	require.Zero(t, off.Idle)
	require.Zero(t, off.Body)
	require.Zero(t, off.WriteStall)
	require.Zero(t, httpguard.Timeouts{Write: time.Minute}.Resolved().WriteStall, "a whole-response bound replaces the stall guard")
}

// A kept-alive connection with no next request is closed after Idle.
func TestIdleConnectionClosed(t *testing.T) {
	addr := serve(t, httpguard.Timeouts{Idle: 200 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.False(t, resp.Close, "kept alive")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the server closes the idle connection")
}

// Headers over MaxHeaderBytes are refused with 431.
func TestMaxHeaderBytes(t *testing.T) {
	addr := serve(t, httpguard.Timeouts{MaxHeaderBytes: 4096},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("h", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}
