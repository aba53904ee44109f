package limits_test

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/limits"
)

// clock is a manual clock for the limiters.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateUnlimited(t *testing.T) {
	for _, r := range []limits.Rate{{}, {Burst: 5}, {PerSecond: -1, Burst: 3}} {
		require.True(t, r.Unlimited(), "%+v", r)
		require.Nil(t, limits.NewKeyed(r, 0))
	}
	require.False(t, limits.Rate{PerSecond: 0.5}.Unlimited())
	var k *limits.Keyed // nil: unlimited
	for range 100 {
		ok, wait := k.Allow("x")
		require.True(t, ok)
		require.Zero(t, wait)
	}
	require.False(t, limits.Config{}.Enabled())
	require.True(t, limits.Config{TasksInFlight: 1}.Enabled())
	require.True(t, limits.Config{UploadIPRate: limits.Rate{PerSecond: 1}}.Enabled())
}

func TestKeyedBurstThenRate(t *testing.T) {
	c := newClock()
	k := limits.NewKeyed(limits.Rate{PerSecond: 2, Burst: 3}, 0)
	k.SetClock(c.now)
	for i := range 3 {
		ok, _ := k.Allow("alice")
		require.True(t, ok, "event %d of the burst", i)
	}
	ok, wait := k.Allow("alice")
	require.False(t, ok)
	require.InDelta(t, 500*time.Millisecond, wait, float64(time.Millisecond))
	// Another key has a bucket of its own.
	ok, _ = k.Allow("bob")
	require.True(t, ok)
	c.advance(wait)
	ok, _ = k.Allow("alice")
	require.True(t, ok)
	ok, wait = k.Allow("alice")
	require.False(t, ok)
	require.InDelta(t, 500*time.Millisecond, wait, float64(time.Millisecond))
}

func TestKeyedDefaultBurst(t *testing.T) {
	c := newClock()
	k := limits.NewKeyed(limits.Rate{PerSecond: 2.5}, 0)
	k.SetClock(c.now)
	for range 3 { // ceil(2.5)
		ok, _ := k.Allow("k")
		require.True(t, ok)
	}
	ok, _ := k.Allow("k")
	require.False(t, ok)
	k = limits.NewKeyed(limits.Rate{PerSecond: 0.1}, 0)
	k.SetClock(c.now)
	ok, _ = k.Allow("k")
	require.True(t, ok)
	ok, wait := k.Allow("k")
	require.False(t, ok)
	require.InDelta(t, 10*time.Second, wait, float64(time.Millisecond))
}

// TestKeyedIdleKeysDropped: a key whose bucket has refilled is forgotten,
// and forgetting it changes nothing a caller can see.
func TestKeyedIdleKeysDropped(t *testing.T) {
	c := newClock()
	k := limits.NewKeyed(limits.Rate{PerSecond: 10, Burst: 10}, 0)
	k.SetClock(c.now)
	for i := range 1000 {
		for range 10 { // the whole burst
			ok, _ := k.Allow("ip-" + strconv.Itoa(i))
			require.True(t, ok)
		}
	}
	require.Equal(t, 1000, k.Len())
	c.advance(500 * time.Millisecond) // half refilled: kept
	k.Sweep()
	require.Equal(t, 1000, k.Len())
	c.advance(600 * time.Millisecond) // full again
	k.Sweep()
	require.Zero(t, k.Len())

	// Without Sweep, traffic on other keys drops the idle ones as it goes.
	for i := range 1000 {
		for range 10 {
			k.Allow("old-" + strconv.Itoa(i))
		}
	}
	c.advance(2 * time.Second)
	for i := range 1000 {
		k.Allow("new-" + strconv.Itoa(i))
	}
	require.LessOrEqual(t, k.Len(), 1000+16, "old keys left: the sweep per call did not keep up")
}

// TestKeyedMemoryBounded: 100k distinct keys (addresses of a botnet) keep
// no more than MaxKeys in memory, and the heap grows accordingly little.
func TestKeyedMemoryBounded(t *testing.T) {
	const maxKeys = 1000
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: 1}, maxKeys)
	c := newClock()
	k.SetClock(c.now)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range 100_000 {
		ok, _ := k.Allow("10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255))
		require.True(t, ok, "a new key has a full bucket")
		if i%10_000 == 0 {
			require.LessOrEqual(t, k.Len(), maxKeys+16)
		}
	}
	require.LessOrEqual(t, k.Len(), maxKeys+16) // rounded up per shard
	after := heap()
	grown := int64(after) - int64(before)
	// 1000 keys of ~200 bytes; 100k would be 20 MB.
	require.Less(t, grown, int64(2<<20), "heap grew by %d bytes", grown)
	runtime.KeepAlive(k)
}

func TestKeyedConcurrent(t *testing.T) {
	k := limits.NewKeyed(limits.Rate{PerSecond: 1e-3, Burst: 100}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				ok, _ := k.Allow("shared")
				if ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
				k.Allow("g" + strconv.Itoa(g) + "-" + strconv.Itoa(i))
			}
		})
	}
	wg.Wait()
	// The shared key may have been evicted by the flood of others (64 keys
	// at most), which hands it a fresh bucket: at least the burst, at most
	// a burst per eviction.
	require.GreaterOrEqual(t, allowed, 100)
	require.LessOrEqual(t, k.Len(), 64+16)
}

func TestCounter(t *testing.T) {
	c := limits.NewCounter(2)
	r1, ok := c.Acquire("alice")
	require.True(t, ok)
	r2, ok := c.Acquire("alice")
	require.True(t, ok)
	_, ok = c.Acquire("alice")
	require.False(t, ok, "a third")
	rb, ok := c.Acquire("bob")
	require.True(t, ok, "another key")
	r1()
	r1() // idempotent: does not free a second holding
	require.Equal(t, 1, c.Count("alice"))
	r3, ok := c.Acquire("alice")
	require.True(t, ok)
	_, ok = c.Acquire("alice")
	require.False(t, ok)
	r2()
	r3()
	rb()
	require.Zero(t, c.Keys(), "keys holding nothing are forgotten")

	var none *limits.Counter = limits.NewCounter(0)
	require.Nil(t, none)
	for range 10 {
		rel, ok := none.Acquire("x")
		require.True(t, ok)
		rel()
	}
}

func TestLimitsUserAndAddress(t *testing.T) {
	l := limits.New(limits.Config{SessionRate: limits.Rate{PerSecond: 1e-6, Burst: 2},
		SessionIPRate: limits.Rate{PerSecond: 1e-6, Burst: 3}, SessionsPerUser: 1})
	ok, _ := l.AllowSession("alice", "10.0.0.1")
	require.True(t, ok)
	ok, _ = l.AllowSession("alice", "10.0.0.2")
	require.True(t, ok)
	ok, wait := l.AllowSession("alice", "10.0.0.3")
	require.False(t, ok, "alice is past her rate on any address")
	require.Positive(t, wait)
	ok, _ = l.AllowSession("bob", "10.0.0.1")
	require.True(t, ok)
	ok, _ = l.AllowSession("carol", "10.0.0.1")
	require.True(t, ok)
	ok, _ = l.AllowSession("dave", "10.0.0.1")
	require.False(t, ok, "10.0.0.1 is past its rate for any user")
	ok, _ = l.AllowSession("", "")
	require.True(t, ok, "no keys, no limit")

	rel, ok := l.AcquireSession("alice")
	require.True(t, ok)
	_, ok = l.AcquireSession("alice")
	require.False(t, ok)
	rel()
	_, ok = l.AcquireSession("alice")
	require.True(t, ok)
	require.Equal(t, 1, l.SessionsPerUser())
	require.False(t, l.Tasks())
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1,
		1001 * time.Millisecond: 2, 90 * time.Second: 90} {
		require.Equal(t, want, limits.RetryAfterSeconds(d), "%v", d)
	}
}

func BenchmarkKeyedAllow(b *testing.B) {
	k := limits.NewKeyed(limits.Rate{PerSecond: 1, Burst: 1 << 30}, 0)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k.Allow(keys[i&1023])
			i++
		}
	})
}

func TestCounterHold(t *testing.T) {
	c := limits.NewCounter(1)
	r1, ok := c.Acquire("alice")
	require.True(t, ok)
	r2 := c.Hold("alice") // moved here: counted past the maximum
	require.Equal(t, 2, c.Count("alice"))
	_, ok = c.Acquire("alice")
	require.False(t, ok)
	r1()
	_, ok = c.Acquire("alice")
	require.False(t, ok, "still one held")
	r2()
	r2()
	require.Zero(t, c.Count("alice"))
	var none *limits.Counter
	none.Hold("x")()
}
