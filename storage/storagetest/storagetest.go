// Package storagetest is the conformance suite of storage.Storage: every
// backend runs Run, so that the filesystem and S3 behave alike, down to
// their errors. HeapFlat is the streaming check, for backends whose Put
// should not buffer.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/storage"
)

// clockSlack bounds the gap between the test's clock and the backend's
// (the same machine's, or an S3 server's).
const clockSlack = 2 * time.Second

// Run runs the suite. Each subtest calls open for an empty storage of its
// own (for S3, a bucket or prefix of its own). Subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) storage.Storage) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st storage.Storage)
	}{
		{"PutOpen", testPutOpen},
		{"Empty", testEmpty},
		{"Overwrite", testOverwrite},
		{"NotFound", testNotFound},
		{"InvalidKeys", testInvalidKeys},
		{"Names", testNames},
		{"Seek", testSeek},
		{"ServeContent", testServeContent},
		{"OpenSurvivesPut", testOpenSurvivesPut},
		{"FailedPut", testFailedPut},
		{"CanceledPut", testCanceledPut},
		{"List", testList},
		{"Delete", testDelete},
		{"DeletePrefix", testDeletePrefix},
		{"WholeObjects", testWholeObjects},
		{"ConcurrentPuts", testConcurrentPuts},
		{"LocalPath", testLocalPath},
		{"Copy", testCopy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// Put stores body under key or fails the test.
func Put(t testing.TB, st storage.Storage, key, body string) {
	t.Helper()
	n, err := st.Put(context.Background(), key, strings.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, int64(len(body)), n)
}

// Read returns the object's bytes or fails the test.
func Read(t testing.TB, st storage.Storage, key string) string {
	t.Helper()
	obj, err := st.Open(context.Background(), key)
	require.NoError(t, err)
	defer obj.Close()
	b, err := io.ReadAll(obj)
	require.NoError(t, err)
	return string(b)
}

func keys(infos []storage.Info) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Key
	}
	return out
}

func testPutOpen(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	before := time.Now()
	Put(t, st, "items/a/original/part.step", "ISO-10303-21;")
	obj, err := st.Open(ctx, "items/a/original/part.step")
	require.NoError(t, err)
	defer obj.Close()
	info := obj.Info()
	require.Equal(t, "items/a/original/part.step", info.Key)
	require.Equal(t, int64(13), info.Size)
	require.WithinRange(t, info.ModTime, before.Add(-clockSlack), time.Now().Add(clockSlack))
	b, err := io.ReadAll(obj)
	require.NoError(t, err)
	require.Equal(t, "ISO-10303-21;", string(b))

	stat, err := st.Stat(ctx, "items/a/original/part.step")
	require.NoError(t, err)
	require.Equal(t, info.Size, stat.Size)
	require.Equal(t, info.Key, stat.Key)
	require.WithinDuration(t, info.ModTime, stat.ModTime, time.Second)
}

func testEmpty(t *testing.T, st storage.Storage) {
	Put(t, st, "empty", "")
	require.Empty(t, Read(t, st, "empty"))
	info, err := st.Stat(t.Context(), "empty")
	require.NoError(t, err)
	require.Zero(t, info.Size)
}

func testOverwrite(t *testing.T, st storage.Storage) {
	Put(t, st, "k", "a long first version")
	Put(t, st, "k", "short")
	require.Equal(t, "short", Read(t, st, "k"))
	info, err := st.Stat(t.Context(), "k")
	require.NoError(t, err)
	require.Equal(t, int64(5), info.Size)
}

func testNotFound(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	Put(t, st, "dir/file", "x")
	for _, key := range []string{"missing", "dir/missing", "dir", "dir/file/below", "di"} {
		t.Run(key, func(t *testing.T) {
			_, err := st.Open(ctx, key)
			require.ErrorIs(t, err, storage.ErrNotFound)
			_, err = st.Stat(ctx, key)
			require.ErrorIs(t, err, storage.ErrNotFound)
			require.NoError(t, st.Delete(ctx, key), "deletes are idempotent")
		})
	}
	require.Equal(t, "x", Read(t, st, "dir/file"))
}

// InvalidKeys are keys every backend refuses with ErrInvalidKey.
var InvalidKeys = []string{
	"", "/", "/abs", "a/", "a//b", ".", "..", "../x", "a/../b", "a/./b", "./a", "a/..",
	`a\b`, `..\x`, "a\x00b", "a\nb", "a\x7fb", "\xff", "a/.drover-tmp-1",
	strings.Repeat("x", storage.MaxElemLen+1),
	strings.Repeat("a/", storage.MaxKeyLen/2) + "a",
}

func testInvalidKeys(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	for _, key := range InvalidKeys {
		t.Run(fmt.Sprintf("%q", truncate(key)), func(t *testing.T) {
			_, err := st.Put(ctx, key, strings.NewReader("x"))
			require.ErrorIs(t, err, storage.ErrInvalidKey)
			_, err = st.Open(ctx, key)
			require.ErrorIs(t, err, storage.ErrInvalidKey)
			_, err = st.Stat(ctx, key)
			require.ErrorIs(t, err, storage.ErrInvalidKey)
			require.ErrorIs(t, st.Delete(ctx, key), storage.ErrInvalidKey)
			if lp, ok := st.(storage.LocalPather); ok {
				_, err = lp.LocalPath(key)
				require.ErrorIs(t, err, storage.ErrInvalidKey)
			}
			if key != "" && key != "a/" { // valid prefixes
				_, err = st.List(ctx, key)
				require.ErrorIs(t, err, storage.ErrInvalidKey)
				_, err = st.DeletePrefix(ctx, key)
				require.ErrorIs(t, err, storage.ErrInvalidKey)
			}
		})
	}
	_, err := st.DeletePrefix(ctx, "")
	require.ErrorIs(t, err, storage.ErrInvalidKey)
	all, err := st.List(ctx, "")
	require.NoError(t, err)
	require.Empty(t, all, "nothing was written")
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// testNames: what users name their files (spaces, Unicode, dots, a
// leading dot) is a valid key element.
func testNames(t *testing.T, st storage.Storage) {
	names := []string{"part one.step", "Baugruppe-Ä.stp", "模型.glb", "..dots..", ".hidden", "a.b.c", "x..y", "-", "#&?=+%"}
	for _, n := range names {
		Put(t, st, "items/n/"+n, n)
	}
	for _, n := range names {
		require.Equal(t, n, Read(t, st, "items/n/"+n))
	}
	list, err := st.List(t.Context(), "items/n/")
	require.NoError(t, err)
	require.Len(t, list, len(names))
}

func testSeek(t *testing.T, st storage.Storage) {
	body := strings.Repeat("0123456789", 1000)
	Put(t, st, "seek", body)
	obj, err := st.Open(t.Context(), "seek")
	require.NoError(t, err)
	defer obj.Close()
	end, err := obj.Seek(0, io.SeekEnd)
	require.NoError(t, err)
	require.Equal(t, int64(len(body)), end)
	_, err = obj.Seek(5005, io.SeekStart)
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = io.ReadFull(obj, buf)
	require.NoError(t, err)
	require.Equal(t, "5678901234", string(buf))
	_, err = obj.Seek(-3, io.SeekCurrent)
	require.NoError(t, err)
	_, err = io.ReadFull(obj, buf[:3])
	require.NoError(t, err)
	require.Equal(t, "234", string(buf[:3]))
}

// testServeContent: an Object is what http.ServeContent serves, ranges
// included.
func testServeContent(t *testing.T, st storage.Storage) {
	body := strings.Repeat("abcdefghij", 100)
	Put(t, st, "items/s/outputs/m.glb", body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		obj, err := st.Open(r.Context(), "items/s/outputs/m.glb")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer obj.Close()
		http.ServeContent(w, r, "m.glb", obj.Info().ModTime, obj)
	}))
	defer srv.Close()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, "abcdefghij", string(b))
	require.Equal(t, "bytes 10-19/1000", resp.Header.Get("Content-Range"))
	require.NotEmpty(t, resp.Header.Get("Last-Modified"))

	req.Header.Del("Range")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, err = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, body, string(b))
}

// testOpenSurvivesPut: an open object replaced by a Put reads the old
// bytes (a file stays open) or fails (an object store can pin the
// version it opened but not keep it), never a mix of the two.
func testOpenSurvivesPut(t *testing.T, st storage.Storage) {
	old := strings.Repeat("old contents ", 1000)
	Put(t, st, "k", old)
	obj, err := st.Open(t.Context(), "k")
	require.NoError(t, err)
	defer obj.Close()
	head := make([]byte, 100)
	_, err = io.ReadFull(obj, head)
	require.NoError(t, err)
	Put(t, st, "k", strings.Repeat("new", 5000))
	rest, err := io.ReadAll(obj)
	if err == nil {
		require.Equal(t, old, string(head)+string(rest))
	}
	if _, err := obj.Seek(0, io.SeekStart); err == nil {
		if all, err := io.ReadAll(obj); err == nil {
			require.Equal(t, old, string(all))
		}
	}
	require.Equal(t, strings.Repeat("new", 5000), Read(t, st, "k"))
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

var errReader = errors.New("storagetest: the reader broke")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errReader
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func testFailedPut(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	Put(t, st, "items/f/keep", "previous")
	_, err := st.Put(ctx, "items/f/keep", &failingReader{n: 1 << 20})
	require.ErrorIs(t, err, errReader)
	require.Equal(t, "previous", Read(t, st, "items/f/keep"), "a failed Put leaves the old object")

	_, err = st.Put(ctx, "items/f/new", &failingReader{n: 100})
	require.ErrorIs(t, err, errReader)
	_, err = st.Stat(ctx, "items/f/new")
	require.ErrorIs(t, err, storage.ErrNotFound, "a failed Put leaves no object")
	list, err := st.List(ctx, "")
	require.NoError(t, err)
	require.Equal(t, []string{"items/f/keep"}, keys(list), "no partial or temporary object is listed")
}

// ctxReader cancels its context after n bytes and then keeps yielding.
type ctxReader struct {
	n      int
	cancel context.CancelFunc
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
	}
	r.n -= len(p)
	return len(p), nil
}

func testCanceledPut(t *testing.T, st storage.Storage) {
	ctx, cancel := context.WithCancel(t.Context())
	_, err := st.Put(ctx, "c", &ctxReader{n: 1 << 20, cancel: cancel})
	require.ErrorIs(t, err, context.Canceled)
	_, err = st.Stat(t.Context(), "c")
	require.ErrorIs(t, err, storage.ErrNotFound)

	_, err = st.Put(ctx, "c", strings.NewReader("x"))
	require.ErrorIs(t, err, context.Canceled, "a Put with an ended context stores nothing")
	list, err := st.List(t.Context(), "")
	require.NoError(t, err)
	require.Empty(t, list)
}

func testList(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	all := []string{"a.b", "a/b", "a/c/d", "a0", "ab/c", "b/x", "items/1/item.json", "items/1/original/m.stl", "items/12/item.json"}
	for _, k := range all {
		Put(t, st, k, k)
	}
	for _, tt := range []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"a", []string{"a.b", "a/b", "a/c/d", "a0", "ab/c"}},
		{"a/", []string{"a/b", "a/c/d"}},
		{"a/c", []string{"a/c/d"}},
		{"a/c/d", []string{"a/c/d"}},
		{"items/1", []string{"items/1/item.json", "items/1/original/m.stl", "items/12/item.json"}},
		{"items/1/", []string{"items/1/item.json", "items/1/original/m.stl"}},
		{"items/2", []string{}},
		{"zzz/", []string{}},
		{"a/c/d/", []string{}},
	} {
		t.Run(tt.prefix, func(t *testing.T) {
			list, err := st.List(ctx, tt.prefix)
			require.NoError(t, err)
			require.Equal(t, tt.want, keys(list))
			for _, in := range list {
				require.Equal(t, int64(len(in.Key)), in.Size)
			}
		})
	}
}

func testDelete(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	Put(t, st, "d/one", "1")
	Put(t, st, "d/two", "2")
	require.NoError(t, st.Delete(ctx, "d/one"))
	_, err := st.Stat(ctx, "d/one")
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.NoError(t, st.Delete(ctx, "d/one"), "again")
	require.Equal(t, "2", Read(t, st, "d/two"))
	Put(t, st, "d/one", "back")
	require.Equal(t, "back", Read(t, st, "d/one"))
}

func testDeletePrefix(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	for _, k := range []string{"items/1/item.json", "items/1/original/m.stl", "items/1/outputs/m.glb", "items/12/item.json", "items/2/item.json"} {
		Put(t, st, k, k)
	}
	n, err := st.DeletePrefix(ctx, "items/1/")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	list, err := st.List(ctx, "")
	require.NoError(t, err)
	require.Equal(t, []string{"items/12/item.json", "items/2/item.json"}, keys(list))

	n, err = st.DeletePrefix(ctx, "items/1/")
	require.NoError(t, err)
	require.Zero(t, n, "again")

	// Once its objects are gone, the prefix takes new ones.
	Put(t, st, "items/1/original/m.stl", "again")
	require.Equal(t, "again", Read(t, st, "items/1/original/m.stl"))

	n, err = st.DeletePrefix(ctx, "items/")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	list, err = st.List(ctx, "")
	require.NoError(t, err)
	require.Empty(t, list)
}

// testWholeObjects: a reader never sees part of an object while Puts
// replace it.
func testWholeObjects(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	versions := []string{strings.Repeat("a", 300<<10), strings.Repeat("b", 100<<10)}
	Put(t, st, "w", versions[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := st.Put(ctx, "w", strings.NewReader(versions[i%2])); err != nil {
				t.Error(err)
				return
			}
		}
	})
	deadline := time.Now().Add(500 * time.Millisecond)
	reads := 0
	for time.Now().Before(deadline) || reads < 20 {
		got := Read(t, st, "w")
		if got != versions[0] && got != versions[1] {
			close(stop)
			wg.Wait()
			t.Fatalf("read %d bytes that are neither version", len(got))
		}
		reads++
	}
	close(stop)
	wg.Wait()
}

func testConcurrentPuts(t *testing.T, st storage.Storage) {
	ctx := t.Context()
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := strings.Repeat(string(rune('a'+i)), 64<<10)
			if _, err := st.Put(ctx, "items/c/same", strings.NewReader(body)); err != nil {
				t.Error(err)
			}
			if _, err := st.Put(ctx, fmt.Sprintf("items/c/own/%d", i), strings.NewReader(body)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := Read(t, st, "items/c/same")
	require.Len(t, got, 64<<10)
	require.Equal(t, strings.Repeat(got[:1], 64<<10), got, "one Put's bytes, whole")
	list, err := st.List(ctx, "items/c/own/")
	require.NoError(t, err)
	require.Len(t, list, n)
}

// testCopy runs for backends with the Copier capability.
func testCopy(t *testing.T, st storage.Storage) {
	c, ok := st.(storage.Copier)
	if !ok {
		t.Skip("no Copy capability")
	}
	ctx := t.Context()
	Put(t, st, "items/c/staging/1-a/m.glb", "staged")
	Put(t, st, "items/c/outputs/m.glb", "an older output")
	require.NoError(t, c.Copy(ctx, "items/c/staging/1-a/m.glb", "items/c/outputs/m.glb"))
	require.Equal(t, "staged", Read(t, st, "items/c/outputs/m.glb"), "Copy replaces")
	require.Equal(t, "staged", Read(t, st, "items/c/staging/1-a/m.glb"), "and leaves the source")
	require.ErrorIs(t, c.Copy(ctx, "items/c/missing", "items/c/outputs/x"), storage.ErrNotFound)
	_, err := st.Stat(ctx, "items/c/outputs/x")
	require.ErrorIs(t, err, storage.ErrNotFound)
	for _, key := range InvalidKeys {
		require.ErrorIs(t, c.Copy(ctx, key, "items/c/outputs/y"), storage.ErrInvalidKey)
		require.ErrorIs(t, c.Copy(ctx, "items/c/outputs/m.glb", key), storage.ErrInvalidKey)
	}
}

// testLocalPath runs for backends with the capability.
func testLocalPath(t *testing.T, st storage.Storage) {
	lp, ok := st.(storage.LocalPather)
	if !ok {
		t.Skip("no LocalPath capability")
	}
	Put(t, st, "items/l/original/m.stl", "solid")
	p, err := lp.LocalPath("items/l/original/m.stl")
	require.NoError(t, err)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "solid", string(b))
	_, err = lp.LocalPath("items/l/original/missing")
	require.ErrorIs(t, err, storage.ErrNotFound)
	_, err = lp.LocalPath("items/l/original")
	require.ErrorIs(t, err, storage.ErrNotFound, "a directory is no object")
}

// Pattern is an endless reader of a repeating pattern: a large upload
// made on the fly, never held in memory.
type Pattern struct{ off int }

const pattern = "drover streams uploads to storage; "

// patternBlock is pattern repeated: Read copies from it in large pieces.
var patternBlock = []byte(strings.Repeat(pattern, (64<<10)/len(pattern)+1))

func (p *Pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := copy(b[n:], patternBlock[p.off:len(patternBlock)-len(pattern)+p.off])
		n += k
		p.off = (p.off + k) % len(pattern)
	}
	return n, nil
}

// heapWatch is a reader of size bytes of Pattern that samples the heap
// every sampleEvery bytes it yields.
type heapWatch struct {
	r    io.Reader
	left int64
	next int64 // bytes until the next sample
	peak uint64
}

const sampleEvery = 32 << 20

func (h *heapWatch) Read(b []byte) (int, error) {
	if h.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > h.left {
		b = b[:h.left]
	}
	n, err := h.r.Read(b)
	h.left -= int64(n)
	if h.next -= int64(n); h.next <= 0 {
		h.next = sampleEvery
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peak = max(h.peak, ms.HeapInuse)
	}
	return n, err
}

// HeapFlat puts size bytes made on the fly under key and checks that the
// heap in use never grew by more than limit while it did: Put streams.
// It returns the time the Put took.
func HeapFlat(t testing.TB, st storage.Storage, key string, size int64, limit uint64) time.Duration {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	r := &heapWatch{r: &Pattern{}, left: size, next: sampleEvery}
	start := time.Now()
	n, err := st.Put(context.Background(), key, r)
	took := time.Since(start)
	require.NoError(t, err)
	require.Equal(t, size, n)
	runtime.ReadMemStats(&ms)
	peak := max(r.peak, ms.HeapInuse)
	growth := uint64(0)
	if peak > before {
		growth = peak - before
	}
	t.Logf("put %d MiB in %v; heap in use %d MiB before, %d MiB at most during (limit +%d MiB)",
		size>>20, took.Round(time.Millisecond), before>>20, peak>>20, limit>>20)
	require.Less(t, growth, limit, "the heap grew by %d MiB while %d MiB were stored", growth>>20, size>>20)

	info, err := st.Stat(context.Background(), key)
	require.NoError(t, err)
	require.Equal(t, size, info.Size)
	// Spot-check the bytes: the start and a piece in the middle.
	obj, err := st.Open(context.Background(), key)
	require.NoError(t, err)
	defer obj.Close()
	want := make([]byte, 4096)
	_, _ = (&Pattern{}).Read(want)
	got := make([]byte, len(want))
	_, err = io.ReadFull(obj, got)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got))
	mid := size / 2
	_, err = obj.Seek(mid, io.SeekStart)
	require.NoError(t, err)
	_, err = io.ReadFull(obj, got)
	require.NoError(t, err)
	p := &Pattern{off: int(mid % int64(len(pattern)))}
	_, _ = p.Read(want)
	require.True(t, bytes.Equal(want, got))
	return took
}
