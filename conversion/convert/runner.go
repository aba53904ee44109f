package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A Runner runs converter commands: as processes of the farm
// (ProcessRunner), or each in a container of its own (DockerRunner). The
// Converter writes a Command's Files before and applies its Check after;
// a Runner runs only its argv.
type Runner interface {
	// Run runs inv to its end, or until ctx ends, and returns the tail of
	// its output, stdout and stderr interleaved. A non-zero exit is an
	// error wrapping ErrToolFailed; a converter killed for one of the
	// runner's limits is a *LimitError. When ctx ends first, whatever runs
	// is killed before Run returns.
	Run(ctx context.Context, inv Invocation) ([]byte, error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, inv Invocation) ([]byte, error)

// Run implements Runner.
func (f RunnerFunc) Run(ctx context.Context, inv Invocation) ([]byte, error) { return f(ctx, inv) }

var _ Runner = RunnerFunc(nil)

// Invocation is one run of a converter.
type Invocation struct {
	// Argv is the program and its arguments; never a shell command line.
	Argv []string
	// Dir is the working directory, which exists: the step's work
	// directory, where the converter writes.
	Dir string
	// Mounts are the paths the converter reads or writes, Dir's among
	// them. A process sees the whole filesystem anyway; a container sees
	// these, bind-mounted at the same paths, and nothing else of the host.
	Mounts []Mount
}

// Mount is a host path a converter needs.
type Mount struct {
	Path     string
	Writable bool
}

// ErrLimit marks a converter killed for one of its limits: a *LimitError.
var ErrLimit = errors.New("converter limit exceeded")

// Limit kinds of LimitError.
const (
	LimitMemory  = "memory"
	LimitCPUTime = "CPU time"
	LimitTimeout = "time"
)

// LimitError is a converter killed for one of its limits. Its message is
// for people, and is what the item's detailedError says:
// "converter exceeded its memory limit of 64 MiB", "converter timed out
// after 30s".
type LimitError struct {
	// Kind is LimitMemory, LimitCPUTime or LimitTimeout.
	Kind string
	// Value is the limit, as people write it: "64 MiB", "30s".
	Value string
}

func (e *LimitError) Error() string {
	if e.Kind == LimitTimeout {
		return "converter timed out after " + e.Value
	}
	return fmt.Sprintf("converter exceeded its %s limit of %s", e.Kind, e.Value)
}

// Is makes every LimitError ErrLimit, and a timeout ErrTimeout too.
func (e *LimitError) Is(target error) bool {
	return target == ErrLimit || (e.Kind == LimitTimeout && target == ErrTimeout)
}

// FormatBytes writes a byte count as limits are written: "64 MiB",
// "1.5 GiB", "1000 B".
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[i]
}

// mounts are what a plan's steps need of the host: the work directory,
// writable, and the input's directory (the unpacked ZIP's root, or the
// directory of the upload with its companion files), read-only, with the
// files its entries link to.
func (p *Plan) mounts() []Mount {
	ms := []Mount{{Path: p.work, Writable: true}}
	in := p.inputDir
	if in == "" {
		in = filepath.Dir(p.Model)
	}
	if !within(p.work, in) {
		ms = append(ms, Mount{Path: in})
	}
	// Uploads read in place are links into the manager's data directory
	// (farm.JobsConfig.ReadLocal), and so may the model be.
	targets := []string{p.Model}
	if entries, err := os.ReadDir(in); err == nil {
		for _, e := range entries {
			if e.Type()&os.ModeSymlink != 0 {
				targets = append(targets, filepath.Join(in, e.Name()))
			}
		}
	}
	for _, t := range targets {
		resolved, err := filepath.EvalSymlinks(t)
		if err != nil || resolved == t || within(in, resolved) || within(p.work, resolved) {
			continue
		}
		if !slices.ContainsFunc(ms, func(m Mount) bool { return within(m.Path, resolved) }) {
			ms = append(ms, Mount{Path: resolved})
		}
	}
	return ms
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// exec runs one step's command with the converter's runner: its files are
// written first, and its Check applied to what it printed.
func (c *Converter) exec(ctx context.Context, dir string, cmd Command, mounts []Mount) ([]byte, error) {
	return runWith(ctx, c.runner, Invocation{Argv: cmd.Argv, Dir: dir, Mounts: mounts}, cmd)
}

func runWith(ctx context.Context, r Runner, inv Invocation, cmd Command) ([]byte, error) {
	if len(inv.Argv) == 0 || inv.Argv[0] == "" {
		return nil, fmt.Errorf("%w: no program", ErrToolFailed)
	}
	for _, f := range cmd.Files {
		if err := os.WriteFile(f.Path, f.Data, 0o600); err != nil {
			return nil, err
		}
	}
	output, err := r.Run(ctx, inv)
	if err != nil {
		return output, err
	}
	if cmd.Check != nil {
		if err := cmd.Check(output); err != nil {
			return output, fmt.Errorf("%w: %w", ErrToolFailed, err)
		}
	}
	return output, nil
}

// formatDuration writes a limit's duration without needless zeros:
// "30s", "1m30s", "300ms".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
