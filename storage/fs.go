package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FS is Storage in a directory of the local filesystem (or one that
// several hosts mount). Key "a/b/c" is the file DIR/a/b/c.
//
// Every file operation goes through an os.Root of the directory: a
// symbolic link in it that points outside (planted, or left by a tool) is
// refused, not followed. Put writes DIR/a/b/.drover-tmp-<random>, syncs
// it, renames it to DIR/a/b/c and syncs the directory: readers see whole
// files only, and an acknowledged Put survives a crash. A crash mid-Put
// leaves a temporary file that List does not show and Sweep removes.
//
// A key cannot name both an object and a "directory" of others ("a" and
// "a/b"), as it could on an object store; drover's layouts never do.
type FS struct {
	dir  string
	root *os.Root

	closeOnce sync.Once
	closeErr  error
}

var (
	_ Storage     = (*FS)(nil)
	_ LocalPather = (*FS)(nil)
	_ io.Closer   = (*FS)(nil)
)

// copyBufSize is the piece Put reads and writes at a time.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// NewFS opens the storage in dir, creating the directory if needed.
func NewFS(dir string) (*FS, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &FS{dir: abs, root: root}, nil
}

// Dir is the storage's directory, absolute.
func (f *FS) Dir() string { return f.dir }

// Close releases the directory. Later calls fail. Closing again returns
// the first result.
func (f *FS) Close() error {
	f.closeOnce.Do(func() { f.closeErr = f.root.Close() })
	return f.closeErr
}

// Put implements Storage.
func (f *FS) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := ValidateKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	dir := path.Dir(key)
	tmp, file, err := f.createTemp(dir)
	if err != nil {
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	n, err := copyCtx(ctx, file, r)
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.root.Rename(tmp, key)
	}
	if err == nil {
		err = f.syncDir(dir)
	}
	if err != nil {
		_ = f.root.Remove(tmp)
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	return n, nil
}

// createTemp creates a temporary file in dir (a key's directory, "." for
// the top), making dir first. A DeletePrefix may remove dir between the
// two steps; then it tries again.
func (f *FS) createTemp(dir string) (string, *os.File, error) {
	for attempt := 0; ; attempt++ {
		if dir != "." {
			if err := f.root.MkdirAll(dir, 0o755); err != nil {
				return "", nil, err
			}
		}
		var rnd [12]byte
		_, _ = rand.Read(rnd[:])
		name := path.Join(dir, TempPrefix+hex.EncodeToString(rnd[:]))
		file, err := f.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
			continue
		}
		return name, file, err
	}
}

// syncDir makes a rename in dir durable. Filesystems that cannot sync a
// directory say EINVAL; their renames are as durable as they get.
func (f *FS) syncDir(dir string) error {
	d, err := f.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}

// copyCtx copies r to w in pieces, stopping when ctx ends.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// notFound reports errors that mean "no such object": a missing file, or
// a key that runs through a file as if it were a directory.
func notFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Open implements Storage.
func (f *FS) Open(ctx context.Context, key string) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", key, err)
	}
	file, err := f.root.Open(key)
	if notFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", key, err)
	}
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("storage: open %s: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		_ = file.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return &fileObject{File: file, info: Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}}, nil
}

type fileObject struct {
	*os.File
	info Info
}

func (o *fileObject) Info() Info { return o.info }

// Stat implements Storage.
func (f *FS) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("storage: stat %s: %w", key, err)
	}
	st, err := f.root.Stat(key)
	if notFound(err) || err == nil && !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Info{}, fmt.Errorf("storage: stat %s: %w", key, err)
	}
	return Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements Storage. It walks only the directories that can hold
// keys with the prefix, and leaves out temporary files and anything that
// is not a regular file (symbolic links included).
func (f *FS) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	out := []Info{}
	err := f.walk(ctx, prefix, func(key string, d fs.DirEntry) error {
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), TempPrefix) {
			return nil
		}
		st, err := d.Info()
		if notFound(err) { // deleted meanwhile
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, Info{Key: key, Size: st.Size(), ModTime: st.ModTime()})
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// walk calls file for every non-directory whose key starts with prefix,
// and then dir, if not nil, for every directory whose key followed by a
// slash does, deepest first. A start directory that does not exist holds
// nothing; entries that vanish during the walk are skipped.
func (f *FS) walk(ctx context.Context, prefix string, file func(key string, d fs.DirEntry) error, dir func(key string) error) error {
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
	}
	var dirs []string
	err := fs.WalkDir(f.root.FS(), start, func(key string, d fs.DirEntry, err error) error {
		if err != nil {
			if notFound(err) {
				if key == start {
					return fs.SkipAll
				}
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if key == "." {
				return nil
			}
			// Descend only where keys with the prefix can be.
			k := key + "/"
			if !strings.HasPrefix(k, prefix) && !strings.HasPrefix(prefix, k) {
				return fs.SkipDir
			}
			if strings.HasPrefix(k, prefix) {
				dirs = append(dirs, key)
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		return file(key, d)
	})
	if err != nil || dir == nil {
		return err
	}
	for _, d := range slices.Backward(dirs) { // WalkDir visits parents first
		if err := dir(d); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Storage.
func (f *FS) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	st, err := f.root.Lstat(key)
	if notFound(err) || err == nil && st.IsDir() {
		return nil
	}
	if err == nil {
		err = f.root.Remove(key)
	}
	if err != nil && !notFound(err) {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	return nil
}

// DeletePrefix implements Storage. It also removes the directories that
// the prefix covers once they are empty.
func (f *FS) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: the empty prefix (everything) cannot be deleted", ErrInvalidKey)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return 0, err
	}
	n := 0
	err := f.walk(ctx, prefix, func(key string, d fs.DirEntry) error {
		err := f.root.Remove(key)
		switch {
		case notFound(err):
			return nil
		case err != nil:
			return err
		}
		if !strings.HasPrefix(d.Name(), TempPrefix) && d.Type().IsRegular() {
			n++
		}
		return nil
	}, func(key string) error {
		// Not empty: a Put raced in, or something other than a file is
		// there. Either way the directory stays.
		_ = f.root.Remove(key)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("storage: delete prefix %q: %w", prefix, err)
	}
	return n, nil
}

// LocalPath implements LocalPather. The path is checked to run through no
// symbolic link below the directory, so that a converter given it reads
// the object and nothing else; the directory is drover's, and nothing
// but drover should change it while the converter runs.
func (f *FS) LocalPath(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	elems := strings.Split(key, "/")
	for i := range elems {
		p := strings.Join(elems[:i+1], "/")
		st, err := f.root.Lstat(p)
		if notFound(err) {
			return "", fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		if err != nil {
			return "", fmt.Errorf("storage: local path %s: %w", key, err)
		}
		last := i == len(elems)-1
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			return "", fmt.Errorf("storage: local path %s: %s is a symbolic link", key, p)
		case last && !st.Mode().IsRegular():
			return "", fmt.Errorf("%w: %s", ErrNotFound, key)
		case !last && !st.IsDir():
			return "", fmt.Errorf("%w: %s", ErrNotFound, key)
		}
	}
	return filepath.Join(f.dir, filepath.FromSlash(key)), nil
}

// Sweep removes the temporary files of Puts that a crash interrupted:
// those older than age (a Put that is still running keeps writing its
// file, so its modification time stays recent). It returns how many it
// removed. Run it at start, with an age well above the longest upload.
func (f *FS) Sweep(ctx context.Context, age time.Duration) (int, error) {
	cutoff := time.Now().Add(-age)
	n := 0
	err := f.walk(ctx, "", func(key string, d fs.DirEntry) error {
		if !strings.HasPrefix(d.Name(), TempPrefix) {
			return nil
		}
		st, err := d.Info()
		if notFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.ModTime().After(cutoff) {
			return nil
		}
		if err := f.root.Remove(key); err != nil && !notFound(err) {
			return err
		}
		n++
		return nil
	}, nil)
	if err != nil {
		return n, fmt.Errorf("storage: sweep: %w", err)
	}
	return n, nil
}
