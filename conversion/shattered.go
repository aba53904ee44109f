package conversion

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/storage"
)

// ShatteredName checks the name of a shattered output as a client gives
// it: one plain file name. Names that would leave the item's shattered
// directory (a slash or backslash, "." or "..", a leading dot, control
// characters) are ErrInvalid.
func ShatteredName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") ||
		strings.ContainsFunc(name, isControl) {
		return fmt.Errorf("%w: %q is not the name of a shattered part", ErrInvalid, name)
	}
	return nil
}

// OpenShattered opens a shattered output of item id by its name in the
// item's Shattered list: a part's GLB, or the index. Only names the list
// holds are opened; ErrInvalid for a name that is no file name.
func (s *Service) OpenShattered(ctx context.Context, id, name string) (storage.Object, items.File, error) {
	if err := ShatteredName(name); err != nil {
		return nil, items.File{}, err
	}
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, items.File{}, err
	}
	i := slices.IndexFunc(it.Shattered, func(f items.File) bool { return f.Name == name })
	if i < 0 {
		if len(it.Shattered) == 0 {
			return nil, items.File{}, fmt.Errorf("%w: the item has no shattered parts (convert it with processShattered)", ErrNotFound)
		}
		return nil, items.File{}, fmt.Errorf("%w: the item has no shattered part %q", ErrNotFound, name)
	}
	return s.openFile(ctx, items.ShatteredKey(id, name), it.Shattered[i])
}

// OpenShatteredIndex opens the XML index of item id's shattered assembly.
func (s *Service) OpenShatteredIndex(ctx context.Context, id string) (storage.Object, items.File, error) {
	return s.OpenShattered(ctx, id, convert.ShatteredIndex)
}
