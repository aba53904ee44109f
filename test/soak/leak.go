package soak

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Sample is one reading of one figure of one process.
type Sample struct {
	At    time.Duration // since the series began
	Value float64
}

// Series is one figure (goroutines, fds, heap, RSS) of one process over a
// run, with the tolerance its leak check allows.
type Series struct {
	Process string
	Figure  string
	Unit    Unit
	Samples []Sample
	// Tolerance is the growth allowed: Abs plus Rel times the baseline.
	Abs, Rel float64
}

// Unit says how a figure prints.
type Unit int

const (
	Count Unit = iota
	Bytes
)

func (u Unit) format(v float64) string {
	if u == Bytes {
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}

// Verdict is what the leak check found in a series.
type Verdict struct {
	Series *Series
	// Steady is the steady-state part of the samples: after the warm-up,
	// while the load runs.
	Start, End, Max float64
	// Slope is the least-squares slope over the steady state, per minute.
	Slope float64
	// Growth is the slope's rise across the steady state, and WindowRise
	// the last window's median less the first's (a fifth of the steady
	// samples each).
	Growth, WindowRise float64
	// Allowed is the tolerance against the first window's median.
	Allowed float64
	// After is the value once the load stopped and the process settled,
	// Baseline the median before the load (NaN: not checked).
	After, Baseline float64
	Leak            bool
	Reason          string
}

// Analyze checks s for a leak. warmup is when the steady state begins,
// loadEnd when the load stopped; baseline and after are the figure before
// the load and once the process settled after it (NaN: this figure need
// not return to its baseline, like heap and RSS, which the Go runtime
// returns to the system slowly).
//
// A leak is growth through the steady state: the least-squares line rises
// by more than the tolerance across it, and so does the median of its last
// window over that of its first; both must, so that one burst at either
// end of a noisy series is not a leak. A figure with a baseline leaks too
// if after the load it stays above baseline plus the tolerance.
func Analyze(s *Series, warmup, loadEnd time.Duration, baseline, after float64) Verdict {
	v := Verdict{Series: s, After: after, Baseline: baseline, Slope: math.NaN(), Growth: math.NaN(),
		WindowRise: math.NaN(), Start: math.NaN(), End: math.NaN(), Max: math.NaN()}
	var steady []Sample
	for _, x := range s.Samples {
		if x.At >= warmup && x.At <= loadEnd {
			steady = append(steady, x)
		}
	}
	if len(steady) < 5 {
		v.Leak, v.Reason = true, fmt.Sprintf("too few steady samples (%d) to judge", len(steady))
		return v
	}
	v.Start, v.End = steady[0].Value, steady[len(steady)-1].Value
	v.Max = steady[0].Value
	for _, x := range steady {
		v.Max = max(v.Max, x.Value)
	}
	slope, _ := leastSquares(steady)
	v.Slope = slope * float64(time.Minute)
	span := steady[len(steady)-1].At - steady[0].At
	v.Growth = slope * float64(span)
	w := max(len(steady)/5, 2)
	first, last := median(values(steady[:w])), median(values(steady[len(steady)-w:]))
	v.WindowRise = last - first
	v.Allowed = s.Abs + s.Rel*first
	var reasons []string
	if v.Growth > v.Allowed && v.WindowRise > v.Allowed {
		reasons = append(reasons, fmt.Sprintf("grows %s over the steady state (allowed %s)",
			s.Unit.format(v.Growth), s.Unit.format(v.Allowed)))
	}
	if !math.IsNaN(baseline) && !math.IsNaN(after) {
		if allowed := s.Abs + s.Rel*baseline; after > baseline+allowed {
			reasons = append(reasons, fmt.Sprintf("%s after the load, baseline %s (allowed +%s)",
				s.Unit.format(after), s.Unit.format(baseline), s.Unit.format(allowed)))
		}
	}
	v.Leak = len(reasons) > 0
	v.Reason = strings.Join(reasons, "; ")
	return v
}

// leastSquares fits y = a·t + b to the samples (t in nanoseconds).
func leastSquares(xs []Sample) (a, b float64) {
	n := float64(len(xs))
	var st, sy, stt, sty float64
	for _, x := range xs {
		t := float64(x.At)
		st += t
		sy += x.Value
		stt += t * t
		sty += t * x.Value
	}
	d := n*stt - st*st
	if d == 0 {
		return 0, sy / n
	}
	a = (n*sty - st*sy) / d
	return a, (sy - a*st) / n
}

func values(xs []Sample) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x.Value
	}
	return out
}

// median of vs (NaN for none).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PrintTable writes one line per verdict: samples, start, end and max of
// the steady state, slope per minute, the figures after the load, and the
// verdict.
func PrintTable(w io.Writer, vs []Verdict) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tfigure\tsamples\tstart\tend\tmax\tslope/min\twindow rise\tallowed\tbaseline\tafter\tverdict\t")
	for _, v := range vs {
		s := v.Series
		f := func(x float64) string {
			if math.IsNaN(x) {
				return "-"
			}
			return s.Unit.format(x)
		}
		verdict := "ok"
		if v.Leak {
			verdict = "LEAK: " + v.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Process, s.Figure, len(s.Samples),
			f(v.Start), f(v.End), f(v.Max), f(v.Slope), f(v.WindowRise), f(v.Allowed), f(v.Baseline), f(v.After), verdict)
	}
	_ = tw.Flush()
}
