package duration_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/duration"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "0d", want: 0},
		{in: "30d", want: 30 * duration.Day},
		{in: "1.5d", want: 36 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "24h", want: duration.Day},
		{in: "90m", want: 90 * time.Minute},
		{in: "1h30m15s", want: time.Hour + 30*time.Minute + 15*time.Second},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "2d2d", want: 4 * duration.Day},
		{in: "106751d", want: 106751 * duration.Day},
		{in: "", bad: true},
		{in: "30", bad: true},
		{in: "d", bad: true},
		{in: "-1d", bad: true},
		{in: "-5m", bad: true},
		{in: "1x", bad: true},
		{in: "1D", bad: true},
		{in: "1d ", bad: true},
		{in: " 1d", bad: true},
		{in: "1..5d", bad: true},
		{in: ".d", bad: true},
		{in: "106752d", bad: true},
		{in: "106751d23h59m59s", bad: true},
		{in: "99999999999999999999d", bad: true},
		{in: strings.Repeat("1", 70) + "s", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := duration.Parse(tt.in)
			if tt.bad {
				require.ErrorIs(t, err, duration.ErrSyntax)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0"},
		{30 * duration.Day, "30d"},
		{36 * time.Hour, "1d12h0m0s"},
		{90 * time.Minute, "1h30m0s"},
		{time.Duration(math.MaxInt64), "106751d23h47m16.854775807s"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, duration.Format(tt.in))
		back, err := duration.Parse(tt.want)
		require.NoError(t, err)
		require.Equal(t, tt.in, back)
	}
}

// TestFlag: a Duration is a flag that takes days, and prints its default
// so that it reads back.
func TestFlag(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	d := duration.Duration(7 * duration.Day)
	fs.Var(&d, "age", "")
	require.Equal(t, "7d", fs.Lookup("age").DefValue)
	require.NoError(t, fs.Parse([]string{"--age", "30d"}))
	require.Equal(t, 30*duration.Day, d.Std())
	require.Error(t, fs.Parse([]string{"--age", "soon"}))
	require.Equal(t, 30*duration.Day, d.Std(), "a bad value changes nothing")

	var u duration.Duration
	require.NoError(t, u.UnmarshalText([]byte("12h")))
	require.Equal(t, 12*time.Hour, u.Std())
	b, err := u.MarshalText()
	require.NoError(t, err)
	require.Equal(t, "12h0m0s", string(b))
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "30d", "1.5d", "1d12h", "24h", "-1d", "1..5d", "106751d23h", "5µs", ".5d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := duration.Parse(s)
		if err != nil {
			require.ErrorIs(t, err, duration.ErrSyntax)
			return
		}
		require.GreaterOrEqual(t, d, time.Duration(0))
		back, err := duration.Parse(duration.Format(d))
		require.NoError(t, err, "Format(%v) = %q", d, duration.Format(d))
		require.Equal(t, d, back)
		if !strings.Contains(s, "d") {
			std, err := time.ParseDuration(s)
			require.NoError(t, err, "what Parse reads without days, ParseDuration reads")
			require.Equal(t, std, d)
		}
	})
}
