package httpguard_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/httpguard"
)

// A client that asks for a large response and stops reading is cut off:
// the handler's write fails once the socket buffers are full and the
// write has stalled for WriteStall.
func TestWriteStall(t *testing.T) {
	wrote := make(chan error, 1)
	addr := serve(t, httpguard.Timeouts{WriteStall: 300 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			chunk := make([]byte, 32<<10)
			for range 1 << 15 { // 1 GiB: more than any socket buffer
				if _, err := w.Write(chunk); err != nil {
					wrote <- err
					return
				}
			}
			wrote <- nil
		}))
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// Read nothing more.
	select {
	case err := <-wrote:
		require.Error(t, err, "the write should have been cut off")
	case <-time.After(30 * time.Second):
		t.Fatal("the handler's writes never stalled out")
	}
}

// A kept-alive connection does not carry the last response's write
// deadline into the next request: a request that comes later than
// WriteStall, with Expect: 100-continue, gets its 100 and its answer.
func TestWriteStallKeepAlive(t *testing.T) {
	const stall = 100 * time.Millisecond
	addr := serve(t, httpguard.Timeouts{WriteStall: stall, Idle: time.Minute},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, "read", http.StatusBadRequest)
				return
			}
			_, _ = w.Write(append([]byte("got "), b...))
		}))
	tr := &http.Transport{ExpectContinueTimeout: 10 * time.Second, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i, body := range []string{"one", "two"} {
		if i == 1 {
			<-time.After(3 * stall) // the condition under test: the old deadline has passed
		}
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Expect", "100-continue")
		reused := false
		req = req.WithContext(httptrace.WithClientTrace(req.Context(),
			&httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }}))
		resp, err := client.Do(req)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "got "+body, string(b))
		require.Equal(t, i == 1, reused, "the second request goes on the first one's connection")
	}
}
