package loadtest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	f, err := parseStat([]byte("42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 1 0\n"))
	require.NoError(t, err)
	require.Equal(t, "S", f[0])
	require.Equal(t, "1", f[1])    // ppid
	require.Equal(t, "250", f[11]) // utime
	require.Equal(t, "70", f[12])  // stime
	_, err = parseStat([]byte("no parenthesis"))
	require.Error(t, err)

	// This process: its own stat parses and it has used some CPU.
	f, err = procStat(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Getppid(), atoiOr(f[1]))
	require.Positive(t, rssKiB([]int{os.Getpid()}))
}

func atoiOr(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 1 0"))
	f.Add([]byte("7 ()) R 1"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, err := parseStat(b)
		if err == nil && bytes.LastIndexByte(b, ')') < 0 {
			t.Fatalf("parsed %q without a command name: %v", b, fields)
		}
	})
}

// FuzzReportFromJSON feeds `drover bench --from-json` any report: writing
// it as a table, Markdown and charts must not fail or panic.
func FuzzReportFromJSON(f *testing.F) {
	f.Add([]byte(`{"machine":{"cpu":"x","num_cpu":2},"rows":[{"scenario":"rtt","metric":"p50","unit":"µs","target":"direct","median":10,"rounds":[10]},{"scenario":"rtt","metric":"p50","unit":"µs","target":"drover","median":-3,"ref":"direct","ratio":2,"added":5}],"goals":[{"goal":"g","got":"1","met":true}]}`))
	f.Add([]byte(`{"rows":[{"scenario":"tput","metric":"<tasks/s>&","target":"\"x","median":1e308,"ratio_direct64":0.5}]}`))
	f.Add([]byte(`{}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep BenchReport
		if json.Unmarshal(data, &rep) != nil {
			return
		}
		var out bytes.Buffer
		if err := rep.writeTable(&out); err != nil {
			t.Fatal(err)
		}
		if err := rep.writeMarkdown(&out, "charts"); err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.Rows {
			svg := barChart(r.Scenario, []BenchRow{r})
			if !bytes.HasPrefix(svg, []byte("<svg")) {
				t.Fatalf("chart %q", svg)
			}
		}
		if len(rep.Rows) > 0 {
			sub := filepath.Join(dir, "svg")
			if err := rep.writeSVGs(sub); err != nil {
				t.Fatal(err)
			}
		}
	})
}
