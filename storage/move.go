package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
)

// Mover is the capability of storage that moves an object to another key
// without copying its bytes: a rename on FS. The conversion service moves
// an attempt's staged outputs into place this way when it can.
type Mover interface {
	// Move puts the object at from under to, replacing any object there,
	// and removes it from from, in one step: a reader sees it at one key
	// or the other, never half. The object is as durable at to as a Put
	// makes it when Move returns. ErrNotFound if from has no object.
	Move(ctx context.Context, from, to string) error
}

var _ Mover = (*FS)(nil)

// Move implements Mover: a rename, and a sync of to's directory.
func (f *FS) Move(ctx context.Context, from, to string) error {
	if err := ValidateKey(from); err != nil {
		return err
	}
	if err := ValidateKey(to); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: move %s: %w", from, err)
	}
	st, err := f.root.Lstat(from)
	if notFound(err) || err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s", ErrNotFound, from)
	}
	if err != nil {
		return fmt.Errorf("storage: move %s: %w", from, err)
	}
	dir := path.Dir(to)
	for attempt := 0; ; attempt++ {
		if dir != "." {
			if err = f.root.MkdirAll(dir, 0o755); err != nil {
				break
			}
		}
		err = f.root.Rename(from, to)
		if !errors.Is(err, fs.ErrNotExist) || attempt == 2 {
			break
		}
		// Either from is gone (another mover came first) or a
		// DeletePrefix removed to's directory in between.
		if _, serr := f.root.Lstat(from); notFound(serr) {
			return fmt.Errorf("%w: %s", ErrNotFound, from)
		}
	}
	if err == nil {
		err = f.syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("storage: move %s to %s: %w", from, to, err)
	}
	return nil
}
