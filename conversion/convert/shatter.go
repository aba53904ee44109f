package convert

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"text/template"
)

// Shattered outputs: a conversion with Job.Shattered also delivers one GLB
// per part of the model's assembly, and an XML index of the assembly tree,
// under ShatteredDir in the output directory.
const (
	// ShatteredDir is the output directory's subdirectory of the shattered
	// outputs; their Output.Names start with it and a slash.
	ShatteredDir = "shattered"
	// ShatteredIndex is the index's file name in ShatteredDir.
	ShatteredIndex = "index.xml"
	// TypeShattered is the step that shatters a model.
	TypeShattered = "shattered"
	// TypeXML is the type of the shattered index.
	TypeXML = "xml"
)

// MaxShatteredNodes bounds the nodes of a shattered assembly tree: an
// assembly instanced in an assembly instanced … grows it exponentially.
const MaxShatteredNodes = 10000

// maxShatteredDepth bounds the nesting of assemblies.
const maxShatteredDepth = 64

// Shatter writes one GLB per part of a CAD model and an index of its
// assembly tree, with OpenCASCADE's Draw: it reads the file into an XDE
// document, walks the assembly from its free shapes, and writes each part
// (a shape that is no assembly, once however often it is instanced) into a
// document of its own, meshed and exported as a GLB. Command's out is the
// directory the parts (p1.glb, p2.glb, …) and the index (index.txt, read
// by ParseShatterIndex) are written to.
type Shatter struct {
	Program string
	// Reader is as for Draw: "ReadStep", "ReadIges" or "restore".
	Reader string
	// MaxNodes bounds the assembly tree's nodes; 0 or more than
	// MaxShatteredNodes for MaxShatteredNodes.
	MaxNodes int
}

var _ Tool = Shatter{}

// shatterIndexName is the index Draw writes in the step's directory.
const shatterIndexName = "index.txt"

// shatterScriptName is the script's name in the work directory.
const shatterScriptName = "shatter.tcl"

// shatterScript is the Tcl that shatters a model. As drawScript, it names
// only server-chosen, brace-quoted paths. The model's names reach it only
// as values of Tcl variables, never as code, and leave it hex-encoded, one
// record a line:
//
//	drover-shatter 1 <metres per model unit>
//	part <k> <label> <name>
//	node <id> <parent id or 0> <label> <part k or 0> <name> <instance name> <12 numbers>
//	end <nodes> <parts>
//
// The 12 numbers are where the node's placement in its parent takes the
// points (0,0,0), (1,0,0), (0,1,0) and (0,0,1), in model units: Draw
// prints locations with 6 digits, points with all 17. A part's record
// comes before the first node that uses it, and its GLB p<k>.glb is
// written by then.
var shatterScript = template.Must(template.New("shatter").Funcs(template.FuncMap{"tclPath": tclPath}).Parse(
	`pload MODELING OCAF XDE
if {[catch {
  set drover_out {{tclPath .Out}}
  set drover_limit {{.Limit}}
  file mkdir $drover_out
{{- if eq .Reader "restore"}}
  restore {{tclPath .In}} drover_s
  XNewDoc D
  XAddShape D drover_s 1
{{- else}}
  {{.Reader}} D {{tclPath .In}}
{{- end}}
  if {[catch {XGetLengthUnit D -scale} drover_unit] || ![string is double -strict $drover_unit]} {
    set drover_unit 0.001
  }
  set drover_idx [open [file join $drover_out ` + shatterIndexName + `] w]
  puts $drover_idx "drover-shatter 1 $drover_unit"
  set drover_nodes 0
  set drover_parts 0
  proc drover_hex {s} {
    if {$s eq ""} { return - }
    return [binary encode hex [encoding convertto utf-8 $s]]
  }
  proc drover_name {l} {
    global D
    if {[catch {GetName D $l} n]} { return "" }
    return $n
  }
  proc drover_place {c} {
    global D
    XGetShape drover_loc D $c
    set r {}
    foreach {x y z} {0 0 0 1 0 0 0 1 0 0 0 1} {
      vertex drover_v $x $y $z
      tmove drover_v drover_loc
      mkpoint drover_p drover_v
      coord drover_p drover_x drover_y drover_z
      lappend r [dval drover_x] [dval drover_y] [dval drover_z]
    }
    return $r
  }
  proc drover_part {l k} {
    global D drover_out drover_idx
    XNewDoc drover_P
    # The part's GLB is scaled as the index's unit says.
    catch {XSetLengthUnit drover_P [XGetLengthUnit D]}
    XExtract drover_P D $l
    XGetOneShape drover_ps drover_P
    incmesh drover_ps 0.001 -prs
    WriteGltf drover_P [file join $drover_out p$k.glb] -mergeFaces -nodeNameFormat prodOrInst
    Close drover_P
    puts $drover_idx "part $k $l [drover_hex [drover_name $l]]"
  }
  proc drover_walk {l parent inst place depth} {
    global D drover_idx drover_nodes drover_limit drover_parts drover_partOf
    if {$depth > {{.Depth}}} { error "the assembly is nested more than {{.Depth}} levels deep" }
    incr drover_nodes
    if {$drover_nodes > $drover_limit} { error "the assembly tree has more than $drover_limit nodes" }
    set id $drover_nodes
    set asm [string match "*Assembly*" [XLabelInfo D $l]]
    set part 0
    if {!$asm} {
      if {![info exists drover_partOf($l)]} {
        incr drover_parts
        set drover_partOf($l) $drover_parts
        drover_part $l $drover_parts
      }
      set part $drover_partOf($l)
    }
    puts $drover_idx "node $id $parent $l $part [drover_hex [drover_name $l]] [drover_hex $inst] $place"
    if {!$asm} { return }
    set n [XNbComponents D $l]
    set found 0
    for {set i 1} {$found < $n && $i <= $n + 1000} {incr i} {
      set c $l:$i
      if {[catch {XGetReferredShape D $c} r] || [string trim $r] eq ""} { continue }
      incr found
      drover_walk [string trim $r] $id [drover_name $c] [drover_place $c] [expr {$depth + 1}]
    }
  }
  foreach drover_root [XGetFreeShapes D] {
    drover_walk $drover_root 0 "" {0 0 0 1 0 0 0 1 0 0 0 1} 0
  }
  puts $drover_idx "end $drover_nodes $drover_parts"
  close $drover_idx
} err]} {
  puts "` + drawFailed + ` $err"
}
exit
`))

// Command implements Tool.
func (s Shatter) Command(in, out, dir string) (Command, error) {
	if !slices.Contains([]string{"ReadStep", "ReadIges", "restore"}, s.Reader) {
		return Command{}, fmt.Errorf("draw: unknown reader %q", s.Reader)
	}
	limit := s.MaxNodes
	if limit <= 0 || limit > MaxShatteredNodes {
		limit = MaxShatteredNodes
	}
	var buf bytes.Buffer
	err := shatterScript.Execute(&buf, struct {
		Reader, In, Out string
		Limit, Depth    int
	}{s.Reader, in, out, limit, maxShatteredDepth})
	if err != nil {
		return Command{}, fmt.Errorf("draw: %w", err)
	}
	script := filepath.Join(dir, shatterScriptName)
	return Command{
		Argv:  []string{s.Program, "-b", "-f", script},
		Files: []File{{Path: script, Data: buf.Bytes()}},
		Check: checkDraw,
	}, nil
}

// collectShattered checks what the shatter step wrote in dir and moves it
// into out/ShatteredDir under the server's names: every part's GLB, checked
// as every GLB is, and the index as XML. It returns these outputs.
func (c *Converter) collectShattered(dir, out string) ([]Output, error) {
	fh, err := os.Open(filepath.Join(dir, shatterIndexName))
	if err != nil {
		return nil, fmt.Errorf("%w: %w: Draw wrote none", ErrToolFailed, ErrShatterIndex)
	}
	a, err := ParseShatterIndex(fh)
	fh.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrToolFailed, err)
	}
	if len(a.Parts) == 0 {
		return nil, fmt.Errorf("%w: %w: the model has no parts", ErrToolFailed, ErrShatterIndex)
	}
	a.PartFileNames()
	dst := filepath.Join(out, ShatteredDir)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return nil, err
	}
	outs := make([]Output, 0, len(a.Parts)+1)
	for k := range a.Parts {
		p := &a.Parts[k]
		src := filepath.Join(dir, fmt.Sprintf("p%d.glb", k+1))
		info, err := InspectGLBFile(src)
		if err != nil {
			return nil, fmt.Errorf("%w: part %q: %w", ErrToolFailed, p.Name, err)
		}
		p.Size, p.Triangles = info.Size, info.Triangles
		if err := os.Rename(src, filepath.Join(dst, p.File)); err != nil {
			return nil, err
		}
		outs = append(outs, Output{Name: ShatteredDir + "/" + p.File, Type: TypeGLB})
	}
	var buf bytes.Buffer
	if err := a.WriteXML(&buf); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dst, ShatteredIndex), buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	c.log.Debug("model shattered", "parts", len(a.Parts), "nodes", len(a.Nodes))
	return append(outs, Output{Name: ShatteredDir + "/" + ShatteredIndex, Type: TypeXML}), nil
}
