package convert

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goodIndex is an index as Draw writes it: an assembly of two instances
// of one part and one of another, named with XML metacharacters.
const goodIndex = `drover-shatter 1 0.001
node 1 0 0:1:1:1 0 546f70203c413e - 0 0 0 1 0 0 0 1 0 0 0 1
part 1 0:1:1:2 426f6c74
node 2 1 0:1:1:2 1 426f6c74 3d3e5b303a313a313a325d 0 0 0 1 0 0 0 1 0 0 0 1
node 3 1 0:1:1:2 1 426f6c74 6c656674 10 0 0 11 0 0 10 1 0 10 0 1
part 2 0:1:1:3 -
node 4 1 0:1:1:3 2 - - 0 0 0 1 0 0 0 1 0 0 0 1
end 4 2
`

func TestParseShatterIndex(t *testing.T) {
	a, err := ParseShatterIndex(strings.NewReader(goodIndex))
	require.NoError(t, err)
	require.Equal(t, 0.001, a.Unit)
	require.Len(t, a.Parts, 2)
	require.Equal(t, "Bolt", a.Parts[0].Name)
	require.Len(t, a.Nodes, 4)
	require.Equal(t, "Top <A>", a.Nodes[0].Name)
	require.Equal(t, "left", a.Nodes[2].Instance)
	require.Equal(t, 1, a.Nodes[2].Part)

	a.PartFileNames()
	require.Equal(t, "Bolt.glb", a.Parts[0].File)
	require.Equal(t, "part.glb", a.Parts[1].File, "a part without a name")
	var buf bytes.Buffer
	require.NoError(t, a.WriteXML(&buf))
	var x shatteredXML
	require.NoError(t, xml.Unmarshal(buf.Bytes(), &x), buf.String())
	require.Equal(t, "Top <A>", x.Nodes[0].Name)
	require.Contains(t, buf.String(), `name="Top &lt;A&gt;"`)
	kids := x.Nodes[0].Children
	require.Len(t, kids, 3)
	require.Empty(t, kids[0].Instance)
	require.Equal(t, "left", kids[1].Instance)
	// (10, 0, 0) mm is (0.01, 0, 0) m.
	require.Equal(t, "1 0 0 0 0 1 0 0 0 0 1 0 0.01 0 0 1", kids[1].Matrix)
	require.Equal(t, 2, x.Parts[0].Instances)
}

func TestParseShatterIndexRefuses(t *testing.T) {
	node := func(id, parent, part string) string {
		return "node " + id + " " + parent + " 0:1:1:1 " + part + " 41 - 0 0 0 1 0 0 0 1 0 0 0 1\n"
	}
	head := "drover-shatter 1 0.001\n"
	for name, idx := range map[string]string{
		"empty":               "",
		"another format":      "hello 1 0.001\n",
		"version 2":           "drover-shatter 2 0.001\nend 0 0\n",
		"bad unit":            "drover-shatter 1 -1\nend 0 0\n",
		"no end":              head + node("1", "0", "0"),
		"count mismatch":      head + node("1", "0", "0") + "end 2 0\n",
		"after the end":       head + "end 0 0\n" + node("1", "0", "0"),
		"ids out of order":    head + node("2", "0", "0") + "end 1 0\n",
		"parent is later":     head + node("1", "1", "0") + "end 1 0\n",
		"unknown part":        head + node("1", "0", "1") + "end 1 0\n",
		"parent is a part":    head + "part 1 0:1:1:1 41\n" + node("1", "0", "1") + node("2", "1", "0") + "end 2 1\n",
		"part of other label": head + "part 1 0:1:1:9 41\n" + node("1", "0", "1") + "end 1 1\n",
		"not hex":             head + "part 1 0:1:1:1 zz\nend 0 1\n",
		"not UTF-8":           head + "part 1 0:1:1:1 ff\nend 0 1\n",
		"bad label":           head + "part 1 0:1:../1 41\nend 0 1\n",
		"NaN":                 head + "node 1 0 0:1:1:1 0 41 - NaN 0 0 1 0 0 0 1 0 0 0 1\nend 1 0\n",
		"infinite":            head + "node 1 0 0:1:1:1 0 41 - 1e999 0 0 1 0 0 0 1 0 0 0 1\nend 1 0\n",
		"short node":          head + "node 1 0 0:1:1:1 0 41 -\nend 1 0\n",
		"unknown record":      head + "exec rm -rf /\nend 0 0\n",
		"line too long":       head + "part 1 0:1:1:1 " + strings.Repeat("41", 40000) + "\nend 0 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseShatterIndex(strings.NewReader(idx))
			require.ErrorIs(t, err, ErrShatterIndex)
		})
	}
}

func TestPartFileNames(t *testing.T) {
	a := &Assembly{Parts: []AssemblyPart{
		{Name: "Bolt"}, {Name: "bolt"}, {Name: "../../etc/passwd"}, {Name: `C:\x`}, {Name: "日本"},
		{Name: strings.Repeat("a", 300)}, {Name: "index"}, {Name: "Bolt"}, {Name: "a b/c"},
	}}
	a.PartFileNames()
	var got []string
	for _, p := range a.Parts {
		got = append(got, p.File)
	}
	require.Equal(t, []string{"Bolt.glb", "bolt-2.glb", "etc_passwd.glb", "C_x.glb", "part.glb",
		strings.Repeat("a", 64) + ".glb", "index.glb", "Bolt-3.glb", "a_b_c.glb"}, got)
}

// FuzzParseShatterIndex: no input makes the parser panic, and what it
// accepts holds together: its XML has safe, unique file names and parses.
func FuzzParseShatterIndex(f *testing.F) {
	f.Add(goodIndex)
	f.Add("drover-shatter 1 0.001\nend 0 0\n")
	f.Add("drover-shatter 1 1\npart 1 0:1 -\nnode 1 0 0:1 1 - - 0 0 0 1 0 0 0 1 0 0 0 1\nend 1 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseShatterIndex(strings.NewReader(s))
		if err != nil {
			require.ErrorIs(t, err, ErrShatterIndex)
			return
		}
		a.PartFileNames()
		seen := map[string]bool{}
		for _, p := range a.Parts {
			require.NotContains(t, p.File, "/")
			require.NotContains(t, p.File, `\`)
			require.False(t, strings.HasPrefix(p.File, "."))
			require.False(t, seen[strings.ToLower(p.File)], p.File)
			seen[strings.ToLower(p.File)] = true
		}
		var buf bytes.Buffer
		require.NoError(t, a.WriteXML(&buf))
		var x shatteredXML
		require.NoError(t, xml.Unmarshal(buf.Bytes(), &x))
		require.Len(t, x.Parts, len(a.Parts))
	})
}
