package proxy

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// benchModes compare a direct connection with the relay, plain and with an
// idle timeout (kernel counters, and the portable counting copy).
var benchModes = []struct {
	name   string
	direct bool
	opts   Options
	env    []envOption
}{
	{name: "direct", direct: true},
	{name: "relay"},
	{name: "relay+idle", opts: Options{IdleTimeout: time.Minute}},
	{name: "relay+idle-counting", opts: Options{IdleTimeout: time.Minute}, env: []envOption{withoutTCPInfo}},
}

func benchDial(b *testing.B, e *env, direct bool, path string) *websocket.Conn {
	b.Helper()
	url := e.url(path)
	if direct {
		url = "ws://" + e.up.host() + path
	}
	d := websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	c, _, err := d.Dial(url, nil)
	require.NoError(b, err)
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// discard is io.Discard without ReadFrom, so io.CopyBuffer uses our buffer.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkRelayBulk streams 64 KiB binary messages from the upstream to the
// client, the direction of a stream session.
func BenchmarkRelayBulk(b *testing.B) {
	const frame = 64 << 10
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			e := newEnv(b, m.opts, m.env...)
			c := benchDial(b, e, m.direct, "/stream")
			buf := make([]byte, frame)
			b.SetBytes(frame)
			b.ReportAllocs()
			b.ResetTimer()
			require.NoError(b, c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(b.N))))
			for range b.N {
				_, r, err := c.NextReader()
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.CopyBuffer(discard{}, r, buf); err != nil || n != frame {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// BenchmarkRelayRoundTrip sends a small message and waits for its echo.
func BenchmarkRelayRoundTrip(b *testing.B) {
	msg := []byte(`{"type":"task","id":1,"data":"ping"}`)
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			e := newEnv(b, m.opts, m.env...)
			c := benchDial(b, e, m.direct, "/echo")
			buf := make([]byte, 512)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := roundTrip(c, msg, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelayRoundTrip64 runs round trips on 64 connections at once and
// reports the message rate.
func BenchmarkRelayRoundTrip64(b *testing.B) {
	msg := []byte(`{"type":"task","id":1,"data":"ping"}`)
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			e := newEnv(b, m.opts, m.env...)
			conns := make(chan *websocket.Conn, 64)
			for range 64 {
				conns <- benchDial(b, e, m.direct, "/echo")
			}
			var done atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				c := <-conns
				buf := make([]byte, 512)
				for pb.Next() {
					if err := roundTrip(c, msg, buf); err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			})
			b.ReportMetric(float64(done.Load())/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

func roundTrip(c *websocket.Conn, msg, buf []byte) error {
	if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
		return err
	}
	_, r, err := c.NextReader()
	if err != nil {
		return err
	}
	if n, err := io.ReadFull(r, buf[:len(msg)]); err != nil {
		return fmt.Errorf("echo of %d bytes: %w", n, err)
	}
	return nil
}
