package convert

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrCommandLine marks a conversionCommandLine that cannot be honoured.
var ErrCommandLine = errors.New("invalid conversionCommandLine")

// Output types.
const (
	TypeGLB = "glb"
	TypePNG = "png"
	TypeSTL = "stl"
	TypeOBJ = "obj"
	// TypeMTL is the material file that comes with an OBJ output.
	TypeMTL = "mtl"
)

// Limits on a command line: it comes from a user.
const (
	maxCommandLineArgs = 64
	maxArgLen          = 255
	minResolution      = 16
	maxResolution      = 4096
)

// Options are what a user's conversionCommandLine asks for, checked.
type Options struct {
	// Outputs are the requested outputs in the order asked, each type at
	// most once.
	Outputs []OutputSpec
	// Background is the thumbnail's background colour, RGB in [0, 1].
	Background [3]float64
	// Transparent leaves the thumbnail's background transparent.
	Transparent bool
	// Width and Height are the thumbnail's size in pixels.
	Width, Height int
}

// OutputSpec is one requested output.
type OutputSpec struct {
	Type string
	// Name is the output's file name; empty for the default, the item's
	// name with ".<type>" appended, as the HOOPS conversion server names
	// its outputs.
	Name string
}

// DefaultOptions are the options of an empty command line: a GLB and a
// 640×480 PNG thumbnail on white, as the HOOPS conversion server made an
// SCS and a PNG.
func DefaultOptions() Options {
	return Options{
		Outputs:    []OutputSpec{{Type: TypeGLB}, {Type: TypePNG}},
		Background: [3]float64{1, 1, 1},
		Width:      640,
		Height:     480,
	}
}

// Wants reports whether an output of type typ is requested.
func (o Options) Wants(typ string) bool {
	return slices.ContainsFunc(o.Outputs, func(s OutputSpec) bool { return s.Type == typ })
}

// flag is one accepted flag of the HOOPS Converter's command line. Only
// these are accepted; the HOOPS Converter documents many more, and those
// that drover's converters cannot honour are refused by name.
type flag struct {
	// output is the output type an --output_<type> flag asks for.
	output string
	// parse checks the flag's value and applies it; nil for output flags,
	// whose value, an output file name, is optional.
	parse func(o *Options, value string) error
	help  string
}

var flags = map[string]flag{
	"--output_glb": {output: TypeGLB, help: "a binary glTF of the model: part names, colours, assembly structure"},
	"--output_png": {output: TypePNG, help: "a thumbnail rendered with f3d"},
	"--output_stl": {output: TypeSTL, help: "a binary STL of the model's triangles"},
	"--output_obj": {output: TypeOBJ, help: "a Wavefront OBJ and its material file"},
	"--background_color": {parse: parseBackground,
		help: "the thumbnail's background: R,G,B in [0,1]; default 1,1,1 (white)"},
	"--output_png_resolution": {parse: parseResolution,
		help: "the thumbnail's size WIDTHxHEIGHT, each 16 to 4096; default 640x480"},
	"--png_transparent_background": {parse: parseTransparent,
		help: "true or false: leave the thumbnail's background transparent; default false"},
}

// hoopsOnly are flags of the HOOPS Converter that drover's built-in
// converters cannot honour: they get a clearer refusal than an unknown flag.
var hoopsOnly = []string{
	"--output_scs", "--output_sc", "--output_scz", "--output_prc", "--output_pdf", "--output_html",
	"--output_step", "--output_jt", "--output_xt", "--output_3mf", "--output_hsf", "--output_fbx",
	"--output_xml_assemblytree", "--output_xml_BOM", "--output_model_info", "--output_dependencies",
	"--output_logfile", "--output_directory", "--output_configurations", "--output_measurement",
	"--output_sc_master", "--prepare_shattered_parts", "--prepare_shattered_scs_parts",
	"--prepare_shattered_xml", "--input", "--license", "--license_file", "--xml_settings",
	"--sc_export_attributes", "--sc_create_scz", "--sc_compress_scz", "--import_hidden_objects",
	"--ifc_import_openings", "--tessellation_quality", "--search_directories",
}

// Flags describes the accepted flags, for documentation: flag → help.
func Flags() map[string]string {
	m := make(map[string]string, len(flags))
	for name, f := range flags {
		m[name] = f.help
	}
	return m
}

// ParseCommandLine checks a user's conversionCommandLine, the HOOPS style
// flat list of flags and values, and returns the options it asks for. The
// outputs it names replace the default ones; a leading "*" keeps the
// defaults and adds to them. A flag's value follows it, or is joined to it
// with "=" (--background_color=1,1,1); an output flag's value, an output
// file name, may be left out. Only the flags in Flags are accepted. An
// empty list asks for the defaults.
func ParseCommandLine(args []string) (Options, error) {
	opts := DefaultOptions()
	if len(args) == 0 {
		return opts, nil
	}
	if len(args) > maxCommandLineArgs {
		return Options{}, fmt.Errorf("%w: %d arguments, more than %d", ErrCommandLine, len(args), maxCommandLineArgs)
	}
	keep := args[0] == "*"
	if keep {
		args = args[1:]
	} else {
		opts.Outputs = nil
	}
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if err := checkArg(arg); err != nil {
			return Options{}, err
		}
		name, value, hasValue := strings.Cut(arg, "=")
		f, ok := flags[name]
		if !ok {
			return Options{}, unknownFlag(name)
		}
		if seen[name] {
			return Options{}, fmt.Errorf("%w: %s is given twice", ErrCommandLine, name)
		}
		seen[name] = true
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			i++
			value, hasValue = args[i], true
			if err := checkArg(value); err != nil {
				return Options{}, err
			}
		}
		if f.output != "" {
			if err := addOutput(&opts, f.output, value); err != nil {
				return Options{}, err
			}
			continue
		}
		if !hasValue {
			return Options{}, fmt.Errorf("%w: %s needs a value", ErrCommandLine, name)
		}
		if err := f.parse(&opts, value); err != nil {
			return Options{}, fmt.Errorf("%w: %s %q: %w", ErrCommandLine, name, value, err)
		}
	}
	if len(opts.Outputs) == 0 {
		return Options{}, fmt.Errorf("%w: it asks for no output; name one (--output_glb, --output_png, --output_stl, --output_obj) or start it with \"*\" to keep the defaults", ErrCommandLine)
	}
	return opts, nil
}

func checkArg(arg string) error {
	switch {
	case len(arg) > maxArgLen:
		return fmt.Errorf("%w: an argument is longer than %d bytes", ErrCommandLine, maxArgLen)
	case !utf8.ValidString(arg) || strings.ContainsFunc(arg, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: %q has a control character or is not UTF-8", ErrCommandLine, arg)
	}
	return nil
}

func unknownFlag(name string) error {
	if strings.HasPrefix(name, "--prepare_shattered") {
		return fmt.Errorf("%w: %s needs the HOOPS Converter; drover shatters STEP, IGES and BREP assemblies into GLB parts with the processShattered argument", ErrCommandLine, name)
	}
	if slices.Contains(hoopsOnly, name) {
		return fmt.Errorf("%w: %s needs the HOOPS Converter; drover's built-in converters accept %s", ErrCommandLine, name, strings.Join(flagNames(), ", "))
	}
	if !strings.HasPrefix(name, "--") {
		return fmt.Errorf("%w: %q is not a flag; flags start with \"--\" and take at most one value", ErrCommandLine, name)
	}
	return fmt.Errorf("%w: unknown flag %s; accepted: %s", ErrCommandLine, name, strings.Join(flagNames(), ", "))
}

func flagNames() []string {
	names := make([]string, 0, len(flags))
	for name := range flags {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// addOutput adds an output, or names a default one that "*" kept.
func addOutput(o *Options, typ, name string) error {
	if name != "" {
		if err := checkOutputName(name); err != nil {
			return fmt.Errorf("%w: --output_%s: %w", ErrCommandLine, typ, err)
		}
		if typ == TypeOBJ && !strings.EqualFold(extOf(name), ".obj") {
			// The material file is named after the OBJ's stem.
			return fmt.Errorf("%w: --output_obj: %q must end in .obj", ErrCommandLine, name)
		}
	}
	for i, s := range o.Outputs {
		if s.Type == typ {
			o.Outputs[i].Name = name
			return nil
		}
	}
	o.Outputs = append(o.Outputs, OutputSpec{Type: typ, Name: name})
	return nil
}

// checkOutputName accepts a plain file name: one path element, no leading
// dot (hidden) or dash (a flag, to the converters and to this parser), no
// separators or control characters.
func checkOutputName(name string) error {
	switch {
	case name == "" || len(name) > maxArgLen:
		return fmt.Errorf("output name %q is empty or too long", name)
	case strings.HasPrefix(name, "."), strings.HasPrefix(name, "-"):
		return fmt.Errorf("output name %q starts with a dot or a dash", name)
	case strings.ContainsAny(name, `/\:*?"<>|`):
		return fmt.Errorf("output name %q is not a plain file name", name)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("output name %q has a control character or is not UTF-8", name)
	}
	return nil
}

func parseBackground(o *Options, v string) error {
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		return errors.New("want R,G,B")
	}
	var c [3]float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return errors.New("want R,G,B, each from 0 to 1")
		}
		c[i] = f
	}
	o.Background = c
	return nil
}

func parseResolution(o *Options, v string) error {
	ws, hs, ok := strings.Cut(v, "x")
	w, werr := strconv.Atoi(ws)
	h, herr := strconv.Atoi(hs)
	if !ok || werr != nil || herr != nil || w < minResolution || h < minResolution || w > maxResolution || h > maxResolution {
		return fmt.Errorf("want WIDTHxHEIGHT, each from %d to %d", minResolution, maxResolution)
	}
	o.Width, o.Height = w, h
	return nil
}

func parseTransparent(o *Options, v string) error {
	switch v {
	case "true", "True", "1":
		o.Transparent = true
	case "false", "False", "0":
		o.Transparent = false
	default:
		return errors.New("want true or false")
	}
	return nil
}

// CommandLine is the canonical command line of o: ParseCommandLine gives o
// back from it.
func (o Options) CommandLine() []string {
	var args []string
	for _, s := range o.Outputs {
		args = append(args, "--output_"+s.Type)
		if s.Name != "" {
			args = append(args, s.Name)
		}
	}
	d := DefaultOptions()
	if o.Background != d.Background {
		args = append(args, "--background_color", fmt.Sprintf("%s,%s,%s",
			formatFloat(o.Background[0]), formatFloat(o.Background[1]), formatFloat(o.Background[2])))
	}
	if o.Width != d.Width || o.Height != d.Height {
		args = append(args, "--output_png_resolution", fmt.Sprintf("%dx%d", o.Width, o.Height))
	}
	if o.Transparent {
		args = append(args, "--png_transparent_background", "true")
	}
	return args
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
