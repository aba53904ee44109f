// Package modelcache is a farm's disk cache of the files it fetches from
// managers: conversion inputs and the models of streaming sessions. A
// reconversion of an item, or a second viewer of a model, on the same farm
// then reads its files from the farm's disk instead of downloading them
// again (the HOOPS conversion server's localCache, sized in MB by
// localCache.maxSize).
//
// Entries are files in one directory, named by the SHA-256 of their key.
// A key names a file's content: ItemKey builds one from an item, a file
// name and the version its manager gives the file (which changes when the
// file does), so a replaced file is a new key and never served stale.
// Content-addressed keys ("sha256:...") work as well.
//
// The cache holds at most Config.MaxBytes of entries. Inserting one evicts
// the least recently used entries that nobody holds until it fits; an
// entry that cannot fit (larger than the cap, or with every other entry in
// use) is served uncached: a file of its own, removed when its handle is
// closed. Files being filled are not counted.
//
// Get fills a missing entry once however many callers ask for it at once
// (the others wait for that fill), writes it under a temporary name, syncs
// it and renames it into place, so that a failed fill or a crash leaves no
// entry. Entries are read-only files. A restarted farm finds its entries
// again: Open rebuilds the index from the directory, in the order of the
// files' modification times (a hit touches its file), and removes the
// temporary files a crash left.
//
// The package owns the directory's entry files, their index and eviction.
// It does not know what it caches, where it comes from (the fill function
// fetches) or where the caller puts it (copy it out; see Handle.Path).
package modelcache

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrClosed: the cache is closed.
	ErrClosed = errors.New("modelcache: closed")
	// ErrInvalidKey: the empty key.
	ErrInvalidKey = errors.New("modelcache: invalid key")
	// ErrInUse: another process holds the cache directory.
	ErrInUse = errors.New("modelcache: the cache directory is in use by another process")
	// ErrShortFill: a fill function reported another size than it wrote.
	ErrShortFill = errors.New("modelcache: the fill's size does not match what it wrote")
)

// MB is the unit of cache sizes in flags and config files (2^20 bytes).
const MB = 1 << 20

// Config configures a Cache.
type Config struct {
	// Dir holds the entries; it is created if missing. Only files named
	// like entries or temporary files of the cache are ever removed from
	// it. Required.
	Dir string
	// MaxBytes caps the entries' bytes. Required, > 0.
	MaxBytes int64
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none. Caches sharing a
	// registerer share the collectors, and their figures add up.
	Registerer prometheus.Registerer
}

// FillFunc writes an entry's content to w and returns how many bytes it
// wrote. It runs once per miss, with the context of the Get that missed.
type FillFunc func(ctx context.Context, w io.Writer) (int64, error)

// Cache is a size-capped LRU cache of files. Its methods are safe for
// concurrent use.
type Cache struct {
	dir     string
	max     int64
	log     *slog.Logger
	metrics *metrics
	lock    *os.File // flock on the directory's lock file

	mu      sync.Mutex
	entries map[string]*entry // by key hash
	lru     list.List         // of *entry; front: most recently used
	used    int64
	fills   map[string]*fill // running fills by key hash
	stats   Stats
	closed  bool
	waiting int // Gets waiting for another's fill
}

// entry is a file of the cache. An entry out of the index (uncached, or
// removed while in use) loses its file when its last handle closes.
type entry struct {
	hash    string
	path    string
	size    int64
	refs    int
	indexed bool
	elem    *list.Element
}

// fill is a running fill: the Gets of its key wait for done.
type fill struct {
	done chan struct{}
	e    *entry // the filled entry, with a handle held by the filler; nil on failure
}

// Stats are a cache's figures, for a farm's status.
type Stats struct {
	MaxBytes  int64  `json:"max_bytes"`
	UsedBytes int64  `json:"used_bytes"`
	Entries   int    `json:"entries"`
	Pinned    int    `json:"pinned"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	// Uncached counts misses whose file could not be kept: larger than
	// the cap, or no room beside the entries in use.
	Uncached uint64 `json:"uncached"`
}

// Names in the directory.
const (
	lockName   = ".lock"
	partPrefix = ".part-"
	// hashLen is the length of an entry's name: a hex SHA-256.
	hashLen = 2 * sha256.Size
	// idLen is the length of the fill id after an entry's hash: two
	// fills of one key (one removed while in use, the next) get two
	// names.
	idLen = 16
)

// Open opens (or creates) the cache in cfg.Dir and rebuilds its index from
// the files there, evicting the oldest ones if they exceed cfg.MaxBytes.
// Only one process may have a directory open (ErrInUse).
func Open(cfg Config) (_ *Cache, err error) {
	if cfg.Dir == "" || cfg.MaxBytes <= 0 {
		return nil, errors.New("modelcache: a cache needs a directory and a positive size")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	c := &Cache{dir: cfg.Dir, max: cfg.MaxBytes, log: cfg.Logger, entries: map[string]*entry{},
		fills: map[string]*fill{}}
	c.lock, err = os.OpenFile(filepath.Join(cfg.Dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	if err := unix.Flock(int(c.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		c.lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, cfg.Dir)
		}
		return nil, fmt.Errorf("modelcache: lock %s: %w", cfg.Dir, err)
	}
	defer func() {
		if err != nil {
			c.lock.Close()
		}
	}()
	if c.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	c.metrics.capacity.Add(float64(c.max))
	c.log.Info("model cache open", "dir", c.dir, "max_bytes", c.max, "entries", len(c.entries), "used_bytes", c.used)
	return c, nil
}

// load rebuilds the index from the directory.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("modelcache: %w", err)
	}
	type found struct {
		hash, path string
		size       int64
		mod        time.Time
	}
	var all []found
	for _, de := range des {
		name := de.Name()
		kind, hash := ParseName(name)
		path := filepath.Join(c.dir, name)
		switch kind {
		case NamePart:
			// A fill a crash cut off, or an uncached entry.
			if err := os.Remove(path); err != nil {
				c.log.Warn("remove a partial cache file", "file", name, "err", err)
			}
			continue
		case NameEntry:
		default:
			continue
		}
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		all = append(all, found{hash: hash, path: path, size: fi.Size(), mod: fi.ModTime()})
	}
	// Newest first: the first of a hash wins, older copies go.
	slices.SortStableFunc(all, func(a, b found) int { return b.mod.Compare(a.mod) })
	for _, f := range all {
		if _, dup := c.entries[f.hash]; dup {
			_ = os.Remove(f.path)
			continue
		}
		e := &entry{hash: f.hash, path: f.path, size: f.size, indexed: true}
		e.elem = c.lru.PushBack(e)
		c.entries[f.hash] = e
		c.used += f.size
		c.metrics.add(1, f.size)
	}
	c.evict(0)
	return nil
}

// ItemKey is the key of file name of item in the given version: the
// version must change whenever the file does.
func ItemKey(item, name, version string) string {
	return "item\x00" + item + "\x00" + name + "\x00" + version
}

// hashKey is the name stem of key's entry.
func hashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Kinds of names in a cache directory (ParseName).
const (
	NameOther = iota // not the cache's: left alone
	NameEntry        // an entry: <hash>-<fill id>
	NamePart         // a temporary file: .part-<random>
)

// ParseName says what a file name in the cache directory is, and for an
// entry the hash of its key. Names of entries are the key's SHA-256 in
// lower-case hex, a dash and a fill id of 16 lower-case hex digits.
func ParseName(name string) (kind int, hash string) {
	if strings.HasPrefix(name, partPrefix) && len(name) > len(partPrefix) && !strings.ContainsAny(name, `/\`) {
		return NamePart, ""
	}
	if len(name) != hashLen+1+idLen || name[hashLen] != '-' ||
		!lowerHex(name[:hashLen]) || !lowerHex(name[hashLen+1:]) {
		return NameOther, ""
	}
	return NameEntry, name[:hashLen]
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < '0' || b > '9') && (b < 'a' || b > 'f') {
			return false
		}
	}
	return true
}

// entryName is the name of a new entry file of hash.
func entryName(hash string) string {
	var id [idLen / 2]byte
	_, _ = rand.Read(id[:])
	return hash + "-" + hex.EncodeToString(id[:])
}

// Handle is a held entry: it is not evicted until Close. Its file is
// read-only and shared: copy it out rather than hand it to a program that
// might write it.
type Handle struct {
	c    *Cache
	e    *entry
	hit  bool
	once sync.Once
}

// Path is the entry's file.
func (h *Handle) Path() string { return h.e.path }

// Size is the entry's size in bytes.
func (h *Handle) Size() int64 { return h.e.size }

// Hit says whether Get found the entry without a fill of its own.
func (h *Handle) Hit() bool { return h.hit }

// Close lets the entry go. Idempotent.
func (h *Handle) Close() error {
	h.once.Do(func() { h.c.release(h.e) })
	return nil
}

// Get returns a handle on key's entry, running fn to make it when it is
// missing. Concurrent Gets of a key run one fill; when it fails, each
// waiting Get tries its own. A failed fill leaves nothing behind.
func (c *Cache) Get(ctx context.Context, key string, fn FillFunc) (*Handle, error) {
	if key == "" {
		return nil, ErrInvalidKey
	}
	hash := hashKey(key)
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if e := c.entries[hash]; e != nil {
			h := c.holdLocked(e, true)
			c.mu.Unlock()
			// The order of the index survives a restart in the files'
			// times.
			now := time.Now()
			_ = os.Chtimes(e.path, now, now)
			return h, nil
		}
		if f := c.fills[hash]; f != nil {
			c.waiting++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				c.mu.Lock()
				c.waiting--
				c.mu.Unlock()
				return nil, ctx.Err()
			}
			c.mu.Lock()
			c.waiting--
			if e := f.e; e != nil && !e.indexed && e.refs > 0 {
				// An uncached file, still held by its filler: share it.
				h := c.holdLocked(e, true)
				c.mu.Unlock()
				return h, nil
			}
			c.mu.Unlock()
			continue // the entry is in the index, or the fill failed
		}
		f := &fill{done: make(chan struct{})}
		c.fills[hash] = f
		c.stats.Misses++
		c.mu.Unlock()
		c.metrics.misses.Inc()

		e, err := c.fill(ctx, hash, fn)
		c.mu.Lock()
		delete(c.fills, hash)
		f.e = e
		close(f.done)
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return &Handle{c: c, e: e}, nil
	}
}

// holdLocked takes a handle on e.
func (c *Cache) holdLocked(e *entry, hit bool) *Handle {
	e.refs++
	if e.indexed {
		c.lru.MoveToFront(e.elem)
	}
	if hit {
		c.stats.Hits++
		c.metrics.hits.Inc()
	}
	return &Handle{c: c, e: e, hit: hit}
}

// fill runs fn into a temporary file and puts it in the index, or, when it
// cannot fit, returns it uncached. The entry comes with one handle held.
func (c *Cache) fill(ctx context.Context, hash string, fn FillFunc) (*entry, error) {
	tmp, err := os.CreateTemp(c.dir, partPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	cw := &countWriter{w: tmp}
	n, err := fn(ctx, cw)
	if err != nil {
		return nil, err
	}
	if n != cw.n {
		return nil, fmt.Errorf("%w: %d bytes reported, %d written", ErrShortFill, n, cw.n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Synced before it is renamed: a crash leaves the whole file or a
	// temporary one, never a short entry.
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	ok = true
	// The file's time orders the index after a restart; the kernel's
	// write time is too coarse to tell two quick fills apart.
	now := time.Now()
	_ = os.Chtimes(tmp.Name(), now, now)
	e := &entry{hash: hash, path: tmp.Name(), size: n, refs: 1}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || !c.evict(n) {
		// Served from the temporary file, removed at Close (or at the
		// next Open after a crash).
		c.stats.Uncached++
		c.log.Debug("cache entry served uncached", "bytes", n, "max_bytes", c.max)
		return e, nil
	}
	path := filepath.Join(c.dir, entryName(hash))
	if err := os.Rename(tmp.Name(), path); err != nil {
		c.log.Warn("keep a cache entry", "err", err)
		c.stats.Uncached++
		return e, nil
	}
	e.path, e.indexed = path, true
	e.elem = c.lru.PushFront(e)
	c.entries[hash] = e
	c.used += n
	c.metrics.add(1, n)
	return e, nil
}

// evict removes least recently used entries that nobody holds until n
// more bytes fit, and says whether they do. It evicts nothing when they
// cannot fit anyway.
func (c *Cache) evict(n int64) bool {
	if n > c.max {
		return false
	}
	free := c.max - c.used
	if free >= n {
		return true
	}
	for el := c.lru.Back(); el != nil && free < n; el = el.Prev() {
		if e := el.Value.(*entry); e.refs == 0 {
			free += e.size
		}
	}
	if free < n {
		return false
	}
	for el := c.lru.Back(); el != nil && c.max-c.used < n; {
		e := el.Value.(*entry)
		el = el.Prev()
		if e.refs > 0 {
			continue
		}
		c.dropLocked(e)
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("remove an evicted cache entry", "err", err)
		}
		c.stats.Evictions++
		c.metrics.evictions.Inc()
	}
	return true
}

// dropLocked takes e out of the index.
func (c *Cache) dropLocked(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.hash)
	e.indexed, e.elem = false, nil
	c.used -= e.size
	c.metrics.add(-1, -e.size)
}

// release lets one handle on e go; the file of an entry out of the index
// goes with its last handle.
func (c *Cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && !e.indexed {
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("remove an uncached file", "err", err)
		}
	}
}

// Remove drops key's entry, for a caller that found it wrong. A held entry
// stays readable until its handles close; the next Get fills anew.
func (c *Cache) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[hashKey(key)]
	if e == nil {
		return
	}
	c.dropLocked(e)
	if e.refs == 0 {
		_ = os.Remove(e.path)
	}
}

// Stats returns the cache's figures.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.MaxBytes, s.UsedBytes, s.Entries = c.max, c.used, len(c.entries)
	for _, e := range c.entries {
		if e.refs > 0 {
			s.Pinned++
		}
	}
	return s
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// MaxBytes is the cap.
func (c *Cache) MaxBytes() int64 { return c.max }

// Close closes the cache: later Gets fail with ErrClosed, held handles
// stay valid, the entries stay on disk for the next Open. Idempotent.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.metrics.add(-len(c.entries), -c.used)
	c.metrics.capacity.Sub(float64(c.max))
	return c.lock.Close() // and with it the flock
}

type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// CopyOut copies the file at src to a new file dst (mode 0600) for a
// program that may write or remove it without touching the cache: a
// reflink where the filesystem shares blocks (btrfs, XFS), else a copy in
// the kernel (copy_file_range).
func CopyOut(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		_, err = io.Copy(out, in)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(dst)
	}
	return err
}

// DefaultMaxBytes is the default cap: 1024 MB.
const DefaultMaxBytes = 1024 * MB
