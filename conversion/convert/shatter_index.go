package convert

import (
	"bufio"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrShatterIndex marks an index of a shattered model that Draw left
// broken or incomplete.
var ErrShatterIndex = errors.New("bad shatter index")

// Limits of the index: it is Draw's output about a user's model.
const (
	maxIndexLine  = 64 << 10
	maxLabelLen   = 128
	maxPartName   = 1000
	shatterFields = 7 + 12
)

// Assembly is a model's assembly tree, as Draw's shatter script found it.
type Assembly struct {
	// Unit is the model's length unit in metres.
	Unit float64
	// Parts are the distinct parts, in order: Parts[k-1] is part k.
	Parts []AssemblyPart
	// Nodes are the tree's nodes, parents before their children: Nodes[i]
	// has ID i+1. Roots have Parent 0.
	Nodes []AssemblyNode
}

// AssemblyPart is a shape that is no assembly: one GLB.
type AssemblyPart struct {
	// Label is its XDE label ("0:1:1:2"), Name its product name.
	Label, Name string
	// File is the GLB's file name in ShatteredDir, chosen by the server.
	File string
	// Size and Triangles describe the GLB once it is checked.
	Size      int64
	Triangles int
}

// AssemblyNode is an assembly, or an instance of a part, in the tree.
type AssemblyNode struct {
	ID, Parent int
	// Part is the part it instances (1-based), 0 for an assembly.
	Part int
	// Label is the XDE label of the shape it refers to; Name that shape's
	// product name, Instance the component's own name.
	Label, Name, Instance string
	// Place is where the node's placement in its parent takes (0,0,0),
	// (1,0,0), (0,1,0) and (0,0,1), in model units.
	Place [12]float64
}

// ParseShatterIndex reads the index Draw's shatter script wrote (see
// shatterScript). It checks every record: ids in order, parents and parts
// that exist, finite numbers, names that are UTF-8, counts that match the
// end record, at most MaxShatteredNodes nodes.
func ParseShatterIndex(r io.Reader) (*Assembly, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxIndexLine)
	a := &Assembly{}
	line, ended := 0, false
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrShatterIndex, line, fmt.Sprintf(format, args...))
	}
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if ended {
			return nil, bad("a record after the end")
		}
		if line == 1 {
			if len(f) != 3 || f[0] != "drover-shatter" || f[1] != "1" {
				return nil, bad("not a shatter index of version 1")
			}
			u, err := parseFinite(f[2])
			if err != nil || u <= 0 {
				return nil, bad("length unit %q", f[2])
			}
			a.Unit = u
			continue
		}
		switch f[0] {
		case "part":
			if len(f) != 4 {
				return nil, bad("a part record has %d fields, not 4", len(f))
			}
			if k, err := strconv.Atoi(f[1]); err != nil || k != len(a.Parts)+1 {
				return nil, bad("part %q out of order", f[1])
			}
			if len(a.Parts) >= MaxShatteredNodes {
				return nil, bad("more than %d parts", MaxShatteredNodes)
			}
			label, err := checkLabel(f[2])
			if err != nil {
				return nil, bad("%v", err)
			}
			name, err := decodeName(f[3])
			if err != nil {
				return nil, bad("part name: %v", err)
			}
			a.Parts = append(a.Parts, AssemblyPart{Label: label, Name: name})
		case "node":
			n, err := parseNode(f, a)
			if err != nil {
				return nil, bad("%v", err)
			}
			a.Nodes = append(a.Nodes, n)
		case "end":
			if len(f) != 3 || f[1] != strconv.Itoa(len(a.Nodes)) || f[2] != strconv.Itoa(len(a.Parts)) {
				return nil, bad("the end record does not count %d nodes and %d parts", len(a.Nodes), len(a.Parts))
			}
			ended = true
		default:
			return nil, bad("unknown record %.20q", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrShatterIndex, err)
	}
	switch {
	case line == 0:
		return nil, fmt.Errorf("%w: empty", ErrShatterIndex)
	case !ended:
		return nil, fmt.Errorf("%w: no end record: Draw stopped early", ErrShatterIndex)
	}
	return a, nil
}

func parseNode(f []string, a *Assembly) (AssemblyNode, error) {
	var n AssemblyNode
	if len(f) != shatterFields {
		return n, fmt.Errorf("a node record has %d fields, not %d", len(f), shatterFields)
	}
	if len(a.Nodes) >= MaxShatteredNodes {
		return n, fmt.Errorf("more than %d nodes", MaxShatteredNodes)
	}
	var err error
	if n.ID, err = strconv.Atoi(f[1]); err != nil || n.ID != len(a.Nodes)+1 {
		return n, fmt.Errorf("node %.20q out of order", f[1])
	}
	if n.Parent, err = strconv.Atoi(f[2]); err != nil || n.Parent < 0 || n.Parent >= n.ID {
		return n, fmt.Errorf("node %d: parent %.20q is no earlier node", n.ID, f[2])
	}
	if n.Parent > 0 && a.Nodes[n.Parent-1].Part != 0 {
		return n, fmt.Errorf("node %d: parent %d is a part", n.ID, n.Parent)
	}
	if n.Label, err = checkLabel(f[3]); err != nil {
		return n, err
	}
	if n.Part, err = strconv.Atoi(f[4]); err != nil || n.Part < 0 || n.Part > len(a.Parts) {
		return n, fmt.Errorf("node %d: part %.20q is unknown", n.ID, f[4])
	}
	if n.Part > 0 && a.Parts[n.Part-1].Label != n.Label {
		return n, fmt.Errorf("node %d: part %d is another label's", n.ID, n.Part)
	}
	if n.Name, err = decodeName(f[5]); err != nil {
		return n, fmt.Errorf("node %d: name: %w", n.ID, err)
	}
	if n.Instance, err = decodeName(f[6]); err != nil {
		return n, fmt.Errorf("node %d: instance name: %w", n.ID, err)
	}
	for i, s := range f[7:] {
		if n.Place[i], err = parseFinite(s); err != nil {
			return n, fmt.Errorf("node %d: placement: %w", n.ID, err)
		}
	}
	return n, nil
}

func parseFinite(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%.30q is not a finite number", s)
	}
	return v, nil
}

// checkLabel accepts an XDE label entry: numbers separated by colons.
func checkLabel(s string) (string, error) {
	ok := s != "" && len(s) <= maxLabelLen && s[0] != ':' && s[len(s)-1] != ':' && !strings.Contains(s, "::")
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] == ':' || '0' <= s[i] && s[i] <= '9'
	}
	if !ok {
		return "", fmt.Errorf("label %.30q", s)
	}
	return s, nil
}

// decodeName decodes a hex-encoded UTF-8 name; "-" is the empty name.
// Names longer than maxPartName bytes are cut.
func decodeName(s string) (string, error) {
	if s == "-" {
		return "", nil
	}
	if len(s) > 2*maxIndexLine {
		return "", errors.New("too long")
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 {
		return "", errors.New("not hex")
	}
	if !utf8.Valid(b) {
		return "", errors.New("not UTF-8")
	}
	name := string(b)
	for len(name) > maxPartName {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name, nil
}

// PartFileNames gives every part its file name: its name made safe (ASCII
// letters, digits, '-' and '_', at most 64 bytes; "part" when nothing is
// left) with ".glb", made unique with "-2", "-3", … regardless of case.
func (a *Assembly) PartFileNames() {
	seen := map[string]bool{strings.ToLower(ShatteredIndex): true}
	for i := range a.Parts {
		base := safePartName(a.Parts[i].Name)
		name := base + ".glb"
		for n := 2; seen[strings.ToLower(name)]; n++ {
			name = base + "-" + strconv.Itoa(n) + ".glb"
		}
		seen[strings.ToLower(name)] = true
		a.Parts[i].File = name
	}
}

func safePartName(name string) string {
	var b strings.Builder
	under := false
	for _, r := range name {
		ok := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_'
		switch {
		case ok:
			b.WriteRune(r)
			under = false
		case !under && b.Len() > 0:
			b.WriteByte('_')
			under = true
		}
		if b.Len() >= 64 {
			break
		}
	}
	s := strings.TrimRight(b.String(), "_")
	if s == "" {
		return "part"
	}
	return s
}

// xdePlaceholder starts the names XDE gives instances that have none of
// their own: "=>[0:1:1:2]", the label they refer to.
const xdePlaceholder = "=>["

// The index's XML. Matrices are glTF's: column-major 4×4, in metres, Y up,
// the frame of the part GLBs, so that a viewer places a part's GLB by the
// product of the matrices from the root to its node.
type (
	xmlAssembly struct {
		XMLName xml.Name   `xml:"ShatteredAssembly"`
		Version int        `xml:"version,attr"`
		Units   string     `xml:"units,attr"`
		Up      string     `xml:"up,attr"`
		Parts   []xmlPart  `xml:"Parts>Part"`
		Nodes   []*xmlNode `xml:"Tree>Node"`
	}
	xmlPart struct {
		File      string `xml:"file,attr"`
		Name      string `xml:"name,attr"`
		Instances int    `xml:"instances,attr"`
		Triangles int    `xml:"triangles,attr"`
		Size      int64  `xml:"size,attr"`
	}
	xmlNode struct {
		ID       int        `xml:"id,attr"`
		Name     string     `xml:"name,attr"`
		Instance string     `xml:"instance,attr,omitempty"`
		Part     string     `xml:"part,attr,omitempty"`
		Matrix   string     `xml:"matrix,attr"`
		Children []*xmlNode `xml:"Node"`
	}
)

// WriteXML writes the index of the shattered model: the parts, by file
// and name, and the assembly tree, each node with its name, the part file
// it instances and its matrix. Names are the model's, escaped; files are
// PartFileNames'.
func (a *Assembly) WriteXML(w io.Writer) error {
	doc := xmlAssembly{Version: 1, Units: "m", Up: "Y", Parts: make([]xmlPart, len(a.Parts))}
	for i, p := range a.Parts {
		doc.Parts[i] = xmlPart{File: p.File, Name: p.Name, Triangles: p.Triangles, Size: p.Size}
	}
	nodes := make([]*xmlNode, len(a.Nodes))
	for i, n := range a.Nodes {
		x := &xmlNode{ID: n.ID, Name: n.Name, Matrix: formatMatrix(GLTFMatrix(n.Place, a.Unit))}
		if n.Instance != n.Name && !strings.HasPrefix(n.Instance, xdePlaceholder) {
			x.Instance = n.Instance
		}
		if n.Part > 0 {
			x.Part = a.Parts[n.Part-1].File
			doc.Parts[n.Part-1].Instances++
		}
		nodes[i] = x
		if n.Parent == 0 {
			doc.Nodes = append(doc.Nodes, x)
		} else {
			p := nodes[n.Parent-1]
			p.Children = append(p.Children, x)
		}
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// GLTFMatrix turns a placement (where it takes the origin and the unit
// points of the axes, in model units, Z up) into the glTF matrix of the
// same placement in the GLB's frame: metres, Y up, as OpenCASCADE's glTF
// writer converts, (x, y, z) ↦ unit·(x, z, −y). It is column-major.
func GLTFMatrix(place [12]float64, unit float64) [16]float64 {
	var a [3][3]float64 // a[row][col]: column j is the image of axis j
	for j := range 3 {
		for i := range 3 {
			a[i][j] = place[3+3*j+i] - place[i]
		}
	}
	t := [3]float64{place[0], place[1], place[2]}
	// r maps Z up to Y up; its inverse is its transpose.
	r := [3][3]float64{{1, 0, 0}, {0, 0, 1}, {0, -1, 0}}
	var ra, m [3][3]float64
	for i := range 3 {
		for j := range 3 {
			for k := range 3 {
				ra[i][j] += r[i][k] * a[k][j]
			}
		}
	}
	for i := range 3 {
		for j := range 3 {
			for k := range 3 {
				m[i][j] += ra[i][k] * r[j][k]
			}
		}
	}
	var out [16]float64
	for j := range 3 {
		for i := range 3 {
			out[4*j+i] = m[i][j]
		}
	}
	for i := range 3 {
		var v float64
		for k := range 3 {
			v += r[i][k] * t[k]
		}
		out[12+i] = v * unit
	}
	out[15] = 1
	return out
}

// formatMatrix prints a matrix's 16 numbers, rounded to 1e-12: Draw's
// points differ by rounding errors that would print as 0.50000000000019.
func formatMatrix(m [16]float64) string {
	var b strings.Builder
	for i, v := range m {
		if i > 0 {
			b.WriteByte(' ')
		}
		if math.Abs(v) < 1e6 {
			v = math.Round(v*1e12) / 1e12
		}
		if v == 0 {
			v = 0 // no "-0"
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return b.String()
}
