package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Row is one figure of the report: the same metric measured directly and
// through drover.
type Row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Direct   float64 `json:"direct"`
	Drover   float64 `json:"drover"`
	// Ratio is Drover/Direct.
	Ratio float64 `json:"ratio"`
	// AddedMicros is Drover−Direct for latencies.
	AddedMicros *float64 `json:"added_us,omitempty"`
	Note        string   `json:"note,omitempty"`
}

func newRow(scenario, metric string, direct, drover float64, note string) Row {
	r := Row{Scenario: scenario, Metric: metric, Direct: direct, Drover: drover, Note: note}
	if direct > 0 {
		r.Ratio = round(drover/direct, 4)
	}
	return r
}

// round keeps the given decimals: the JSON report should not claim
// precision a benchmark does not have.
func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}

type reportConfig struct {
	Duration   string `json:"duration"`
	Conns      int    `json:"conns"`
	Window     int    `json:"window"`
	Idle       int    `json:"idle"`
	GoVersion  string `json:"go_version"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	Direct     string `json:"direct_url"`
	Drover     string `json:"drover_url"`
}

type report struct {
	Config reportConfig `json:"config"`
	Rows   []Row        `json:"rows"`
}

func latencyRows(direct, drover latencies) []Row {
	rows := make([]Row, 0, 3)
	for _, p := range []struct {
		name           string
		direct, drover float64
	}{
		{"p50 µs", direct.p50, drover.p50},
		{"p90 µs", direct.p90, drover.p90},
		{"p99 µs", direct.p99, drover.p99},
	} {
		added := round(p.drover-p.direct, 2)
		r := newRow(ScenarioLatency, p.name, p.direct, p.drover, fmt.Sprintf("%+.0f µs", added))
		r.AddedMicros = &added
		rows = append(rows, r)
	}
	rows[0].Note += fmt.Sprintf(", %d tasks", drover.n)
	return rows
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable writes the rows as a plain table: fmt pads by runes, so "µs"
// lines up.
func (r *report) writeTable(w io.Writer) error {
	const format = "%-11s  %-9s  %11s  %11s  %6s  %s\n"
	if _, err := fmt.Fprintf(w, format, "scenario", "metric", "direct", "drover", "ratio", "note"); err != nil {
		return err
	}
	for _, row := range r.Rows {
		_, err := fmt.Fprintf(w, format, row.Scenario, row.Metric,
			number(row.Direct), number(row.Drover), strconv.FormatFloat(row.Ratio, 'f', 2, 64), row.Note)
		if err != nil {
			return err
		}
	}
	return nil
}

// number prints a figure with about three significant digits, no more
// precision than a benchmark has.
func number(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
