package convert

import (
	"errors"
	"strings"
)

// Exec is a converter an operator configures by its command line, such as
// HOOPS Converter for those who have it, or a script: Argv's program runs
// with its arguments, never through a shell, after {in} (the input's path),
// {out} (the output file's path) and {dir} (the step's work directory) are
// replaced in each argument. All three are server-chosen paths; no user
// text reaches the command line.
type Exec struct {
	Argv []string
}

var _ Tool = Exec{}

// Command implements Tool.
func (e Exec) Command(in, out, dir string) (Command, error) {
	if len(e.Argv) == 0 || e.Argv[0] == "" {
		return Command{}, errors.New("convert: a configured converter has no program")
	}
	r := strings.NewReplacer("{in}", in, "{out}", out, "{dir}", dir)
	argv := make([]string, len(e.Argv))
	for i, a := range e.Argv {
		argv[i] = r.Replace(a)
	}
	return Command{Argv: argv}, nil
}
