package farm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/drover-dev/drover/internal/lib/safezip"
)

// Limits on a binaries archive: it comes from configuration, but a corrupt
// or hostile file should fail the farm's start, not fill its disk.
const (
	maxUnpackBytes   = 8 << 30
	maxUnpackEntries = 100_000
)

// errUnsafeArchive marks an archive entry that could write outside the
// directory it is unpacked into, or that is no plain file or directory.
var errUnsafeArchive = safezip.ErrUnsafeEntry

// unpackBinaries unpacks the ZIP archive into a directory below base and
// returns that directory. With cache set the directory is named after the
// archive's content and kept: a farm that starts again with the same archive
// finds it unpacked. The archive is unpacked into a temporary sibling and
// renamed into place, so a half-unpacked directory is never used, and two
// farms sharing base do not step on each other.
func unpackBinaries(archive, base, name string, cache bool) (string, error) {
	sum, err := fileDigest(archive)
	if err != nil {
		return "", err
	}
	dest := filepath.Join(base, name+"-"+sum[:16])
	if cache {
		if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
			return dest, nil
		}
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("binaries: %w", err)
	}
	tmp, err := os.MkdirTemp(base, "."+name+"-unpack-")
	if err != nil {
		return "", fmt.Errorf("binaries: %w", err)
	}
	if err := unzipInto(archive, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp made it 0700
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("binaries: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		_ = os.RemoveAll(tmp)
		// Another farm won the race to unpack the same archive.
		if fi, serr := os.Stat(dest); serr == nil && fi.IsDir() {
			return dest, nil
		}
		return "", fmt.Errorf("binaries: %w", err)
	}
	return dest, nil
}

func fileDigest(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("binaries: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("binaries: read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// unzipInto writes the archive's directories and regular files below dir.
// Entries whose names are absolute, climb out with "..", or are not plain
// relative paths are refused, as are symbolic links and other special files:
// the archive fails as a whole. The rules and the limits live in safezip,
// which the conversion of uploaded ZIPs shares.
func unzipInto(archive, dir string) error {
	lim := safezip.Limits{MaxBytes: maxUnpackBytes, MaxEntries: maxUnpackEntries}
	if _, err := safezip.Extract(archive, dir, lim); err != nil {
		return fmt.Errorf("binaries: %s: %w", archive, err)
	}
	return nil
}
