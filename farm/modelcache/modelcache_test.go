package modelcache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm/modelcache"
)

func open(t testing.TB, dir string, capacity int64, reg prometheus.Registerer) *modelcache.Cache {
	t.Helper()
	c, err := modelcache.Open(modelcache.Config{Dir: dir, MaxBytes: capacity, Registerer: reg})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// source serves contents and counts the fills.
type source struct {
	mu    sync.Mutex
	fills map[string]int
}

func (s *source) fill(key string, size int) modelcache.FillFunc {
	return func(_ context.Context, w io.Writer) (int64, error) {
		s.mu.Lock()
		if s.fills == nil {
			s.fills = map[string]int{}
		}
		s.fills[key]++
		s.mu.Unlock()
		n, err := w.Write(content(key, size))
		return int64(n), err
	}
}

func (s *source) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fills[key]
}

func content(key string, size int) []byte {
	return bytes.Repeat([]byte(key[:1]), size)
}

// get gets key and checks the file's content.
func get(t testing.TB, c *modelcache.Cache, src *source, key string, size int) *modelcache.Handle {
	t.Helper()
	h, err := c.Get(context.Background(), key, src.fill(key, size))
	require.NoError(t, err)
	b, err := os.ReadFile(h.Path())
	require.NoError(t, err)
	require.Equal(t, content(key, size), b)
	require.EqualValues(t, size, h.Size())
	return h
}

// files lists the cache directory's files but its lock.
func files(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		if de.Name() != ".lock" {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestHitDownloadsNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := open(t, t.TempDir(), 1000, reg)
	src := &source{}
	h := get(t, c, src, "a", 100)
	require.False(t, h.Hit())
	require.NoError(t, h.Close())
	h = get(t, c, src, "a", 100)
	require.True(t, h.Hit())
	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "Close is idempotent")
	require.Equal(t, 1, src.count("a"))

	fi, err := os.Stat(h.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o444), fi.Mode().Perm(), "entries are read-only")

	st := c.Stats()
	require.Equal(t, modelcache.Stats{MaxBytes: 1000, UsedBytes: 100, Entries: 1, Hits: 1, Misses: 1}, st)
	require.InDelta(t, 1, gauge(t, reg, "drover_farm_cache_hits_total"), 0)
	require.InDelta(t, 1, gauge(t, reg, "drover_farm_cache_misses_total"), 0)
	require.InDelta(t, 100, gauge(t, reg, "drover_farm_cache_bytes"), 0)
	require.InDelta(t, 1, gauge(t, reg, "drover_farm_cache_entries"), 0)
	require.InDelta(t, 1000, gauge(t, reg, "drover_farm_cache_capacity_bytes"), 0)
}

// gauge reads the value of metric name (a counter or a gauge) in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestEvictsLeastRecentlyUsedBySize fills A and B and then inserts C,
// which fits only when one of them goes: the least recently used.
func TestEvictsLeastRecentlyUsedBySize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		touchA  bool
		evicted string
		kept    string
	}{
		{"B used last, A goes", false, "a", "b"},
		{"A touched, B goes", true, "b", "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := open(t, t.TempDir(), 100, reg)
			src := &source{}
			for _, k := range []string{"a", "b"} {
				require.NoError(t, get(t, c, src, k, 40).Close())
			}
			if tc.touchA {
				h := get(t, c, src, "a", 40)
				require.True(t, h.Hit())
				require.NoError(t, h.Close())
			}
			require.NoError(t, get(t, c, src, "c", 30).Close()) // 110 > 100: one goes
			st := c.Stats()
			require.EqualValues(t, 70, st.UsedBytes)
			require.Equal(t, 2, st.Entries)
			require.EqualValues(t, 1, st.Evictions)
			require.InDelta(t, 1, gauge(t, reg, "drover_farm_cache_evictions_total"), 0)
			require.InDelta(t, 70, gauge(t, reg, "drover_farm_cache_bytes"), 0)
			require.Len(t, files(t, c.Dir()), 2, "the evicted file is gone")

			h := get(t, c, src, tc.kept, 40)
			require.True(t, h.Hit(), "%s stays", tc.kept)
			require.NoError(t, h.Close())
			h = get(t, c, src, tc.evicted, 40)
			require.False(t, h.Hit(), "%s was evicted", tc.evicted)
			require.NoError(t, h.Close())
			require.Equal(t, 2, src.count(tc.evicted))
			require.LessOrEqual(t, c.Stats().UsedBytes, int64(100))
		})
	}
}

func TestPinnedEntriesAreNotEvicted(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	src := &source{}
	a := get(t, c, src, "a", 60) // held
	b := get(t, c, src, "b", 60)
	require.False(t, b.Hit())
	// B does not fit beside the held A: it is served, not kept.
	require.EqualValues(t, 60, c.Stats().UsedBytes)
	require.EqualValues(t, 1, c.Stats().Uncached)
	require.EqualValues(t, 0, c.Stats().Evictions)
	require.Equal(t, 1, c.Stats().Pinned)
	bPath := b.Path()
	require.NoError(t, b.Close())
	require.NoFileExists(t, bPath, "an uncached file goes with its handle")
	_, err := os.Stat(a.Path())
	require.NoError(t, err, "the held entry stays")

	require.NoError(t, a.Close())
	b = get(t, c, src, "b", 60)
	require.False(t, b.Hit())
	require.NoError(t, b.Close())
	require.EqualValues(t, 1, c.Stats().Evictions, "A, no longer held, made room")
	h := get(t, c, src, "b", 60)
	require.True(t, h.Hit())
	require.NoError(t, h.Close())
}

func TestLargerThanTheCapIsServedUncached(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	src := &source{}
	require.NoError(t, get(t, c, src, "a", 50).Close())
	h := get(t, c, src, "z", 101)
	require.False(t, h.Hit())
	require.NoError(t, h.Close())
	st := c.Stats()
	require.EqualValues(t, 0, st.Evictions, "nothing is evicted for what cannot fit")
	require.Equal(t, 1, st.Entries)
	require.Len(t, files(t, c.Dir()), 1)
}

func TestConcurrentGetsFillOnce(t *testing.T) {
	c := open(t, t.TempDir(), 1000, nil)
	const n = 8
	var fills atomic.Int32
	release := make(chan struct{})
	fill := func(ctx context.Context, w io.Writer) (int64, error) {
		fills.Add(1)
		<-release
		k, err := w.Write([]byte("model"))
		return int64(k), err
	}
	var wg sync.WaitGroup
	hits := make(chan bool, n)
	for range n {
		wg.Go(func() {
			h, err := c.Get(context.Background(), "k", fill)
			if !assertNoError(t, err) {
				return
			}
			b, err := os.ReadFile(h.Path())
			assertNoError(t, err)
			if string(b) != "model" {
				t.Errorf("read %q", b)
			}
			hits <- h.Hit()
			_ = h.Close()
		})
	}
	require.Eventually(t, func() bool { return fills.Load() == 1 && c.Waiting() == n-1 },
		10*time.Second, time.Millisecond, "one fills, the others wait")
	close(release)
	wg.Wait()
	close(hits)
	nhits := 0
	for h := range hits {
		if h {
			nhits++
		}
	}
	require.EqualValues(t, 1, fills.Load())
	require.Equal(t, n-1, nhits)
	require.Equal(t, modelcache.Stats{MaxBytes: 1000, UsedBytes: 5, Entries: 1, Hits: n - 1, Misses: 1}, c.Stats())
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestFailedFillLeavesNothing(t *testing.T) {
	boom := errors.New("the manager went away")
	for _, tc := range []struct {
		name string
		fill modelcache.FillFunc
		want error
	}{
		{"error midway", func(_ context.Context, w io.Writer) (int64, error) {
			n, _ := w.Write([]byte("half"))
			return int64(n), boom
		}, boom},
		{"size that was not written", func(_ context.Context, w io.Writer) (int64, error) {
			_, err := w.Write([]byte("half"))
			return 8, err
		}, modelcache.ErrShortFill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, t.TempDir(), 100, nil)
			_, err := c.Get(context.Background(), "a", tc.fill)
			require.ErrorIs(t, err, tc.want)
			require.Empty(t, files(t, c.Dir()))
			require.Equal(t, 0, c.Stats().Entries)
			src := &source{}
			h := get(t, c, src, "a", 10)
			require.False(t, h.Hit(), "the next Get fills anew")
			require.NoError(t, h.Close())
		})
	}
}

func TestWaitersFillThemselvesAfterAFailedFill(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), "a", func(context.Context, io.Writer) (int64, error) {
			<-release
			return 0, errors.New("lease lost")
		})
		first <- err
	}()
	second := make(chan *modelcache.Handle, 1)
	src := &source{}
	require.Eventually(t, func() bool { return c.Stats().Misses == 1 }, 10*time.Second, time.Millisecond)
	go func() {
		h, err := c.Get(context.Background(), "a", src.fill("a", 10))
		assertNoError(t, err)
		second <- h
	}()
	require.Eventually(t, func() bool { return c.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	close(release)
	require.Error(t, <-first)
	h := <-second
	require.NotNil(t, h)
	require.False(t, h.Hit())
	require.NoError(t, h.Close())
	require.Equal(t, 1, src.count("a"))
}

func TestRestartKeepsEntries(t *testing.T) {
	dir := t.TempDir()
	src := &source{}
	c, err := modelcache.Open(modelcache.Config{Dir: dir, MaxBytes: 100})
	require.NoError(t, err)
	_, err = modelcache.Open(modelcache.Config{Dir: dir, MaxBytes: 100})
	require.ErrorIs(t, err, modelcache.ErrInUse)
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, get(t, c, src, k, 30).Close())
	}
	h := get(t, c, src, "a", 30) // a is now the most recent
	require.True(t, h.Hit())
	require.NoError(t, h.Close())
	require.NoError(t, c.Close())
	_, err = c.Get(context.Background(), "a", src.fill("a", 30))
	require.ErrorIs(t, err, modelcache.ErrClosed)

	// A crash cut a fill off; someone left a file of their own.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".part-123"), []byte("half"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600))

	// Reopened with room for two: the least recently used, b, goes.
	c = open(t, dir, 60, nil)
	st := c.Stats()
	require.Equal(t, 2, st.Entries)
	require.EqualValues(t, 60, st.UsedBytes)
	require.EqualValues(t, 1, st.Evictions)
	for _, k := range []string{"a", "c"} {
		h := get(t, c, src, k, 30)
		require.True(t, h.Hit(), "%s survived the restart", k)
		require.NoError(t, h.Close())
	}
	require.Equal(t, 1, src.count("c"))
	names := files(t, dir)
	require.Len(t, names, 3)
	require.Contains(t, names, "notes.txt", "files not the cache's stay")
	for _, n := range names {
		require.False(t, strings.HasPrefix(n, ".part-"), "partial files are removed")
	}
}

func TestRemove(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	src := &source{}
	held := get(t, c, src, "a", 10)
	c.Remove("a")
	require.Equal(t, 0, c.Stats().Entries)
	b, err := os.ReadFile(held.Path())
	require.NoError(t, err, "a held entry stays readable")
	require.Equal(t, content("a", 10), b)
	fresh := get(t, c, src, "a", 10)
	require.False(t, fresh.Hit())
	require.NotEqual(t, held.Path(), fresh.Path())
	require.NoError(t, held.Close())
	require.NoFileExists(t, held.Path())
	require.FileExists(t, fresh.Path(), "the old handle's Close leaves the new entry")
	require.NoError(t, fresh.Close())
	c.Remove("nothing")
}

func TestCopyOutIsIndependent(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	src := &source{}
	h := get(t, c, src, "a", 10)
	defer h.Close()
	dst := filepath.Join(t.TempDir(), "in.stl")
	require.NoError(t, modelcache.CopyOut(h.Path(), dst))
	require.NoError(t, os.WriteFile(dst, []byte("overwritten by a converter"), 0o600))
	b, err := os.ReadFile(h.Path())
	require.NoError(t, err)
	require.Equal(t, content("a", 10), b, "writing the copy leaves the cache's file alone")
	require.Error(t, modelcache.CopyOut(h.Path(), dst), "an existing file is not overwritten")
}

func TestGetWaitsWithItsContext(t *testing.T) {
	c := open(t, t.TempDir(), 100, nil)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		h, err := c.Get(context.Background(), "a", func(_ context.Context, w io.Writer) (int64, error) {
			<-release
			n, err := w.Write([]byte("x"))
			return int64(n), err
		})
		if assertNoError(t, err) {
			_ = h.Close()
		}
	}()
	require.Eventually(t, func() bool { return c.Stats().Misses == 1 }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Get(ctx, "a", nil)
	require.ErrorIs(t, err, context.Canceled)
	close(release)
	<-done
	_, err = c.Get(context.Background(), "", nil)
	require.ErrorIs(t, err, modelcache.ErrInvalidKey)
}

func BenchmarkHit(b *testing.B) {
	c := open(b, b.TempDir(), 1<<20, prometheus.NewRegistry())
	src := &source{}
	require.NoError(b, get(b, c, src, "a", 4096).Close())
	key := "a"
	fill := src.fill(key, 4096)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h, err := c.Get(ctx, key, fill)
		if err != nil || !h.Hit() {
			b.Fatal("not a hit", err)
		}
		_ = h.Close()
	}
}
