package farm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// maxModelName bounds a model name; it is part of command lines.
const maxModelName = 1024

// resolveModel checks a model name against the models directory and returns
// the model's directory. Names are relative paths in their cleaned form
// ("a", "a/b"): no "..", no "." components, no leading, trailing or doubled
// separators, no backslashes or control characters. The named directory
// must exist, and resolving it, symbolic links included, must not leave the
// models directory: file routes cannot escape their directory.
func (f *Farm) resolveModel(model string) (string, error) {
	if f.modelsDir == "" {
		return "", fmt.Errorf("%w: %q: the farm has no models directory", ErrBadModel, model)
	}
	if err := checkModelName(model); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrBadModel, model, err)
	}
	root, err := os.OpenRoot(f.modelsDir)
	if err != nil {
		return "", fmt.Errorf("farm: models directory: %w", err)
	}
	defer root.Close()
	// os.Root refuses any path, through symbolic links too, that leaves it.
	fi, err := root.Stat(model)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrBadModel, model, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: %q is not a directory", ErrBadModel, model)
	}
	return filepath.Join(f.modelsDir, model), nil
}

func checkModelName(model string) error {
	switch {
	case model == "":
		return errors.New("empty name")
	case len(model) > maxModelName:
		return fmt.Errorf("name longer than %d bytes", maxModelName)
	case strings.ContainsFunc(model, func(r rune) bool { return r == '\\' || unicode.IsControl(r) }):
		return errors.New("backslash or control character in the name")
	case filepath.IsAbs(model) || !filepath.IsLocal(model):
		return errors.New("not a path inside the models directory")
	case filepath.Clean(model) != model:
		return errors.New("not a plain relative path")
	}
	return nil
}
