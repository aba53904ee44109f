package farm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A farm's job directory is shared by name: two farm processes with the
// same id on one machine (two test runs, a farm restarted while the old
// one still drains) would otherwise use, and sweep, the same directory.
// Each Jobs.Run holds an flock on the directory it uses for its whole run;
// the kernel drops the lock when the process dies, so a directory whose
// lock can be taken belongs to nobody alive, and what is in it is left
// over from a dead farm. A directory held by another process is not
// touched: the run uses the first free sibling, WorkDir.2, WorkDir.3, …
//
// Neither the lock files nor the directories are ever removed, only their
// contents, so a lock taken is always on the file another process would
// open: no process can hold a lock on a file that was unlinked under it.

const (
	// jobDirLock is the lock file in a job directory.
	jobDirLock = ".lock"
	// maxJobDirs bounds the siblings tried: that many farms of one id
	// running at once on one machine is a mistake.
	maxJobDirs = 64
)

// ErrJobDirInUse: every job directory a farm may use is held by another
// process.
var ErrJobDirInUse = errors.New("farm: every job directory is in use by other farm processes")

// jobDir is a job directory held by this process.
type jobDir struct {
	path string
	lock *os.File // flock held; closing it releases the lock
}

// jobDirName is the i-th candidate job directory of base (i from 1).
func jobDirName(base string, i int) string {
	if i == 1 {
		return base
	}
	return fmt.Sprintf("%s.%d", base, i)
}

// claimJobDir takes the first job directory among base, base.2, … that no
// live process holds, empties it of what a dead farm left, and sweeps the
// other free siblings too. The lock lasts until release.
func claimJobDir(base string) (*jobDir, error) {
	var claimed *jobDir
	for i := 1; i <= maxJobDirs && claimed == nil; i++ {
		d, err := lockJobDir(jobDirName(base, i))
		if errors.Is(err, errDirHeld) {
			continue
		}
		if err != nil {
			return nil, err
		}
		claimed = d
	}
	if claimed == nil {
		return nil, fmt.Errorf("%w: %s and %d siblings", ErrJobDirInUse, base, maxJobDirs-1)
	}
	if err := emptyJobDir(claimed.path); err != nil {
		claimed.release()
		return nil, err
	}
	// Siblings of farms that died: emptied under their lock, then let go.
	// Only those that exist are looked at.
	for i := 2; i <= maxJobDirs; i++ {
		p := jobDirName(base, i)
		if p == claimed.path {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, jobDirLock)); err != nil {
			continue
		}
		if d, err := lockJobDir(p); err == nil {
			_ = emptyJobDir(d.path)
			d.release()
		}
	}
	return claimed, nil
}

// errDirHeld: another process holds the directory's lock.
var errDirHeld = errors.New("held by another process")

// lockJobDir creates dir if needed and takes its lock without waiting.
func lockJobDir(dir string) (*jobDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("farm: job work directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, jobDirLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("farm: job work directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errDirHeld
		}
		return nil, fmt.Errorf("farm: lock the job work directory %s: %w", dir, err)
	}
	return &jobDir{path: dir, lock: f}, nil
}

// emptyJobDir removes everything in dir but its lock file.
func emptyJobDir(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("farm: job work directory: %w", err)
	}
	for _, e := range es {
		if e.Name() == jobDirLock {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("farm: sweep the job work directory: %w", err)
		}
	}
	return nil
}

// release lets the directory go (its contents stay: the jobs removed
// their own).
func (d *jobDir) release() { _ = d.lock.Close() }
