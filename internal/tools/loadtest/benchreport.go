package loadtest

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// results collects the value of every round, by figure and target.
type results struct {
	order   []figKey
	vals    map[figKey][]float64
	skipped []string
}

type figKey struct{ scenario, metric, unit, target string }

func newResults() *results { return &results{vals: map[figKey][]float64{}} }

func (r *results) add(scenario, metric, unit, target string, v float64) {
	k := figKey{scenario, metric, unit, target}
	if _, ok := r.vals[k]; !ok {
		r.order = append(r.order, k)
	}
	r.vals[k] = append(r.vals[k], v)
}

// BenchRow is one figure of one target: the median of its rounds and its
// ratio to the scenario's reference target measured in the same run.
type BenchRow struct {
	Scenario string    `json:"scenario"`
	Metric   string    `json:"metric"`
	Unit     string    `json:"unit,omitempty"`
	Target   string    `json:"target"`
	Median   float64   `json:"median"`
	Rounds   []float64 `json:"rounds"`
	// Ref is the target Ratio is taken against: direct, or for idle the
	// plain gorilla server, for stdio websocketd, for jobs the memory queue.
	Ref   string   `json:"ref,omitempty"`
	Ratio *float64 `json:"ratio,omitempty"`
	// Added is Median minus Ref's median (latencies).
	Added *float64 `json:"added,omitempty"`
	// RatioDirect64 is the ratio to direct-64 (tput).
	RatioDirect64 *float64 `json:"ratio_direct64,omitempty"`
}

// BenchReport is the whole report of `drover bench`.
type BenchReport struct {
	Machine machine    `json:"machine"`
	Rows    []BenchRow `json:"rows"`
	// Goals are issue 13's targets checked against Rows.
	Goals []Goal `json:"goals"`
}

// refTarget is the target each scenario's ratios are taken against.
func refTarget(scenario string) string {
	switch scenario {
	case BenchIdle:
		return targetGorilla
	case BenchStdio:
		return TargetWebsocket
	case BenchJobs:
		return "memory"
	}
	return TargetDirect
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (b *bench) report() *BenchReport {
	m := readMachine()
	m.NoFile, m.Rounds, m.DurationS, m.LoadAvgStart = b.nofile, b.cfg.Rounds, b.cfg.Duration.Seconds(), b.loadStart
	m.IdleScale, m.IdleScaleWanted = b.scaleRun[0], b.scaleRun[1]
	m.Tasks, m.Conns, m.Idle, m.Skipped = b.cfg.Tasks, b.cfg.Conns, b.cfg.Idle, b.res.skipped
	rep := &BenchReport{Machine: m}
	med := map[figKey]float64{}
	for k, v := range b.res.vals {
		med[k] = median(v)
	}
	// Scenario by scenario (cpu right after tput), figure by figure in the
	// order first measured, targets in the order measured.
	order := slices.Clone(b.res.order)
	scIndex := func(s string) int {
		if s == benchCPU {
			return 2*slices.Index(BenchScenarios, BenchTput) + 1
		}
		return 2 * slices.Index(BenchScenarios, s)
	}
	metricIndex := map[string]int{}
	for _, k := range b.res.order {
		if _, ok := metricIndex[k.scenario+"\x00"+k.metric]; !ok {
			metricIndex[k.scenario+"\x00"+k.metric] = len(metricIndex)
		}
	}
	slices.SortStableFunc(order, func(a, b figKey) int {
		if d := scIndex(a.scenario) - scIndex(b.scenario); d != 0 {
			return d
		}
		return metricIndex[a.scenario+"\x00"+a.metric] - metricIndex[b.scenario+"\x00"+b.metric]
	})
	for _, k := range order {
		row := BenchRow{Scenario: k.scenario, Metric: k.metric, Unit: k.unit, Target: k.target,
			Median: round(med[k], 3), Rounds: b.res.vals[k]}
		ref := figKey{k.scenario, k.metric, k.unit, refTarget(k.scenario)}
		if rv, ok := med[ref]; ok && rv > 0 {
			row.Ref = ref.target
			ratio := round(med[k]/rv, 3)
			row.Ratio = &ratio
			if k.unit == "µs" || k.unit == "ms" {
				added := round(med[k]-rv, 1)
				row.Added = &added
			}
		}
		d64 := figKey{k.scenario, k.metric, k.unit, TargetDirect64}
		if rv, ok := med[d64]; ok && rv > 0 && k.scenario == BenchTput {
			ratio := round(med[k]/rv, 3)
			row.RatioDirect64 = &ratio
		}
		rep.Rows = append(rep.Rows, row)
	}
	rep.Goals = rep.goals()
	return rep
}

func (r *BenchReport) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *BenchRow) metricLabel() string {
	if r.Unit == "" {
		return r.Metric
	}
	return r.Metric + " " + r.Unit
}

// notes is the ratio columns of a row as text.
func (r *BenchRow) notes() (ratio, extra string) {
	ratio = "–"
	if r.Ratio != nil {
		ratio = fmt.Sprintf("%.2f", *r.Ratio)
	}
	var ex []string
	if r.Added != nil && r.Target != r.Ref {
		ex = append(ex, fmt.Sprintf("%+.1f %s", *r.Added, r.Unit))
	}
	if r.RatioDirect64 != nil {
		ex = append(ex, fmt.Sprintf("%.2f of direct-64", *r.RatioDirect64))
	}
	return ratio, strings.Join(ex, ", ")
}

func (r *BenchReport) header() string {
	m := r.Machine
	s := fmt.Sprintf("machine: %s, %d CPUs, Linux %s, %s; load average %s at the start, %s at the end; open-file limit %d\n"+
		"run ended %s: %d rounds interleaved, medians; rtt %d tasks; %d connections; idle %d connections\n",
		m.CPU, m.NumCPU, m.Kernel, m.GoVersion, m.LoadAvgStart, m.LoadAvg, m.NoFile, m.Date, m.Rounds, m.Tasks, m.Conns, m.Idle)
	for _, sk := range m.Skipped {
		s += "skipped: " + sk + "\n"
	}
	return s
}

// writeTable writes the rows as a plain table; ratio is to the scenario's
// reference target (direct unless said).
func (r *BenchReport) writeTable(w io.Writer) error {
	if _, err := io.WriteString(w, r.header()+"\n"); err != nil {
		return err
	}
	const format = "%-8s  %-30s  %-20s  %11s  %6s  %-10s  %s\n"
	if _, err := fmt.Fprintf(w, format, "scenario", "metric", "target", "median", "ratio", "ratio to", "note"); err != nil {
		return err
	}
	for _, row := range r.Rows {
		ratio, extra := row.notes()
		if _, err := fmt.Fprintf(w, format, row.Scenario, row.metricLabel(), row.Target,
			number(row.Median), ratio, row.Ref, extra); err != nil {
			return err
		}
	}
	if len(r.Goals) > 0 {
		if _, err := io.WriteString(w, "\ngoals (issue 13):\n"); err != nil {
			return err
		}
	}
	for _, g := range r.Goals {
		if _, err := fmt.Fprintf(w, "  %-6s  %-66s  %s\n", g.mark(), g.Goal, g.Got); err != nil {
			return err
		}
	}
	return nil
}

// writeMarkdown writes the figures section of BENCHMARKS.md: one table
// per scenario, followed by its charts in svgDir when given.
func (r *BenchReport) writeMarkdown(w io.Writer, svgDir string) error {
	var sb strings.Builder
	sb.WriteString("```\n" + r.header() + "```\n")
	if len(r.Goals) > 0 {
		sb.WriteString("\n### Goals (issue 13)\n\n| goal | this run | |\n|---|---|---|\n")
		for _, g := range r.Goals {
			fmt.Fprintf(&sb, "| %s | %s | %s |\n", g.Goal, g.Got, g.mark())
		}
	}
	for i := 0; i < len(r.Rows); {
		sc := r.Rows[i].Scenario
		fmt.Fprintf(&sb, "\n### %s\n\n| metric | target | median | ratio | to | note |\n|---|---|---:|---:|---|---|\n", sc)
		var charts []string
		for ; i < len(r.Rows) && r.Rows[i].Scenario == sc; i++ {
			row := r.Rows[i]
			ratio, extra := row.notes()
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", row.metricLabel(), row.Target, number(row.Median), ratio, row.Ref, extra)
			img := fmt.Sprintf("![%s: %s](%s)", row.Scenario, row.Metric,
				filepath.ToSlash(filepath.Join(svgDir, svgName(row.Scenario, row.Metric))))
			if svgDir != "" && !slices.Contains(charts, img) {
				charts = append(charts, img)
			}
		}
		if len(charts) > 0 {
			sb.WriteString("\n" + strings.Join(charts, "\n") + "\n")
		}
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// svgName is the file name of a figure's chart: letters and digits of
// scenario and metric, the rest turned into single dashes (a report read
// back with --from-json names no path).
func svgName(scenario, metric string) string {
	return slug(scenario) + "-" + slug(metric) + ".svg"
}

func slug(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
	for strings.Contains(s, "--") {
		s = strings.ReplaceAll(s, "--", "-")
	}
	if s = strings.Trim(s, "-"); s == "" {
		s = "x"
	}
	return s
}

// writeSVGs writes one horizontal bar chart per figure into dir.
func (r *BenchReport) writeSVGs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type fig struct {
		scenario, metric, unit string
		rows                   []BenchRow
	}
	var figs []*fig
	for _, row := range r.Rows {
		if n := len(figs); n > 0 && figs[n-1].scenario == row.Scenario && figs[n-1].metric == row.Metric {
			figs[n-1].rows = append(figs[n-1].rows, row)
			continue
		}
		figs = append(figs, &fig{row.Scenario, row.Metric, row.Unit, []BenchRow{row}})
	}
	for _, f := range figs {
		title := f.scenario + ": " + f.metric
		if f.unit != "" {
			title += " (" + f.unit + ")"
		}
		if err := os.WriteFile(filepath.Join(dir, svgName(f.scenario, f.metric)), barChart(title, f.rows), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// barChart draws rows as horizontal bars, each labelled with its target,
// median and ratio.
func barChart(title string, rows []BenchRow) []byte {
	const (
		width, left, right = 640, 110, 150
		barH, gap, top     = 22, 8, 36
	)
	maxV := 0.0
	for _, r := range rows {
		maxV = max(maxV, r.Median)
	}
	if maxV <= 0 {
		maxV = 1
	}
	height := top + len(rows)*(barH+gap) + 10
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", width, height)
	fmt.Fprintf(&sb, `<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for i, r := range rows {
		y := top + i*(barH+gap)
		w := int(float64(width-left-right) * r.Median / maxV)
		color := "#8da0cb"
		if strings.HasPrefix(r.Target, TargetDrover) {
			color = "#fc8d62"
		} else if r.Target == r.Ref {
			color = "#66c2a5"
		}
		label := number(r.Median)
		if r.Ratio != nil {
			label += fmt.Sprintf("  (%.2f×)", *r.Ratio)
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-6, html.EscapeString(r.Target))
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y, max(w, 1), barH, color)
		fmt.Fprintf(&sb, `<text x="%d" y="%d">%s</text>`+"\n", left+max(w, 1)+6, y+barH-6, html.EscapeString(label))
	}
	sb.WriteString("</svg>\n")
	return []byte(sb.String())
}

// Goal is one of the targets, checked against the medians of the
// run.
type Goal struct {
	Goal string `json:"goal"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// goals checks the performance targets of issue 13 that this run
// measured; a goal whose figures are missing (a skipped target) is left
// out.
func (r *BenchReport) goals() []Goal {
	med := func(sc, metric, target string) (float64, bool) {
		for _, row := range r.Rows {
			if row.Scenario == sc && row.Metric == metric && row.Target == target {
				return row.Median, true
			}
		}
		return 0, false
	}
	var out []Goal
	add := func(goal string, ok bool, met bool, got string) {
		if ok {
			out = append(out, Goal{goal, got, met})
		}
	}
	all := func(oks ...bool) bool { return !slices.Contains(oks, false) }

	d, ok1 := med(BenchTput, "tasks/s", TargetDirect)
	d64, ok2 := med(BenchTput, "tasks/s", TargetDirect64)
	n, ok3 := med(BenchTput, "tasks/s", TargetNginx)
	dr, ok4 := med(BenchTput, "tasks/s", TargetDrover)
	add("tput ≥ 0.6 of direct-64", all(ok2, ok4), dr >= 0.6*d64, fmt.Sprintf("%.2f", dr/d64))
	add("tput ≥ 0.6 of direct", all(ok1, ok4), dr >= 0.6*d, fmt.Sprintf("%.2f", dr/d))
	add("tput above nginx", all(ok3, ok4), dr > n, fmt.Sprintf("%.0f vs %.0f tasks/s", dr, n))
	n64, ok5 := med(BenchTput, "tasks/s", TargetNginx64)
	add("tput above nginx-64 (the same 64 workers)", all(ok4, ok5), dr > n64, fmt.Sprintf("%.0f vs %.0f tasks/s", dr, n64))

	for _, p := range []string{"p50", "p99"} {
		d, ok1 := med(BenchRTT, p, TargetDirect)
		n, ok2 := med(BenchRTT, p, TargetNginx)
		dr, ok3 := med(BenchRTT, p, TargetDrover)
		if p == "p50" {
			add("rtt added p50 ≤ nginx's", all(ok1, ok2, ok3), dr-d <= n-d, fmt.Sprintf("%+.1f vs %+.1f µs", dr-d, n-d))
		} else {
			add("rtt p99 ≤ 1.5× nginx's", all(ok2, ok3), dr <= 1.5*n, fmt.Sprintf("%.2f×", dr/n))
		}
	}
	cd, ok1 := med(benchCPU, "CPU per million tasks", TargetDrover)
	cn, ok2 := med(benchCPU, "CPU per million tasks", TargetNginx)
	add("manager CPU per task below nginx's", all(ok1, ok2), cd < cn, fmt.Sprintf("%.1f vs %.1f s per million", cd, cn))
	cn64, ok3 := med(benchCPU, "CPU per million tasks", TargetNginx64)
	add("manager CPU per task below nginx-64's", all(ok1, ok3), cd < cn64, fmt.Sprintf("%.1f vs %.1f s per million", cd, cn64))

	if k, ok := med(BenchIdle, "memory per connection", TargetDrover); ok {
		add("idle ≤ 8 KiB per connection", true, k <= 8, fmt.Sprintf("%.1f KiB at %d connections", k, r.Machine.Idle))
	}
	if k, ok := med(BenchIdle, "memory per connection at scale", TargetDrover); ok {
		m := r.Machine
		what := fmt.Sprintf("%.1f KiB at %d connections", k, m.IdleScale)
		if m.IdleScale < m.IdleScaleWanted {
			what += fmt.Sprintf("; %d need an open-file limit this machine does not allow (%d)", m.IdleScaleWanted, m.NoFile)
		}
		add(fmt.Sprintf("%d idle connections at ≤ 8 KiB each", m.IdleScaleWanted), true, k <= 8 && m.IdleScale >= m.IdleScaleWanted, what)
	}
	for _, row := range r.Rows {
		if row.Scenario != BenchStream || (row.Target != TargetDrover && row.Target != TargetRemote && row.Target != TargetRemoteDirect) {
			continue
		}
		what := "stream /stream"
		if row.Target != TargetDrover {
			what += " (" + row.Target + ")"
		}
		d, ok1 := med(BenchStream, row.Metric, TargetDirect)
		n, ok2 := med(BenchStream, row.Metric, TargetNginx)
		add(what+" ≥ 0.8 of direct, "+row.Metric, ok1, row.Median >= 0.8*d, fmt.Sprintf("%.2f", row.Median/d))
		add(what+" above nginx-64k, "+row.Metric, ok2, row.Median > n, fmt.Sprintf("%.0f vs %.0f MB/s", row.Median, n))
	}
	for _, row := range r.Rows {
		if row.Scenario != BenchStdio || row.Target != TargetDrover || row.Metric == stdioCPUMetric {
			continue
		}
		w, ok := med(BenchStdio, row.Metric, TargetWebsocket)
		add("stdio above websocketd, "+row.Metric, ok, row.Median > w, fmt.Sprintf("%.2f", row.Median/w))
	}
	if p99, ok := med(BenchOpen, "p99", "drover-warm"); ok {
		add("warm open p99 ≤ 2 ms", true, p99 <= 2, fmt.Sprintf("%.2f ms", p99))
	}
	if p50, ok := med(BenchOpen, "p50", "drover-cold"); ok {
		add("cold open p50 ≤ 20 ms", true, p50 <= 20, fmt.Sprintf("%.2f ms", p50))
	}
	if j, ok := med(BenchJobs, "jobs/s", "redis"); ok {
		add("≥ 2,000 jobs/s through Redis", true, j >= 2000, fmt.Sprintf("%.0f jobs/s", j))
	}
	return out
}

func (g Goal) mark() string {
	if g.Met {
		return "met"
	}
	return "missed"
}
