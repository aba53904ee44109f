package convert

import (
	"errors"
	"slices"
	"strings"
)

// Reason is why a conversion failed, in the HOOPS conversion server's
// words: an item that failed is in the state "ERROR - <Reason>".
type Reason string

// The reasons, those of the HOOPS conversion server.
const (
	ReasonConversion Reason = "Conversion Error"
	ReasonStartPath  Reason = "Specify startPath with ZIP"
	ReasonUnzip      Reason = "Unzip Error"
)

var (
	// ErrTimeout marks a conversion that ran longer than its timeout.
	ErrTimeout = errors.New("conversion timed out")
	// ErrToolFailed marks a converter that failed: a non-zero exit, a
	// failure in its output, or an output missing or invalid.
	ErrToolFailed = errors.New("converter failed")
	// ErrBlankThumbnail marks a thumbnail with nothing on it.
	ErrBlankThumbnail = errors.New("blank thumbnail")
)

// maxDetail bounds Error.Detail.
const (
	maxDetail      = 1000
	maxDetailLines = 8
)

// Error is a failed conversion, with the reason the item's state shows and
// a short detail for its detailedError.
type Error struct {
	Reason Reason
	// Detail is short and for people: the converter's last output lines,
	// or what was wrong with the input.
	Detail string
	Err    error
}

func (e *Error) Error() string {
	msg := "conversion: " + strings.ToLower(string(e.Reason))
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg + ": " + e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// State is the item's conversionState for this error: "ERROR - <Reason>".
func (e *Error) State() string { return "ERROR - " + string(e.Reason) }

// conversionError makes an *Error whose detail is err's message.
func conversionError(reason Reason, err error) *Error {
	return &Error{Reason: reason, Detail: shorten(err.Error()), Err: err}
}

// detail is the last lines of a converter's output that say something,
// short: what detailedError shows.
func detail(output []byte) string {
	lines := strings.Split(stripANSI(string(output)), "\n")
	var kept []string
	for i := len(lines) - 1; i >= 0 && len(kept) < maxDetailLines; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !noise(l) {
			kept = append(kept, l)
		}
	}
	slices.Reverse(kept)
	return shorten(strings.Join(kept, "\n"))
}

// noise reports the converters' lines that never explain a failure:
// banners, echoed arguments, progress.
func noise(line string) bool {
	for _, p := range []string{
		"DRAW is running in batch mode", "param = ", "assimp export: select file format",
		"Launching asset import", "Validating postprocessing flags", "Importing file ...",
		"Launching asset export", "Exporting file ...", "import took approx", "export took approx",
		drawFailed,
	} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	n, ok := strings.CutSuffix(line, " %")
	return ok && strings.Trim(n, "0123456789") == ""
}

// shorten keeps the end of s, where the error is, within maxDetail bytes.
func shorten(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	s = s[len(s)-maxDetail:]
	// Do not start inside a UTF-8 sequence.
	for i := 0; i < len(s) && i < 4; i++ {
		if s[i]&0xc0 != 0x80 {
			return "…" + s[i:]
		}
	}
	return "…" + s
}

// stripANSI removes terminal colour sequences (f3d colours its errors).
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
