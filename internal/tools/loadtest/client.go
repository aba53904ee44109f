package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/session"
)

// The client is built not to be the bottleneck: task frames are prepared
// once per connection (gorilla masks and frames them once), messages are
// read with NextReader into buffers the connection keeps, a connection is
// one goroutine, and nothing is shared between connections but a counter
// each owns.

const (
	// bulkChunk is the binary frame size of the bulk scenario.
	bulkChunk = 64 << 10
	// bulkTaskBytes is what one bulk task streams: long enough that the
	// task round trip around it is noise.
	bulkTaskBytes = 64 << 20
	bulkWarmBytes = 4 << 20
	// stallLimit is how long past its planned end a scenario may wait for a
	// server before it fails.
	stallLimit = 30 * time.Second
	// readyLimit bounds the time until every connection has finished its
	// first task: on an external drover, they may have to wait for
	// instances.
	readyLimit = 60 * time.Second
)

// echoFrame is the task of the latency and throughput scenarios: an echo
// with a 64-byte payload.
var echoFrame = []byte(`{"type":"task","id":1,"data":{"command":"echo","payload":"` +
	strings.Repeat("0123456789abcdef", 4) + `"}}`)

func streamFrame(n int) []byte {
	return []byte(`{"type":"task","id":1,"data":{"command":"stream","bytes":` +
		strconv.Itoa(n) + `,"chunk":` + strconv.Itoa(bulkChunk) + `}}`)
}

var dialer = websocket.Dialer{
	ReadBufferSize:   64 << 10,
	WriteBufferSize:  4 << 10,
	HandshakeTimeout: 10 * time.Second,
}

var errTaskFailed = errors.New("task failed")

// client is one connection speaking protocol v1 to drover or to the worker
// directly. It ignores welcome, queued and event frames, and sends its
// first task without waiting for the welcome: drover holds tasks until the
// session is placed, and the worker greets no one.
type client struct {
	ws   *websocket.Conn
	task *websocket.PreparedMessage
	text []byte // the last text message
	bin  []byte // scratch for binary messages
	stop func() bool
}

func dial(ctx context.Context, url string, task []byte) (*client, error) {
	ws, _, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, task)
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	c := &client{ws: ws, task: pm, text: make([]byte, 0, 512)}
	// Closing the socket is what ends a blocked read when ctx ends.
	c.stop = context.AfterFunc(ctx, func() { _ = ws.Close() })
	return c, nil
}

// deadline bounds every read and write until t, so that a server that
// stops answering fails the scenario instead of hanging it. It is set once
// per scenario, not per message.
func (c *client) deadline(t time.Time) {
	_ = c.ws.SetReadDeadline(t)
	_ = c.ws.SetWriteDeadline(t)
}

// close ends the connection with a normal close: drover ends the session
// and releases its instance at once.
func (c *client) close() {
	c.stop()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	_ = c.ws.Close()
}

type kind uint8

const (
	kindOther kind = iota
	kindResult
	kindDone
	kindBinary
)

var (
	donePrefix   = []byte(`{"type":"done"`)
	resultPrefix = []byte(`{"type":"result"`)
)

// next reads one message and tells what it was; n is the size of a binary
// message. An error frame comes back as an error.
func (c *client) next() (k kind, n int, err error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return kindOther, 0, err
	}
	if mt == websocket.BinaryMessage {
		if c.bin == nil {
			c.bin = make([]byte, bulkChunk)
		}
		for {
			m, err := r.Read(c.bin)
			n += m
			if err == io.EOF {
				return kindBinary, n, nil
			}
			if err != nil {
				return kindBinary, n, err
			}
		}
	}
	if c.text, err = readAll(c.text[:0], r); err != nil {
		return kindOther, 0, err
	}
	// drover and the worker encode these two frames alike; anything else
	// is decoded.
	switch {
	case bytes.HasPrefix(c.text, donePrefix):
		return kindDone, 0, nil
	case bytes.HasPrefix(c.text, resultPrefix):
		return kindResult, 0, nil
	}
	var f session.Frame
	if err := session.Decode(c.text, &f); err != nil {
		return kindOther, 0, fmt.Errorf("bad frame %s: %w", clip(c.text), err)
	}
	switch f.Type {
	case session.FrameDone:
		return kindDone, 0, nil
	case session.FrameResult:
		return kindResult, 0, nil
	case session.FrameError:
		return kindOther, 0, fmt.Errorf("%w: %s", errTaskFailed, clip(c.text))
	}
	return kindOther, 0, nil
}

// readAll appends everything from r to b.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// roundTrip sends pm and reads until its done frame. It returns the bytes
// of binary results.
func (c *client) roundTrip(pm *websocket.PreparedMessage) (int, error) {
	if err := c.ws.WritePreparedMessage(pm); err != nil {
		return 0, err
	}
	total := 0
	for {
		k, n, err := c.next()
		if err != nil {
			return total, err
		}
		switch k {
		case kindBinary:
			total += n
		case kindDone:
			return total, nil
		}
	}
}

// failure turns a connection error into the error a scenario reports.
func failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", errStalled, err)
	}
	return err
}

// warmup is the time a scenario runs before it measures: long enough for
// connections to settle and caches to warm, short next to d.
func warmup(d time.Duration) time.Duration {
	return min(max(d/10, 50*time.Millisecond), time.Second)
}

type latencies struct {
	p50, p90, p99 float64 // µs
	n             int
}

// runLatency sends echo tasks one after another on one connection for d
// and returns the percentiles of their round trips.
func runLatency(ctx context.Context, url string, d time.Duration) (latencies, error) {
	c, err := dial(ctx, url, echoFrame)
	if err != nil {
		return latencies{}, err
	}
	defer c.close()
	w := warmup(d)
	c.deadline(time.Now().Add(readyLimit + w + d + stallLimit))
	for end := time.Now().Add(w); ; {
		if _, err := c.roundTrip(c.task); err != nil {
			return latencies{}, failure(ctx, err)
		}
		if !time.Now().Before(end) {
			break
		}
	}
	lat := make([]time.Duration, 0, 1<<16)
	for end := time.Now().Add(d); ; {
		t0 := time.Now()
		if _, err := c.roundTrip(c.task); err != nil {
			return latencies{}, failure(ctx, err)
		}
		t1 := time.Now()
		lat = append(lat, t1.Sub(t0))
		if !t1.Before(end) {
			break
		}
	}
	slices.Sort(lat)
	return latencies{p50: micros(lat, 0.50), p90: micros(lat, 0.90), p99: micros(lat, 0.99), n: len(lat)}, nil
}

// micros returns the nearest-rank percentile p of sorted, in µs.
func micros(sorted []time.Duration, p float64) float64 {
	i := int(p*float64(len(sorted))+0.999999) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i].Nanoseconds()) / 1e3
}

// counter is one connection's count of finished tasks, on its own cache
// line.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

// runThroughput runs conns connections, each keeping window echo tasks in
// flight, and returns the tasks finished per second over d. A task is one
// message in and its result and done frames out.
func runThroughput(ctx context.Context, url string, conns, window int, d time.Duration) (float64, error) {
	rate, _, err := throughput(ctx, func(int) string { return url }, conns, window, d, nil)
	return rate, err
}

// throughput is runThroughput with connection i going to urlAt(i); mark,
// when set, is called right before and right after the measured window,
// and the tasks finished in it are returned too.
func throughput(parent context.Context, urlAt func(int) string, conns, window int, d time.Duration, mark func()) (float64, int64, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel() // one failed connection closes them all
	clients := make([]*client, 0, conns)
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	w := warmup(d)
	limit := time.Now().Add(readyLimit + w + d + stallLimit)
	for i := range conns {
		c, err := dial(ctx, urlAt(i), echoFrame)
		if err != nil {
			return 0, 0, err
		}
		c.deadline(limit)
		clients = append(clients, c)
	}

	counts := make([]counter, conns)
	var (
		stop  atomic.Bool
		ready atomic.Int32
		wg    sync.WaitGroup
	)
	errc := make(chan error, conns)
	for i, c := range clients {
		wg.Go(func() {
			if err := pump(c, window, &counts[i].n, &ready, &stop); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	sum := func() int64 {
		var s int64
		for i := range counts {
			s += counts[i].n.Load()
		}
		return s
	}
	var tasks int64
	measure := func() (float64, error) {
		// Every connection has had its first task served (drover has
		// placed every session) before the warm-up starts.
		for deadline := time.Now().Add(readyLimit); ready.Load() < int32(conns); {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("only %d of %d connections got an answer within %s", ready.Load(), conns, readyLimit)
			}
			if err := sleep(ctx, 5*time.Millisecond); err != nil {
				return 0, err
			}
		}
		if err := sleep(ctx, w); err != nil {
			return 0, err
		}
		if mark != nil {
			mark()
		}
		s0, t0 := sum(), time.Now()
		if err := sleep(ctx, d); err != nil {
			return 0, err
		}
		s1, t1 := sum(), time.Now()
		if mark != nil {
			mark()
		}
		tasks = s1 - s0
		return float64(s1-s0) / t1.Sub(t0).Seconds(), nil
	}
	rate, err := measure()
	stop.Store(true) // the pumps finish the tasks in flight and return
	wg.Wait()
	close(errc)
	if perr := <-errc; perr != nil {
		// The first error is the cause; the others followed the cancel.
		return 0, 0, failure(parent, perr)
	}
	return rate, tasks, err
}

// pump keeps window tasks in flight on c until stop is set, then waits for
// the ones in flight.
func pump(c *client, window int, done *atomic.Int64, ready *atomic.Int32, stop *atomic.Bool) error {
	for range window {
		if err := c.ws.WritePreparedMessage(c.task); err != nil {
			return err
		}
	}
	for inFlight := window; inFlight > 0; {
		k, _, err := c.next()
		if err != nil {
			return err
		}
		if k != kindDone {
			continue
		}
		inFlight--
		if done.Add(1) == 1 {
			ready.Add(1)
		}
		if !stop.Load() {
			if err := c.ws.WritePreparedMessage(c.task); err != nil {
				return err
			}
			inFlight++
		}
	}
	return nil
}

// runBulk streams bulkTaskBytes per task in 64 KiB binary frames on one
// connection for at least d and returns the bytes per second.
func runBulk(ctx context.Context, url string, d time.Duration) (float64, error) {
	return bulk(ctx, url, d, bulkTaskBytes, bulkWarmBytes)
}

// bulk is runBulk with taskBytes per task and warmBytes per warm-up task.
func bulk(ctx context.Context, url string, d time.Duration, taskBytes, warmBytes int) (float64, error) {
	c, err := dial(ctx, url, streamFrame(taskBytes))
	if err != nil {
		return 0, err
	}
	defer c.close()
	warm, err := websocket.NewPreparedMessage(websocket.TextMessage, streamFrame(warmBytes))
	if err != nil {
		return 0, err
	}
	w := warmup(d)
	c.deadline(time.Now().Add(readyLimit + w + d + stallLimit))
	task := func(pm *websocket.PreparedMessage, want int) (int, error) {
		n, err := c.roundTrip(pm)
		if err != nil {
			return n, failure(ctx, err)
		}
		if n != want {
			return n, fmt.Errorf("stream task returned %d bytes, want %d", n, want)
		}
		return n, nil
	}
	for end := time.Now().Add(w); time.Now().Before(end); {
		if _, err := task(warm, warmBytes); err != nil {
			return 0, err
		}
	}
	var total int64
	t0 := time.Now()
	for end := t0.Add(d); ; {
		n, err := task(c.task, taskBytes)
		if err != nil {
			return 0, err
		}
		total += int64(n)
		if !time.Now().Before(end) {
			break
		}
	}
	return float64(total) / time.Since(t0).Seconds(), nil
}
