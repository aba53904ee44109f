package farm

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Limits on a binaries archive: it comes from configuration, but a corrupt
// or hostile file should fail the farm's start, not fill its disk.
const (
	maxUnpackBytes   = 8 << 30
	maxUnpackEntries = 100_000
)

// errUnsafeArchive marks an archive entry that could write outside the
// directory it is unpacked into, or that is no plain file or directory.
var errUnsafeArchive = errors.New("unsafe archive entry")

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
// the archive fails as a whole. Writes go through an os.Root, so even a
// symbolic link that appeared in dir meanwhile cannot lead a write outside.
func unzipInto(archive, dir string) error {
	zr, err := zip.OpenReader(archive)
	if errors.Is(err, zip.ErrInsecurePath) { // with GODEBUG=zipinsecurepath=0
		_ = zr.Close()
		err = fmt.Errorf("%w: %w", errUnsafeArchive, err)
	}
	if err != nil {
		return fmt.Errorf("binaries: open %s: %w", archive, err)
	}
	defer zr.Close()
	if len(zr.File) > maxUnpackEntries {
		return fmt.Errorf("binaries: %s has %d entries, more than %d", archive, len(zr.File), maxUnpackEntries)
	}
	// Check every name before writing anything.
	for _, zf := range zr.File {
		if _, err := entryPath(zf); err != nil {
			return fmt.Errorf("binaries: %s: %w", archive, err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("binaries: %w", err)
	}
	defer root.Close()
	var total int64
	for _, zf := range zr.File {
		name, _ := entryPath(zf)
		if zf.Mode().IsDir() {
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("binaries: %s: %w", archive, err)
			}
			continue
		}
		if d := filepath.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("binaries: %s: %w", archive, err)
			}
		}
		n, err := unzipFile(root, zf, name, maxUnpackBytes-total)
		total += n
		if err != nil {
			return fmt.Errorf("binaries: %s: %s: %w", archive, zf.Name, err)
		}
	}
	return nil
}

// entryPath returns the local path of an archive entry, or an error if the
// entry is unsafe.
func entryPath(zf *zip.File) (string, error) {
	mode := zf.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		return "", fmt.Errorf("%w: %q is a symbolic link", errUnsafeArchive, zf.Name)
	case !mode.IsDir() && !mode.IsRegular():
		return "", fmt.Errorf("%w: %q is not a regular file", errUnsafeArchive, zf.Name)
	}
	name := strings.TrimSuffix(zf.Name, "/")
	if name == "" || strings.ContainsAny(name, "\\\x00") || !filepath.IsLocal(name) || filepath.Clean(name) != name {
		return "", fmt.Errorf("%w: %q is not a plain relative path", errUnsafeArchive, zf.Name)
	}
	return name, nil
}

// unzipFile writes one regular file, at most limit bytes; it returns the
// bytes written.
func unzipFile(root *os.Root, zf *zip.File, name string, limit int64) (int64, error) {
	rc, err := zf.Open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	// Take only the read and execute bits from the archive; the owner may
	// always read and write.
	perm := zf.Mode().Perm()&0o555 | 0o600
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(rc, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("archive unpacks to more than %d bytes", int64(maxUnpackBytes))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}
