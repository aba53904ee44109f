package convert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/internal/lib/safezip"
)

// DefaultTimeout bounds one conversion, all its steps together.
const DefaultTimeout = 10 * time.Minute

// Config configures a Converter. The zero value uses the Debian packages'
// programs on PATH and the default limits.
type Config struct {
	// Programs are the converters' executables.
	Programs Programs
	// Registry maps input formats to converters; nil for NewRegistry's.
	Registry *Registry
	// Runner runs the converters; nil for processes without limits (a
	// ProcessRunner).
	Runner Runner
	// Timeout bounds one conversion, all its steps together, in wall-clock
	// time; 0 for DefaultTimeout.
	Timeout time.Duration
	// ZipLimits bound what an uploaded ZIP may unpack to; zero for
	// DefaultZipLimits.
	ZipLimits safezip.Limits
	// Logger receives a line per conversion and, at debug, per step; nil
	// discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
}

// Converter runs conversions. It holds no state between them: any number
// may run at once.
type Converter struct {
	cfg     Config
	reg     *Registry
	runner  Runner
	log     *slog.Logger
	metrics *metrics
}

// New returns a Converter.
func New(cfg Config) (*Converter, error) {
	cfg.Programs = cfg.Programs.withDefaults()
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ZipLimits == (safezip.Limits{}) {
		cfg.ZipLimits = DefaultZipLimits
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = NewRegistry(cfg.Programs)
	}
	if cfg.Runner == nil {
		cfg.Runner = &ProcessRunner{}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Converter{cfg: cfg, reg: reg, runner: cfg.Runner, log: cfg.Logger, metrics: m}, nil
}

// Check reports the converters' programs that cannot be found: a farm can
// say at start what it cannot convert. Only processes' programs are looked
// for; a container's are its image's.
func (c *Converter) Check() error {
	if _, ok := c.runner.(*ProcessRunner); !ok {
		return nil
	}
	p := c.cfg.Programs
	var errs []error
	for _, prog := range []struct{ name, pkg string }{
		{p.Assimp, "assimp-utils"}, {p.Draw, "occt-draw"}, {p.XvfbRun, "xvfb"}, {p.F3D, "f3d"},
	} {
		if _, err := exec.LookPath(prog.name); err != nil {
			errs = append(errs, fmt.Errorf("convert: %s (Debian package %s): %w", prog.name, prog.pkg, err))
		}
	}
	return errors.Join(errs...)
}

// Supported reports whether a file name's extension has a converter, or is
// ".zip". The upload handler can refuse the rest at once.
func (c *Converter) Supported(name string) bool {
	if extOf(name) == ".zip" {
		return true
	}
	_, ok := c.reg.Lookup(name)
	return ok
}

// Job is one conversion.
type Job struct {
	// Input is the server-chosen path of the uploaded file: a model, or a
	// ZIP archive.
	Input string
	// Name is the item's name as uploaded. Its extension says the format
	// (".zip" for an archive, whatever Input is called), and outputs are
	// named after it: "part.step" makes "part.step.glb".
	Name string
	// Dir is the item's server-chosen directory. A ZIP is unpacked into
	// Dir/zip; nothing is written outside Dir and OutputDir.
	Dir string
	// OutputDir receives the outputs, replacing files of the same names.
	// It exists, and may be inside Dir.
	OutputDir string
	// StartPath names the model inside a ZIP.
	StartPath string
	// CommandLine is the user's conversionCommandLine.
	CommandLine []string
	// Shattered also writes each part of a CAD assembly as a GLB and an
	// index of the assembly tree, under ShatteredDir (processShattered).
	Shattered bool
}

// Output is one file a conversion made, in the output directory. Its Name
// is a file name, or ShatteredDir/<file> for a shattered part or index.
type Output struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Size int64  `json:"size"`
}

// Run converts a job: it checks the command line, unpacks a ZIP and picks
// its model, plans the steps and executes them. Errors are *Error, except
// when ctx ends first: then ctx's error, for the caller to retry the job.
func (c *Converter) Run(ctx context.Context, job Job) ([]Output, error) {
	start := time.Now()
	outs, err := c.run(ctx, job)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			c.log.Info("conversion failed", "name", job.Name, "reason", string(ce.Reason), "err", err,
				"detail", ce.Detail, "duration", time.Since(start))
		}
		return nil, err
	}
	c.log.Info("conversion done", "name", job.Name, "outputs", len(outs), "duration", time.Since(start))
	return outs, nil
}

func (c *Converter) run(ctx context.Context, job Job) ([]Output, error) {
	opts, err := ParseCommandLine(job.CommandLine)
	if err != nil {
		return nil, conversionError(ReasonConversion, err)
	}
	if job.OutputDir == "" || (extOf(job.Name) == ".zip" && job.Dir == "") {
		return nil, conversionError(ReasonConversion, errors.New("convert: a job needs an output directory, and a ZIP an item directory"))
	}
	model, format, inputDir := job.Input, job.Name, ""
	if extOf(job.Name) == ".zip" {
		if model, err = c.Unpack(job.Input, job.Dir, job.StartPath); err != nil {
			return nil, err
		}
		format, inputDir = model, filepath.Join(job.Dir, zipDir)
	}
	plan, err := c.Plan(Request{Model: model, Format: format, Name: job.Name, OutputDir: job.OutputDir, Options: opts,
		Shattered: job.Shattered, InputDir: inputDir})
	if err != nil {
		return nil, err
	}
	return c.Execute(ctx, plan)
}
