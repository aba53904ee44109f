// Package safezip unpacks ZIP archives that may be hostile: a farm's
// binaries archive and the ZIP files users upload for conversion. It owns
// the rules for entry names, the refusal of links and special files, and the
// limits that stop ZIP bombs. It does not decide what an archive's contents
// mean, nor where the directory it unpacks into lives.
//
// An archive either unpacks whole or fails: every name is checked before
// anything is written, and the limits are enforced on the bytes actually
// read and written, never on the sizes the archive's headers claim. All
// writes go through an os.Root, so nothing is written outside the target
// directory even if a symbolic link appears in it meanwhile.
package safezip

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

var (
	// ErrUnsafeEntry marks an entry that could write outside the target
	// directory, or that is no plain file or directory.
	ErrUnsafeEntry = errors.New("unsafe archive entry")
	// ErrLimit marks an archive that unpacks to more than its limits allow:
	// a ZIP bomb, or simply too much.
	ErrLimit = errors.New("archive exceeds limits")
	// ErrCorrupt marks an archive that cannot be read as a ZIP, or whose
	// entries do not match their headers.
	ErrCorrupt = errors.New("corrupt archive")
)

// ratioFloor is how many bytes an entry may unpack to before its
// compression ratio is checked: small files of one repeated byte compress
// far beyond any sane ratio and are harmless.
const ratioFloor = 1 << 20

// Limits bound what one archive may unpack to. A zero field is no limit.
type Limits struct {
	// MaxBytes is the total size of the files written.
	MaxBytes int64
	// MaxEntries is the number of entries, directories included.
	MaxEntries int
	// MaxRatio is the most bytes an entry may unpack to per compressed byte
	// read, checked once the entry has unpacked to more than 1 MiB.
	MaxRatio int64
}

// CheckName returns the local, slash-separated path of an archive entry
// name, without the trailing slash of a directory, or an error wrapping
// ErrUnsafeEntry. Names must be plain relative paths: not absolute, no ".."
// or "." elements, no empty elements, no backslashes, valid UTF-8 and no
// control characters.
func CheckName(name string) (string, error) {
	clean := strings.TrimSuffix(name, "/")
	switch {
	case clean == "" || clean == ".":
		return "", fmt.Errorf("%w: %q names no file", ErrUnsafeEntry, name)
	case !utf8.ValidString(clean):
		return "", fmt.Errorf("%w: %q is not UTF-8", ErrUnsafeEntry, name)
	case strings.ContainsFunc(clean, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return "", fmt.Errorf("%w: %q has a backslash or a control character", ErrUnsafeEntry, name)
	case !filepath.IsLocal(clean) || filepath.Clean(clean) != clean:
		return "", fmt.Errorf("%w: %q is not a plain relative path", ErrUnsafeEntry, name)
	}
	return clean, nil
}

// checkEntry returns the local path of an entry, or an error if the entry
// is unsafe.
func checkEntry(zf *zip.File) (string, error) {
	mode := zf.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		return "", fmt.Errorf("%w: %q is a symbolic link", ErrUnsafeEntry, zf.Name)
	case !mode.IsDir() && !mode.IsRegular():
		return "", fmt.Errorf("%w: %q is not a regular file", ErrUnsafeEntry, zf.Name)
	case zf.Flags&0x1 != 0:
		return "", fmt.Errorf("%w: %q is encrypted", ErrCorrupt, zf.Name)
	}
	return CheckName(zf.Name)
}

// Extract unpacks the ZIP archive into dir, an existing directory, and
// returns the slash-separated paths of the regular files it wrote, in
// archive order. On error the files written so far stay: the caller owns
// dir and removes it.
func Extract(archive, dir string, lim Limits) ([]string, error) {
	zr, err := zip.OpenReader(archive)
	if errors.Is(err, zip.ErrInsecurePath) { // with GODEBUG=zipinsecurepath=0
		_ = zr.Close()
		return nil, fmt.Errorf("%w: %w", ErrUnsafeEntry, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	defer zr.Close()
	if lim.MaxEntries > 0 && len(zr.File) > lim.MaxEntries {
		return nil, fmt.Errorf("%w: %d entries, more than %d", ErrLimit, len(zr.File), lim.MaxEntries)
	}
	names := make([]string, len(zr.File))
	for i, zf := range zr.File {
		if names[i], err = checkEntry(zf); err != nil {
			return nil, err
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var (
		files []string
		total int64
	)
	for i, zf := range zr.File {
		name := names[i]
		if zf.Mode().IsDir() {
			if err := root.MkdirAll(name, 0o755); err != nil {
				return files, err
			}
			continue
		}
		if d := filepath.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return files, err
			}
		}
		budget := int64(-1)
		if lim.MaxBytes > 0 {
			budget = lim.MaxBytes - total
		}
		n, err := extractFile(root, zf, name, budget, lim)
		total += n
		if err != nil {
			return files, fmt.Errorf("%s: %w", zf.Name, err)
		}
		files = append(files, name)
	}
	return files, nil
}

// extractFile writes one regular file and returns the bytes written. budget
// is how many bytes the archive may still write, negative for no limit.
func extractFile(root *os.Root, zf *zip.File, name string, budget int64, lim Limits) (int64, error) {
	raw, err := zf.OpenRaw()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	// Decompress the raw bytes here rather than through zf.Open, to count
	// the compressed bytes the decompressor actually consumes: the ratio is
	// measured, not taken from the headers.
	in := &countingReader{r: bufio.NewReader(raw)}
	var src io.Reader
	switch zf.Method {
	case zip.Store:
		src = in
	case zip.Deflate:
		fr := flate.NewReader(in)
		defer fr.Close()
		src = fr
	default:
		return 0, fmt.Errorf("%w: compression method %d is not supported", ErrCorrupt, zf.Method)
	}
	// Take only the read and execute bits from the archive; the owner may
	// always read and write.
	perm := zf.Mode().Perm()&0o555 | 0o600
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	n, sum, err := copyChecked(out, src, in, budget, lim)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return n, err
	case uint64(n) != zf.UncompressedSize64:
		return n, fmt.Errorf("%w: unpacked to %d bytes, header says %d", ErrCorrupt, n, zf.UncompressedSize64)
	case sum != zf.CRC32:
		return n, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return n, nil
}

// copyChecked copies src to dst while it checks the limits; it returns the
// bytes copied and their CRC-32.
func copyChecked(dst io.Writer, src io.Reader, in *countingReader, budget int64, lim Limits) (int64, uint32, error) {
	buf := make([]byte, 32<<10)
	crc := crc32.NewIEEE()
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			n += int64(m)
			if budget >= 0 && n > budget {
				return n, 0, fmt.Errorf("%w: the archive unpacks to more than %d bytes", ErrLimit, lim.MaxBytes)
			}
			if lim.MaxRatio > 0 && n > ratioFloor && n > lim.MaxRatio*max(in.n, 1) {
				return n, 0, fmt.Errorf("%w: compression ratio above %d", ErrLimit, lim.MaxRatio)
			}
			_, _ = crc.Write(buf[:m])
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, 0, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, 0, fmt.Errorf("%w: %w", ErrCorrupt, rerr)
		}
	}
	return n, crc.Sum32(), nil
}

// countingReader counts the bytes read through it. It is an io.ByteReader,
// so flate reads from it directly instead of through a buffer of its own
// that would read ahead uncounted.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
