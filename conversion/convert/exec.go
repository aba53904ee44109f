package convert

import (
	"errors"
	"path/filepath"
	"strings"
)

// Exec is a converter an operator configures by its command line, such as
// HOOPS Converter for those who have it, or a script: Argv's program runs
// with its arguments, never through a shell, after these are replaced in
// each argument:
//
//	{in}      the input's path
//	{out}     the output file's path
//	{outdir}  the directory {out} is in, for converters that take a
//	          directory and a file name
//	{dir}     the step's work directory
//	{name}    the item's name as uploaded, made safe: its last path
//	          element, without control characters, leading dots or
//	          dashes, or any of :*?"<>|
//
// The paths are server-chosen; the only user text that can reach the
// command line is {name}, as one argument (or part of one) that cannot
// start with a dash and so cannot pass for a flag.
type Exec struct {
	Argv []string
}

var (
	_ Tool      = Exec{}
	_ NamedTool = Exec{}
)

// NamedTool is a Tool whose command line may use the item's name too. Plan
// prefers CommandNamed when a Tool has it.
type NamedTool interface {
	Tool
	CommandNamed(p StepPaths) (Command, error)
}

// StepPaths are what a step's command is made of.
type StepPaths struct {
	// In, Out and Dir are Tool.Command's: absolute, server-chosen.
	In, Out, Dir string
	// Name is the item's name as uploaded: user text.
	Name string
}

// Command implements Tool: {name} becomes "model".
func (e Exec) Command(in, out, dir string) (Command, error) {
	return e.CommandNamed(StepPaths{In: in, Out: out, Dir: dir})
}

// CommandNamed implements NamedTool.
func (e Exec) CommandNamed(p StepPaths) (Command, error) {
	if len(e.Argv) == 0 || e.Argv[0] == "" {
		return Command{}, errors.New("convert: a configured converter has no program")
	}
	r := strings.NewReplacer("{in}", p.In, "{outdir}", filepath.Dir(p.Out), "{out}", p.Out, "{dir}", p.Dir,
		"{name}", TemplateName(p.Name))
	argv := make([]string, len(e.Argv))
	for i, a := range e.Argv {
		argv[i] = r.Replace(a)
	}
	return Command{Argv: argv}, nil
}

// TemplateName is an item's name as {name} gives it to a converter's
// command line: the output file name base of the item (its last path
// element, without control characters, leading dots or :*?"<>|), without
// leading dashes either; "model" when nothing is left.
func TemplateName(name string) string {
	n := strings.TrimLeft(outputBase(name), "-.")
	if n == "" {
		return "model"
	}
	return n
}
