package convert

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Request is what Plan needs to know about a conversion.
type Request struct {
	// Model is the path of the file to convert: server-chosen, or inside
	// the unpacked ZIP.
	Model string
	// Format is a file name whose extension says the model's format: the
	// item's name, or the startPath of a ZIP.
	Format string
	// Name is the item's name: default outputs are named <Name>.<type>.
	Name string
	// OutputDir receives the outputs.
	OutputDir string
	// Options are the checked conversionCommandLine.
	Options Options
	// Shattered adds the shattered outputs: a GLB per part and the
	// assembly's index, under ShatteredDir.
	Shattered bool
	// InputDir is the directory of the model and the files it refers to:
	// the root of an unpacked ZIP. "" for the model's own directory. A
	// container sees it, read-only, and the work directory; nothing else.
	InputDir string
}

// Plan is the steps of one conversion, ready to execute.
type Plan struct {
	// Model is the file converted.
	Model string
	// Steps run in order.
	Steps []Step
	// Outputs are the files Execute delivers, sizes unknown yet. An OBJ's
	// material file is added when assimp writes one.
	Outputs []Output

	opts      Options
	display   string // the model's name as the user knows it, for details
	outputDir string
	work      string // below outputDir, made by Execute
	input     string // the path tools read: Model, or link to it
	inputDir  string // Request.InputDir
	name      string // the item's name, for {name}
}

// Step is one run of a converter.
type Step struct {
	// Type is the output type the step makes: glb, png, stl or obj.
	Type string
	// Command is what runs.
	Command Command
	// Out is the file the step writes.
	Out string
	// Final is the output's file name when the output was asked for; ""
	// for a step whose file only feeds later steps (the GLB a CAD
	// thumbnail is rendered from).
	Final string
}

// Work directory layout: tmp holds the server-named files (the input link,
// Draw's script and GLB, the thumbnail), out the outputs under their final
// names until they move to the output directory.
const (
	workPrefix = ".convert-"
	tmpDir     = "tmp"
	outDir     = "out"
	shatterDir = "shatter"
	inputStem  = "input"
	glbFile    = "model.glb"
	pngFile    = "thumbnail.png"
	stlFile    = "model.stl"
)

// Plan decides the steps of a conversion. It runs nothing and writes
// nothing; Execute does.
func (c *Converter) Plan(req Request) (*Plan, error) {
	if req.OutputDir == "" {
		return nil, conversionError(ReasonConversion, errors.New("convert: no output directory"))
	}
	entry, ok := c.reg.Lookup(req.Format)
	if !ok {
		return nil, conversionError(ReasonConversion, fmt.Errorf("%w: %w", ErrUnsupported, c.unsupported(req.Format)))
	}
	if req.Shattered && entry.Shatter == nil {
		return nil, conversionError(ReasonConversion, c.notShatterable(req.Format))
	}
	model, err := filepath.Abs(req.Model)
	if err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	opts := req.Options
	if len(opts.Outputs) == 0 {
		opts = DefaultOptions()
	}
	work := filepath.Join(req.OutputDir, workPrefix+randomHex())
	tmp := filepath.Join(work, tmpDir)
	p := &Plan{Model: model, opts: opts, display: filepath.Base(req.Format), outputDir: req.OutputDir, work: work, input: model,
		inputDir: req.InputDir, name: req.Name}
	// Tools read the model under a server-chosen name when they must: Draw
	// always, so no user text enters its Tcl; the others when the model's
	// own name does not carry its format's extension, which they go by.
	ext := extOf(req.Format)
	if !entry.Mesh || extOf(model) != ext {
		p.input = filepath.Join(tmp, inputStem+ext)
	}

	names, err := outputNames(opts, req.Name)
	if err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	final := func(typ string) string {
		if opts.Wants(typ) {
			return names[typ]
		}
		return ""
	}
	glb := filepath.Join(tmp, glbFile)
	needGLB := opts.Wants(TypeGLB) ||
		(opts.Wants(TypePNG) && !entry.ThumbnailFromInput) ||
		(!entry.Mesh && (opts.Wants(TypeSTL) || opts.Wants(TypeOBJ)))
	add := func(typ string, tool Tool, in, out string) error {
		var cmd Command
		var err error
		if nt, ok := tool.(NamedTool); ok {
			cmd, err = nt.CommandNamed(StepPaths{In: in, Out: out, Dir: tmp, Name: req.Name})
		} else {
			cmd, err = tool.Command(in, out, tmp)
		}
		if err != nil {
			return conversionError(ReasonConversion, err)
		}
		p.Steps = append(p.Steps, Step{Type: typ, Command: cmd, Out: out, Final: final(typ)})
		return nil
	}
	if needGLB {
		if err := add(TypeGLB, entry.GLB, p.input, glb); err != nil {
			return nil, err
		}
	}
	// STL and OBJ come from the input when assimp reads it, else from the
	// GLB; the thumbnail from the input when f3d reads it, else the GLB.
	meshSource := glb
	if entry.Mesh {
		meshSource = p.input
	}
	thumbSource := glb
	if entry.ThumbnailFromInput {
		thumbSource = p.input
	}
	pr := c.cfg.Programs
	for _, s := range opts.Outputs {
		var err error
		switch s.Type {
		case TypePNG:
			err = add(TypePNG, Thumbnail{XvfbRun: pr.XvfbRun, F3D: pr.F3D, Options: opts}, thumbSource, filepath.Join(tmp, pngFile))
		case TypeSTL:
			err = add(TypeSTL, Assimp{Program: pr.Assimp, Format: "stlb"}, meshSource, filepath.Join(tmp, stlFile))
		case TypeOBJ:
			// assimp names the material file after the OBJ and refers to it
			// by that name inside, so the OBJ is written under its final
			// name (argv carries it; no shell, no Tcl).
			err = add(TypeOBJ, Assimp{Program: pr.Assimp, Format: "obj"}, meshSource, filepath.Join(work, outDir, names[TypeOBJ]))
		}
		if err != nil {
			return nil, err
		}
	}
	if req.Shattered {
		// The parts and the index get their names from the model, after
		// the step: Execute adds them to the outputs.
		if err := add(TypeShattered, entry.Shatter, p.input, filepath.Join(tmp, shatterDir)); err != nil {
			return nil, err
		}
	}
	for _, s := range opts.Outputs {
		p.Outputs = append(p.Outputs, Output{Name: names[s.Type], Type: s.Type})
	}
	return p, nil
}

// notShatterable says why a processShattered conversion of a format
// cannot be.
func (c *Converter) notShatterable(format string) error {
	exts := c.reg.Shatterable()
	if len(exts) == 0 {
		return fmt.Errorf("%w: processShattered: no converter of this server shatters models", ErrUnsupported)
	}
	return fmt.Errorf("%w: processShattered: %s files are not shattered here (a mesh has no assembly structure); processShattered works for %s",
		ErrUnsupported, extOf(format), strings.Join(exts, " "))
}

// outputNames returns the file name of each requested output, and of the
// OBJ's material file, checking that no two are the same.
func outputNames(opts Options, item string) (map[string]string, error) {
	base := outputBase(item)
	names := map[string]string{}
	// The shattered outputs' directory is no output's name.
	seen := map[string]string{ShatteredDir: "shattered"}
	claim := func(typ, name string) error {
		if other, ok := seen[strings.ToLower(name)]; ok {
			return fmt.Errorf("%w: the %s and %s outputs would both be named %q", ErrCommandLine, other, typ, name)
		}
		seen[strings.ToLower(name)] = typ
		names[typ] = name
		return nil
	}
	for _, s := range opts.Outputs {
		name := s.Name
		if name == "" {
			name = base + "." + s.Type
		}
		if err := claim(s.Type, name); err != nil {
			return nil, err
		}
		if s.Type == TypeOBJ {
			if err := claim(TypeMTL, strings.TrimSuffix(name, filepath.Ext(name))+".mtl"); err != nil {
				return nil, err
			}
		}
	}
	return names, nil
}

// outputBase makes a file name base of an item's name: its last path
// element, without control characters or leading dots, at most 200 bytes.
func outputBase(item string) string {
	b := item
	if i := strings.LastIndexAny(b, `/\`); i >= 0 {
		b = b[i+1:]
	}
	b = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || strings.ContainsRune(`:*?"<>|`, r) {
			return -1
		}
		return r
	}, b)
	b = strings.TrimLeft(b, ".")
	for len(b) > 200 {
		_, size := utf8.DecodeLastRuneInString(b)
		b = b[:len(b)-size]
	}
	if b == "" {
		return "model"
	}
	return b
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Execute runs a plan's steps, checks what each made, and moves the
// outputs into the output directory. It returns them with their sizes.
func (c *Converter) Execute(ctx context.Context, p *Plan) ([]Output, error) {
	tctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeout, ErrTimeout)
	defer cancel()
	if err := os.MkdirAll(filepath.Join(p.work, tmpDir), 0o700); err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	defer func() {
		if err := os.RemoveAll(p.work); err != nil {
			c.log.Warn("conversion: remove work directory", "dir", p.work, "err", err)
		}
	}()
	if err := os.Mkdir(filepath.Join(p.work, outDir), 0o700); err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	if p.input != p.Model {
		if err := os.Symlink(p.Model, p.input); err != nil {
			return nil, conversionError(ReasonConversion, err)
		}
	}
	outputs := append([]Output(nil), p.Outputs...)
	mounts := p.mounts()
	for _, s := range p.Steps {
		start := time.Now()
		output, err := c.exec(tctx, filepath.Join(p.work, tmpDir), s.Command, mounts)
		if err == nil {
			err = c.checkOutput(s, p.opts)
		}
		if err == nil && s.Type == TypeShattered {
			var parts []Output
			if parts, err = c.collectShattered(s.Out, filepath.Join(p.work, outDir)); err == nil {
				outputs = append(outputs, parts...)
			}
		}
		d := time.Since(start)
		merr := err
		if err != nil && errors.Is(context.Cause(tctx), ErrTimeout) {
			merr = ErrTimeout
		}
		c.metrics.step(s.Type, merr, d)
		c.log.Debug("conversion step", "type", s.Type, "argv", s.Command.Argv, "duration", d, "err", err)
		if err != nil {
			return nil, c.stepError(ctx, tctx, p, s, output, err)
		}
		if s.Type == TypeOBJ && s.Final != "" {
			mtl := strings.TrimSuffix(s.Final, filepath.Ext(s.Final)) + ".mtl"
			if _, err := os.Stat(filepath.Join(p.work, outDir, mtl)); err == nil {
				outputs = append(outputs, Output{Name: mtl, Type: TypeMTL})
			}
		}
	}
	// Later steps may read what earlier ones wrote under server-chosen
	// names: the outputs take their final names only now.
	for _, s := range p.Steps {
		if dst := filepath.Join(p.work, outDir, s.Final); s.Final != "" && s.Out != dst {
			if err := os.Rename(s.Out, dst); err != nil {
				return nil, conversionError(ReasonConversion, err)
			}
		}
	}
	return c.deliver(p, outputs)
}

// deliver moves the outputs from the work directory into the output
// directory. Both are in the same directory tree, so each move is a rename.
func (c *Converter) deliver(p *Plan, outputs []Output) ([]Output, error) {
	root, err := os.OpenRoot(p.outputDir)
	if err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	defer root.Close()
	rel := filepath.Base(p.work)
	if slices.ContainsFunc(outputs, func(o Output) bool { return strings.HasPrefix(o.Name, ShatteredDir+"/") }) {
		// The parts of an earlier conversion into this directory go.
		if err := root.RemoveAll(ShatteredDir); err != nil {
			return nil, conversionError(ReasonConversion, err)
		}
		if err := root.Mkdir(ShatteredDir, 0o755); err != nil {
			return nil, conversionError(ReasonConversion, err)
		}
	}
	for i, o := range outputs {
		from := filepath.Join(rel, outDir, o.Name)
		fi, err := root.Stat(from)
		if err != nil {
			return nil, conversionError(ReasonConversion, fmt.Errorf("%w: no %s output: %w", ErrToolFailed, o.Type, err))
		}
		if err := root.Rename(from, o.Name); err != nil {
			return nil, conversionError(ReasonConversion, err)
		}
		outputs[i].Size = fi.Size()
	}
	return outputs, nil
}

// checkOutput checks the file a step made.
func (c *Converter) checkOutput(s Step, opts Options) error {
	switch s.Type {
	case TypeShattered:
		return nil // collectShattered checks the parts
	case TypeGLB:
		if _, err := InspectGLBFile(s.Out); err != nil {
			return fmt.Errorf("%w: %w", ErrToolFailed, err)
		}
		return nil
	case TypePNG:
		return checkThumbnail(s.Out, opts.Width, opts.Height)
	}
	fi, err := os.Stat(s.Out)
	switch {
	case err != nil:
		return fmt.Errorf("%w: no output: %w", ErrToolFailed, err)
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		return fmt.Errorf("%w: the output is empty", ErrToolFailed)
	}
	return nil
}

// stepError makes the *Error of a failed step, or returns the caller's
// context error when the caller gave up: that is no fault of the input.
// The detail names the model as the user does, and no server path.
func (c *Converter) stepError(ctx, tctx context.Context, p *Plan, s Step, output []byte, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("convert: %w", context.Cause(ctx))
	}
	if errors.Is(context.Cause(tctx), ErrTimeout) {
		le := &LimitError{Kind: LimitTimeout, Value: formatDuration(c.cfg.Timeout)}
		return &Error{Reason: ReasonConversion, Err: fmt.Errorf("%s step: %w", s.Type, le), Detail: le.Error()}
	}
	if errors.Is(err, ErrRunner) {
		// Not the input's fault: the caller tries again, or elsewhere.
		return fmt.Errorf("convert: %s step: %w", s.Type, err)
	}
	if le := (*LimitError)(nil); errors.As(err, &le) {
		return &Error{Reason: ReasonConversion, Err: fmt.Errorf("%s step: %w", s.Type, err), Detail: le.Error()}
	}
	d := detail(output)
	if d == "" || errors.Is(err, ErrBlankThumbnail) || errors.Is(err, ErrInvalidGLB) || s.Type == TypeShattered {
		d = strings.TrimSpace(d + "\n" + err.Error())
	}
	d = strings.NewReplacer(p.input, p.display, p.Model, p.display, p.work+"/", "").Replace(d)
	return &Error{Reason: ReasonConversion, Detail: shorten(d), Err: fmt.Errorf("%s step: %w", s.Type, err)}
}

// checkThumbnail checks that a PNG decodes, has the size asked for and is
// not blank: f3d exits 0 and writes an empty picture when it could not
// read its input.
func checkThumbnail(path string, w, h int) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: no thumbnail: %w", ErrToolFailed, err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		return fmt.Errorf("%w: thumbnail: %w", ErrToolFailed, err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		return fmt.Errorf("%w: thumbnail is %dx%d, not %dx%d", ErrToolFailed, b.Dx(), b.Dy(), w, h)
	}
	if Uniform(img) {
		return fmt.Errorf("%w: f3d rendered nothing", ErrBlankThumbnail)
	}
	return nil
}

// Uniform reports whether every pixel of img has the same colour: a blank
// picture.
func Uniform(img image.Image) bool {
	switch m := img.(type) {
	case *image.RGBA:
		return uniformPix(m.Pix, m.Stride, m.Rect.Dx()*4, m.Rect.Dy(), 4)
	case *image.NRGBA:
		return uniformPix(m.Pix, m.Stride, m.Rect.Dx()*4, m.Rect.Dy(), 4)
	}
	b := img.Bounds()
	r0, g0, b0, a0 := img.At(b.Min.X, b.Min.Y).RGBA()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, g, bb, a := img.At(x, y).RGBA(); r != r0 || g != g0 || bb != b0 || a != a0 {
				return false
			}
		}
	}
	return true
}

func uniformPix(pix []byte, stride, rowBytes, rows, px int) bool {
	if rows == 0 || rowBytes == 0 {
		return true
	}
	first := pix[:px]
	for y := range rows {
		row := pix[y*stride : y*stride+rowBytes]
		for i := 0; i < len(row); i += px {
			if string(row[i:i+px]) != string(first) {
				return false
			}
		}
	}
	return true
}
