package convert

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/lib/safezip"
)

var (
	// ErrStartPathNeeded marks a ZIP with several models and no startPath
	// to say which one to convert.
	ErrStartPathNeeded = errors.New("the ZIP holds several models; startPath must name one")
	// ErrNoModel marks a ZIP without a model, or a startPath that names
	// no file in it.
	ErrNoModel = errors.New("no model to convert")
)

// DefaultZipLimits bound what an uploaded ZIP may unpack to.
var DefaultZipLimits = safezip.Limits{
	MaxBytes:   4 << 30,
	MaxEntries: 10_000,
	MaxRatio:   100,
}

// zipDir is where a ZIP is unpacked, below the item's directory: the HOOPS
// conversion server's layout.
const zipDir = "zip"

// Unpack unpacks the uploaded ZIP archive into dir/zip, replacing what an
// earlier run left there, and returns the path of the model to convert:
// startPath when given, else the archive's only model file. Errors are
// *Error with the reason the HOOPS conversion server gives: Unzip Error for
// an archive that is broken, unsafe or a ZIP bomb, Specify startPath with
// ZIP for several models and no startPath.
func (c *Converter) Unpack(archive, dir, startPath string) (string, error) {
	dest := filepath.Join(dir, zipDir)
	if err := os.RemoveAll(dest); err != nil {
		return "", conversionError(ReasonUnzip, err)
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return "", conversionError(ReasonUnzip, err)
	}
	files, err := safezip.Extract(archive, dest, c.cfg.ZipLimits)
	if err != nil {
		// Nothing half-unpacked stays behind to be converted later.
		_ = os.RemoveAll(dest)
		return "", conversionError(ReasonUnzip, err)
	}
	model, err := c.pickModel(files, startPath)
	if err != nil {
		reason := ReasonConversion
		if errors.Is(err, ErrStartPathNeeded) {
			reason = ReasonStartPath
		}
		return "", conversionError(reason, err)
	}
	return filepath.Join(dest, filepath.FromSlash(model)), nil
}

// pickModel chooses the model among the files of an unpacked archive.
func (c *Converter) pickModel(files []string, startPath string) (string, error) {
	if startPath != "" {
		p, err := CleanStartPath(startPath)
		if err != nil {
			return "", err
		}
		if !slices.Contains(files, p) {
			return "", fmt.Errorf("%w: startPath %q is not a file in the ZIP", ErrNoModel, startPath)
		}
		if _, ok := c.reg.Lookup(p); !ok {
			return "", fmt.Errorf("%w: startPath %q: %w", ErrUnsupported, startPath, c.unsupported(p))
		}
		return p, nil
	}
	var models []string
	for _, f := range files {
		if _, ok := c.reg.Lookup(f); ok && !hidden(f) {
			models = append(models, f)
		}
	}
	switch len(models) {
	case 0:
		return "", fmt.Errorf("%w: the ZIP holds no file of a format drover converts (%s)", ErrNoModel, strings.Join(c.reg.Extensions(), " "))
	case 1:
		return models[0], nil
	}
	const show = 5
	list := strings.Join(models[:min(len(models), show)], ", ")
	if len(models) > show {
		list += ", …"
	}
	return "", fmt.Errorf("%w (%d models: %s)", ErrStartPathNeeded, len(models), list)
}

// hidden reports whether an archive path lies in a hidden directory or is
// a hidden file, such as the resource forks macOS puts in __MACOSX/._name:
// they are unpacked but never taken for the model.
func hidden(p string) bool {
	for elem := range strings.SplitSeq(p, "/") {
		if strings.HasPrefix(elem, ".") || elem == "__MACOSX" {
			return true
		}
	}
	return false
}

// CleanStartPath checks a user's startPath, a path inside the ZIP, and
// returns it cleaned and slash-separated. A leading "./" and doubled
// slashes are forgiven; absolute paths, "..", backslashes and control
// characters are refused.
func CleanStartPath(startPath string) (string, error) {
	if strings.HasPrefix(startPath, "/") {
		return "", fmt.Errorf("%w: startPath %q is absolute; give the path inside the ZIP", ErrNoModel, startPath)
	}
	for elem := range strings.SplitSeq(startPath, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: startPath %q climbs out of the ZIP", ErrNoModel, startPath)
		}
	}
	p, err := safezip.CheckName(path.Clean(startPath))
	if err != nil || strings.HasSuffix(startPath, "/") {
		return "", fmt.Errorf("%w: startPath %q is not a file path", ErrNoModel, startPath)
	}
	return p, nil
}
