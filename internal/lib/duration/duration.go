// Package duration reads and writes the lengths of time that drover's
// configuration gives in days as well as in Go's units: "30d", "1d12h",
// "36h", "90m". Retention settings are days long, and time.ParseDuration
// stops at hours.
//
// Parse is a parser of outside input (flags, the config file, the
// environment) and has a fuzz target. Duration carries a value through
// pflag and koanf: it is a pflag.Value and an encoding.TextUnmarshaler.
//
// The package knows nothing of what the durations are for.
package duration

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Day is 24 hours: days here are lengths of time, not calendar days.
const Day = 24 * time.Hour

// ErrSyntax is wrapped by every error of Parse.
var ErrSyntax = errors.New("duration: invalid duration")

// maxInput bounds what Parse reads: longer input is no duration.
const maxInput = 64

// Parse reads a non-negative length of time: "0", or a sequence of
// decimal numbers each with a unit, "d" (24 h) or one of
// time.ParseDuration's ("h", "m", "s", "ms", "us", "µs", "ns"): "30d",
// "1.5d", "1d12h", "24h". Negative, overflowing or unitless values are
// refused with an error wrapping ErrSyntax.
func Parse(s string) (time.Duration, error) {
	if len(s) > maxInput {
		return 0, fmt.Errorf("%w: longer than %d bytes", ErrSyntax, maxInput)
	}
	if s == "0" {
		return 0, nil
	}
	switch {
	case s == "":
		return 0, fmt.Errorf("%w: empty", ErrSyntax)
	case s[0] == '-':
		return 0, fmt.Errorf("%w: %q: negative", ErrSyntax, s)
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := strings.IndexFunc(rest, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
		if i <= 0 {
			return 0, fmt.Errorf("%w: %q: a number with a unit expected", ErrSyntax, s)
		}
		j := i + strings.IndexFunc(rest[i:], func(r rune) bool { return r == '.' || '0' <= r && r <= '9' })
		if j < i {
			j = len(rest)
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var d time.Duration
		var err error
		if unit == "d" {
			// Days are read as hours and multiplied: ParseDuration keeps
			// the fraction exact.
			if d, err = time.ParseDuration(num + "h"); err == nil {
				if d > math.MaxInt64/24 {
					err = errors.New("overflow")
				}
				d *= 24
			}
		} else {
			d, err = time.ParseDuration(num + unit)
		}
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%w: %q", ErrSyntax, s)
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("%w: %q: too long", ErrSyntax, s)
		}
		total += d
	}
	return total, nil
}

// Format writes d so that Parse reads it back: whole days as "30d", the
// rest as time.Duration.String writes it ("1d12h0m0s", "36m0s"), 0 as
// "0". Negative durations are written as time.Duration.String does, which
// Parse refuses.
func Format(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < Day:
		return d.String()
	case d%Day == 0:
		return fmt.Sprintf("%dd", d/Day)
	}
	return fmt.Sprintf("%dd%s", d/Day, (d % Day).String())
}

// Duration is a time.Duration that flags, config files and the
// environment give as Parse reads it.
type Duration time.Duration

// Std is d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String implements pflag.Value and fmt.Stringer.
func (d Duration) String() string { return Format(time.Duration(d)) }

// Set implements pflag.Value.
func (d *Duration) Set(s string) error {
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Type implements pflag.Value. It is not "duration": koanf's posflag
// would read that with time.ParseDuration, which knows no days.
func (d *Duration) Type() string { return "days" }

// UnmarshalText implements encoding.TextUnmarshaler, for koanf.
func (d *Duration) UnmarshalText(b []byte) error { return d.Set(string(b)) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
