package farmapi

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxFileName bounds a session file's name (one path element).
const maxFileName = 255

// CheckFileName accepts the name of a file in a session directory: one
// path element, not hidden, without separators or control characters, at
// most 255 bytes.
func CheckFileName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > maxFileName:
		return fmt.Errorf("file name longer than %d bytes", maxFileName)
	case !utf8.ValidString(name):
		return errors.New("file name not UTF-8")
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %q starts with a dot", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == '\\' || unicode.IsControl(r) }):
		return fmt.Errorf("file name %q has a separator or a control character", name)
	}
	return nil
}
