package soak

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// series makes 120 samples 5 s apart of f(i) plus noise of ±noise.
func series(f func(i int) float64, noise float64) *Series {
	r := rand.New(rand.NewPCG(1, 2))
	s := &Series{Process: "p", Figure: "goroutines", Abs: 20, Rel: 0.1}
	for i := range 120 {
		s.Samples = append(s.Samples, Sample{At: time.Duration(i) * 5 * time.Second,
			Value: f(i) + (r.Float64()*2-1)*noise})
	}
	return s
}

const (
	warmup  = 2 * time.Minute
	loadEnd = 10 * time.Minute
)

func TestAnalyzeFlatNoisyIsNoLeak(t *testing.T) {
	s := series(func(int) float64 { return 300 }, 40)
	v := Analyze(s, warmup, loadEnd, 100, 105)
	require.False(t, v.Leak, v.Reason)
	require.InDelta(t, 0, v.Slope, 5)
}

func TestAnalyzeSteadyGrowthIsALeak(t *testing.T) {
	// One goroutine every 5 s: 96 over the steady state, against 20 + 10%.
	s := series(func(i int) float64 { return 300 + float64(i) }, 10)
	v := Analyze(s, warmup, loadEnd, math.NaN(), math.NaN())
	require.True(t, v.Leak)
	require.Contains(t, v.Reason, "grows")
	require.InDelta(t, 12, v.Slope, 1, "per minute")
}

func TestAnalyzeOneBurstAtTheEndIsNoLeak(t *testing.T) {
	// The line rises with the burst, but the windows' medians do not.
	s := series(func(i int) float64 {
		if i == 118 {
			return 2000
		}
		return 300
	}, 5)
	v := Analyze(s, warmup, loadEnd, math.NaN(), math.NaN())
	require.False(t, v.Leak, v.Reason)
}

func TestAnalyzeNotBackToBaselineIsALeak(t *testing.T) {
	s := series(func(int) float64 { return 300 }, 5)
	v := Analyze(s, warmup, loadEnd, 100, 150)
	require.True(t, v.Leak)
	require.Contains(t, v.Reason, "after the load")
	v = Analyze(s, warmup, loadEnd, 100, 125)
	require.False(t, v.Leak, "within 20 + 10%% of the baseline")
}

func TestAnalyzeTooFewSamplesFails(t *testing.T) {
	s := series(func(int) float64 { return 1 }, 0)
	v := Analyze(s, 9*time.Minute+45*time.Second, loadEnd, math.NaN(), math.NaN())
	require.True(t, v.Leak)
	require.Contains(t, v.Reason, "too few")
}

func TestPrintTable(t *testing.T) {
	s := series(func(i int) float64 { return 300 + float64(i) }, 0)
	var b bytes.Buffer
	PrintTable(&b, []Verdict{Analyze(s, warmup, loadEnd, math.NaN(), math.NaN())})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "slope/min")
	require.Contains(t, lines[1], "LEAK")
	require.Contains(t, lines[1], "120")
}
