package manager_test

import (
	"bytes"
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/limits"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/store"
)

var echoTask = []byte(`{"type":"task","id":1,"data":{"command":"echo","payload":"0123456789abcdef0123456789abcdef"}}`)

// roundTrips sends b.N echo tasks one after another on ws and reads each
// result and done, reporting the median round trip.
func roundTrips(b *testing.B, ws *websocket.Conn) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := ws.WriteMessage(websocket.TextMessage, echoTask); err != nil {
			b.Fatal(err)
		}
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if bytes.HasPrefix(msg, []byte(`{"type":"done"`)) {
				break
			}
			if bytes.HasPrefix(msg, []byte(`{"type":"error"`)) {
				b.Fatalf("task failed: %s", msg)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkTaskRoundTrip compares one echo task sent straight to a worker
// process with the same task sent through the manager (frame decoding,
// the middleware chain, the instance connection) to a worker process.
func BenchmarkTaskRoundTrip(b *testing.B) {
	st := newBenchStack(b, 2, []manager.Pool{{Name: "default"}})

	b.Run("direct", func(b *testing.B) {
		inst, err := st.farm.StartInstance(context.Background(), "default")
		require.NoError(b, err)
		defer func() { _ = st.farm.StopInstance(context.Background(), inst.ID) }()
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+inst.Addr+"/", nil)
		require.NoError(b, err)
		defer ws.Close()
		roundTrips(b, ws)
	})
	b.Run("manager", func(b *testing.B) {
		ws, _, err := websocket.DefaultDialer.Dial(st.wsURL(""), nil)
		require.NoError(b, err)
		defer ws.Close()
		waitWelcome(b, ws)
		roundTrips(b, ws)
	})
}

func waitWelcome(b *testing.B, ws *websocket.Conn) {
	b.Helper()
	for {
		_, msg, err := ws.ReadMessage()
		require.NoError(b, err)
		if bytes.Contains(msg, []byte(`"welcome"`)) {
			return
		}
	}
}

// BenchmarkSessionOpen opens and logs out WebSocket sessions served from a
// warm pool that reuses instances, so every open is a placement on a ready
// instance: the rate at which a manager greets new clients. The pools of
// these benchmarks say reset: none, so that they time placement alone: a
// reset task adds a round trip to the instance to every release.
func BenchmarkSessionOpen(b *testing.B) {
	st := newBenchStack(b, 4, []manager.Pool{{Name: "default", Warm: 4, Release: manager.ReleaseReuse, Reset: manager.ResetNone}})
	for st.m.Capacity().Idle < 4 {
		time.Sleep(5 * time.Millisecond) // warm-up outside the timed loop
	}
	url := st.wsURL("")
	logout := []byte(`{"type":"logout"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		waitWelcome(b, ws)
		_ = ws.WriteMessage(websocket.TextMessage, logout)
		_, _, _ = ws.ReadMessage() // the close frame: the instance is back in the pool
		_ = ws.Close()
		for st.m.Capacity().Idle == 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
}

// BenchmarkOpenInProcess is the same for in-process sessions (Open/Close).
func BenchmarkOpenInProcess(b *testing.B) {
	st := newBenchStack(b, 2, []manager.Pool{{Name: "default", Warm: 2, Release: manager.ReleaseReuse, Reset: manager.ResetNone}})
	for st.m.Capacity().Idle < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s, err := st.m.Open(context.Background(), manager.OpenOptions{Wait: true})
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
}

func newBenchStack(b *testing.B, slots int, pools []manager.Pool) *stack {
	return newStack(b, stackOpts{slots: slots, pools: pools})
}

// BenchmarkPlacement places and releases in-process sessions on warm,
// reused instances, with the shared state in memory and in a real Redis:
// what the store costs a placement (a compare-and-set to bind, another to
// give the instance back). Parallel, as managers place concurrently.
func BenchmarkPlacement(b *testing.B) {
	const slots = 8
	for _, name := range []string{"memory", "redis"} {
		b.Run(name, func(b *testing.B) {
			var st store.Store
			if name == "redis" {
				rs := redistest.Start(b)
				r, err := store.NewRedis(context.Background(), store.RedisOptions{URL: rs.URL()})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = r.Close() })
				st = r
			}
			s := newStack(b, stackOpts{slots: slots, store: st,
				pools: []manager.Pool{{Name: "default", Warm: slots, Release: manager.ReleaseReuse, Reset: manager.ResetNone}}})
			for s.m.Capacity().Idle < slots {
				time.Sleep(5 * time.Millisecond)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					sess, err := s.m.Open(context.Background(), manager.OpenOptions{Wait: true})
					if err != nil {
						b.Error(err)
						return
					}
					_ = sess.Close()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// BenchmarkTaskRoundTripLimited is the manager's round trip with every
// task limit on and never reached: a task rate per user and per address
// and the tasks in flight of a session. Against BenchmarkTaskRoundTrip's
// "manager", it is what the limits cost the task path.
func BenchmarkTaskRoundTripLimited(b *testing.B) {
	st := newStack(b, stackOpts{slots: 2, pools: []manager.Pool{{Name: "default"}}, limits: limits.Config{
		TaskRate: limits.Rate{PerSecond: 1e9, Burst: 1 << 30}, TaskIPRate: limits.Rate{PerSecond: 1e9, Burst: 1 << 30},
		TasksInFlight: 1024}})
	ws, _, err := websocket.DefaultDialer.Dial(st.wsURL(""), nil)
	require.NoError(b, err)
	defer ws.Close()
	waitWelcome(b, ws)
	roundTrips(b, ws)
}

// BenchmarkTaskThroughput64 runs echo tasks on 64 WebSocket sessions at
// once, one task in flight on each, as `drover load`'s tput scenario does:
// the manager's throughput when every core is busy, in tasks/s, and what it
// allocates per task (the clients' allocations included).
func BenchmarkTaskThroughput64(b *testing.B) {
	const conns = 64
	st := newBenchStack(b, conns, []manager.Pool{{Name: "default"}})
	wss := make([]*websocket.Conn, conns)
	for i := range wss {
		ws, _, err := websocket.DefaultDialer.Dial(st.wsURL(""), nil)
		require.NoError(b, err)
		defer ws.Close()
		waitWelcome(b, ws)
		wss[i] = ws
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for _, ws := range wss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := ws.WriteMessage(websocket.TextMessage, echoTask); err != nil {
					b.Error(err)
					return
				}
				for {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						b.Error(err)
						return
					}
					if bytes.HasPrefix(msg, []byte(`{"type":"done"`)) {
						break
					}
					if bytes.HasPrefix(msg, []byte(`{"type":"error"`)) {
						b.Errorf("task failed: %s", msg)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
