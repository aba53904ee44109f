package farm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/drover-dev/drover/farmapi"
)

// Session directories (HOOPS streamingSession / enableStreamAccess). A
// start with StartOptions.SessionDir gets a fresh directory of its own as
// {{.ModelDirs}}, under Config.SessionsDir: the streaming session's model
// directory. AddSessionFiles fetches files into it (ModelFetcher) while
// the instance runs. The directory is 0555 and its files 0444: the
// instance reads them and cannot change them (a container gets it mounted
// read-only as well). Files arrive whole: each is written under a
// temporary name beside the directories and renamed into place. The
// directory is removed when the instance exits, however it exits, or when
// its start fails.

// ModelFetcher fetches one file of a streaming session's model: it writes
// the file's bytes to w and returns how many it wrote. The farm's model
// cache wraps one (a hit copies from the cache instead of downloading).
type ModelFetcher interface {
	FetchModel(ctx context.Context, f farmapi.ModelFile, w io.Writer) (int64, error)
}

// ModelFetcherFunc adapts a function to ModelFetcher.
type ModelFetcherFunc func(ctx context.Context, f farmapi.ModelFile, w io.Writer) (int64, error)

// FetchModel calls fn.
func (fn ModelFetcherFunc) FetchModel(ctx context.Context, f farmapi.ModelFile, w io.Writer) (int64, error) {
	return fn(ctx, f, w)
}

var _ ModelFetcher = ModelFetcherFunc(nil)

const (
	sessionDirMode  = 0o555
	sessionFileMode = 0o444
	// incomingPrefix names the temporary files of AddSessionFiles, beside
	// the session directories.
	incomingPrefix = ".incoming-"
)

// setupSessions prepares the root of the session directories: cfg's, or a
// temporary one that Close removes.
func (f *Farm) setupSessions(cfg Config) error {
	f.models = withCache(cfg.Cache, cfg.Models)
	if cfg.SessionsDir != "" {
		abs, err := filepath.Abs(cfg.SessionsDir)
		if err != nil {
			return fmt.Errorf("farm: sessions directory: %w", err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return fmt.Errorf("farm: sessions directory: %w", err)
		}
		f.sessionsDir = abs
		f.sweepSessions()
		return nil
	}
	stream := false
	for _, p := range f.pools {
		stream = stream || p.protocol == ProtocolStream
	}
	if !stream {
		return nil // made on the first start that needs it
	}
	return f.tempSessions()
}

func (f *Farm) tempSessions() error {
	f.sessionsMu.Lock()
	defer f.sessionsMu.Unlock()
	if f.sessionsDir != "" {
		return nil
	}
	dir, err := os.MkdirTemp("", "drover-sessions-")
	if err != nil {
		return fmt.Errorf("farm: sessions directory: %w", err)
	}
	f.sessionsDir, f.sessionsTemp = dir, true
	return nil
}

// sweepSessions removes what a previous run of the farm left in its
// sessions directory (a crash, a SIGKILL): the session directories of its
// pools and temporary files, nothing else. Its instances are gone by now
// (New killed them), so no session uses them.
func (f *Farm) sweepSessions() {
	des, err := os.ReadDir(f.sessionsDir)
	if err != nil {
		f.log.Warn("sweep the sessions directory", "dir", f.sessionsDir, "err", err)
		return
	}
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, incomingPrefix) && (!de.IsDir() || !f.sessionDirName(name)) {
			continue
		}
		f.removeSessionDir(filepath.Join(f.sessionsDir, name))
	}
}

// sessionDirName reports whether name is one newSessionDir makes: a pool
// of the farm's, a dash and digits.
func (f *Farm) sessionDirName(name string) bool {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 || i == len(name)-1 {
		return false
	}
	if _, ok := f.pools[name[:i]]; !ok {
		return false
	}
	return strings.Trim(name[i+1:], "0123456789") == ""
}

// closeSessions removes a temporary sessions root.
func (f *Farm) closeSessions() {
	f.sessionsMu.Lock()
	defer f.sessionsMu.Unlock()
	if f.sessionsTemp {
		if err := os.RemoveAll(f.sessionsDir); err != nil {
			f.log.Warn("remove the sessions directory", "dir", f.sessionsDir, "err", err)
		}
		f.sessionsTemp = false
	}
}

// newSessionDir makes an empty session directory for a start.
func (f *Farm) newSessionDir(pool string) (string, error) {
	if f.sessionsDir == "" {
		if err := f.tempSessions(); err != nil {
			return "", err
		}
	}
	dir, err := os.MkdirTemp(f.sessionsDir, pool+"-")
	if err != nil {
		return "", fmt.Errorf("farm: session directory: %w", err)
	}
	if err := os.Chmod(dir, sessionDirMode); err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("farm: session directory: %w", err)
	}
	return dir, nil
}

// removeSessionDir removes a session directory and what is in it.
func (f *Farm) removeSessionDir(dir string) {
	if dir == "" {
		return
	}
	f.sessionsMu.Lock()
	defer f.sessionsMu.Unlock()
	_ = os.Chmod(dir, 0o755) // RemoveAll needs to unlink the files
	if err := os.RemoveAll(dir); err != nil {
		f.log.Warn("remove a session directory", "dir", dir, "err", err)
		return
	}
	f.log.Debug("session directory removed", "dir", dir)
}

// CheckFileName accepts the name of a file in a session directory; see
// farmapi.CheckFileName.
func CheckFileName(name string) error { return farmapi.CheckFileName(name) }

// AddSessionFiles fetches files into the session directory of the ready
// instance id, read-only; a file of the same name is replaced. It fails
// with ErrNotFound for an unknown instance, ErrNoSessionDir for one
// started without a session directory, ErrBadModel for a bad name and
// ErrModelFetch when a file could not be fetched; the files before the
// failing one are in place.
func (f *Farm) AddSessionFiles(ctx context.Context, id string, files []farmapi.ModelFile) error {
	for _, mf := range files {
		if err := CheckFileName(mf.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrBadModel, err)
		}
	}
	dir, err := f.sessionDirOf(id)
	if err != nil {
		return err
	}
	if f.models == nil {
		return fmt.Errorf("%w: the farm has no model fetcher", ErrModelFetch)
	}
	for _, mf := range files {
		if err := f.addSessionFile(ctx, id, dir, mf); err != nil {
			return err
		}
	}
	return nil
}

func (f *Farm) sessionDirOf(id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[id]
	if !ok || inst.state == StateExited || inst.stopping {
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if !inst.sessionDir {
		return "", fmt.Errorf("%w: %s", ErrNoSessionDir, id)
	}
	return inst.modelDir, nil
}

func (f *Farm) addSessionFile(ctx context.Context, id, dir string, mf farmapi.ModelFile) error {
	tmp, err := os.CreateTemp(f.sessionsDir, incomingPrefix)
	if err != nil {
		return fmt.Errorf("farm: session file: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; removed on failure
	n, err := f.models.FetchModel(ctx, mf, tmp)
	if err == nil && mf.Size > 0 && n != mf.Size {
		err = fmt.Errorf("got %d bytes of %d", n, mf.Size)
	}
	if err != nil {
		_ = tmp.Close()
		f.metrics.modelFetch(false)
		return fmt.Errorf("%w: %s of item %s: %w", ErrModelFetch, mf.Source, mf.Item, err)
	}
	f.metrics.modelFetch(true)
	if err := tmp.Chmod(sessionFileMode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("farm: session file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("farm: session file: %w", err)
	}
	// The directory is writable only while the file goes in; the lock
	// keeps two adds (and a removal) from undoing each other's modes.
	f.sessionsMu.Lock()
	defer f.sessionsMu.Unlock()
	if _, err := f.sessionDirOf(id); err != nil {
		return err // it exited meanwhile: its directory is gone or going
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("farm: session directory: %w", err)
	}
	err = os.Rename(tmp.Name(), filepath.Join(dir, mf.Name))
	if cerr := os.Chmod(dir, sessionDirMode); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("farm: session file: %w", err)
	}
	f.log.Info("session file added", "instance", id, "file", mf.Name, "item", mf.Item, "bytes", n)
	return nil
}
