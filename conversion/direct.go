package conversion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/storage"
)

// Direct uploads and downloads: uploadToken makes an item that awaits one
// file, which the client puts straight into storage (a presigned URL of
// S3, or drover's own signed URL on the data directory); the item stays
// UPLOADING until reconvert finds the file there and queues its job.
// downloadToken hands out an output's key for a presigned GET.

// ErrNotAwaited means a direct upload for an item that awaits no such file (it
// was converted or deleted meanwhile, or never had a token for it).
var ErrNotAwaited = errors.New("conversion: the item awaits no such upload")

// Presigner returns the storage's presigner, when it has one (S3): upload
// and download tokens are then its URLs.
func (s *Service) Presigner() (storage.Presigner, bool) {
	p, ok := s.st.(storage.Presigner)
	return p, ok
}

// BeginDirect makes an item of the caller's tenant, UPLOADING, that awaits the file name to be
// put straight into storage, at most size bytes (0: Config.MaxUpload). It
// returns the item and the file's storage key, for a presigned or signed
// URL. Reconvert starts its conversion once the file is there.
// ErrReadOnly and ErrQuota as for Begin.
func (s *Service) BeginDirect(ctx context.Context, o Options, name string, size int64) (items.Item, string, error) {
	if err := s.alive(); err != nil {
		return items.Item{}, "", err
	}
	if err := writable(ctx); err != nil {
		return items.Item{}, "", err
	}
	if err := fileName(name); err != nil {
		return items.Item{}, "", err
	}
	switch {
	case size < 0:
		return items.Item{}, "", fmt.Errorf("%w: the size must be a number of bytes", ErrInvalid)
	case size > s.cfg.MaxUpload:
		return items.Item{}, "", fmt.Errorf("%w: the uploads of an item may hold %d bytes", ErrTooLarge, s.cfg.MaxUpload)
	}
	o.Name = name
	if err := s.check(o); err != nil {
		return items.Item{}, "", err
	}
	tenant := callerTenant(ctx)
	release, err := s.usage.admit(tenant, s.cfg.Quota)
	if err != nil {
		return items.Item{}, "", err
	}
	defer release()
	aw := &items.Original{Name: name, Stored: storedName(name), Size: size}
	it, err := s.items.Create(ctx, items.Item{Name: o.Name, Tenant: tenant, StartPath: o.StartPath, Webhook: o.Webhook,
		CommandLine: o.CommandLine, ProcessShattered: o.ProcessShattered, Awaiting: aw})
	if err != nil {
		return items.Item{}, "", s.storeErr(err)
	}
	return it, items.OriginalKey(it.ID, aw.Stored), nil
}

// awaitLimit is the most bytes item it's awaited file may hold: its
// declared size, within what the item's uploads may still hold.
func (s *Service) awaitLimit(it items.Item) int64 {
	limit := s.cfg.MaxUpload - uploaded(it)
	if it.Awaiting != nil && it.Awaiting.Size > 0 {
		limit = min(limit, it.Awaiting.Size)
	}
	return limit
}

// PutAwaited streams the file item id awaits, under its stored name, into
// storage, as a signed upload URL delivers it: at most the item's limit
// (ErrTooLarge, and the file is not stored, nor one stored before
// replaced). ErrNotAwaited if the item awaits no file of that stored name
// or is no longer UPLOADING. The item stays UPLOADING: Reconvert records
// the file and converts it.
func (s *Service) PutAwaited(ctx context.Context, id, stored string, r io.Reader) (int64, error) {
	if err := s.alive(); err != nil {
		return 0, err
	}
	it, err := s.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if it.Awaiting == nil || it.Awaiting.Stored != stored || it.State != items.StateUploading {
		return 0, ErrNotAwaited
	}
	limit := s.awaitLimit(it)
	// The quota is checked as the file comes; its bytes count once
	// reconvert records them in the item (until then the item counts in
	// flight, which bounds what awaits).
	qr := s.quotaReader(r, TenantOf(it))
	defer qr.release()
	lr := &limitReader{r: qr, left: limit}
	n, err := s.st.Put(ctx, items.OriginalKey(id, stored), lr)
	if err != nil {
		if lr.over {
			return 0, fmt.Errorf("%w: the upload may hold %d bytes", ErrTooLarge, limit)
		}
		if qr.over {
			return 0, qr.err()
		}
		return 0, fmt.Errorf("%w: store an upload of item %s: %w", ErrUnavailable, id, err)
	}
	s.metrics.uploaded.Add(float64(n))
	return n, nil
}

// arrived returns the size of the file item it awaits, once it is in
// storage: an error wrapping ErrInvalid if it is not there yet, and
// ErrTooLarge if it holds more than the item's limit, in which case it is
// removed and the item awaits it still.
func (s *Service) arrived(ctx context.Context, it items.Item) (int64, error) {
	key := items.OriginalKey(it.ID, it.Awaiting.Stored)
	info, err := s.st.Stat(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return 0, fmt.Errorf("%w: %s has not been uploaded: PUT it to the upload token's URL, then reconvert", ErrInvalid, it.Awaiting.Name)
	case err != nil:
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if limit := s.awaitLimit(it); info.Size > limit {
		// Presigned uploads reach the bucket unchecked; the limit holds
		// here.
		if err := s.st.Delete(ctx, key); err != nil {
			s.log.Warn("remove a direct upload above its limit", "item", it.ID, "err", err)
		}
		return 0, fmt.Errorf("%w: %s has %d bytes, the upload may hold %d", ErrTooLarge, it.Awaiting.Name, info.Size, limit)
	}
	return info.Size, nil
}

// startAwaited is Reconvert of an item made by BeginDirect: once its file
// is there, it joins the item's originals and the item's first conversion
// starts (PENDING, generation 0), with r's changes. done is false for an
// item that awaits no file: Reconvert goes on as for any item.
func (s *Service) startAwaited(ctx context.Context, id string, r Reconversion) (it items.Item, done bool, err error) {
	it, err = s.Get(ctx, id)
	if err != nil {
		return it, true, err
	}
	if it.Awaiting == nil {
		return it, false, nil
	}
	size, err := s.arrived(ctx, it)
	if err != nil {
		return it, true, err
	}
	aw := *it.Awaiting
	aw.Size = size
	var started bool
	it, err = s.items.Update(ctx, id, func(it *items.Item) error {
		// A reconvert at the same time may have been first: then this one
		// changes nothing.
		if it.Awaiting == nil || it.Awaiting.Stored != aw.Stored || it.State != items.StateUploading {
			started = false
			return nil
		}
		started = true
		it.Originals = append(it.Originals, aw)
		it.Awaiting = nil
		r.apply(it)
		it.State = items.StatePending
		return nil
	})
	if err != nil {
		return it, true, s.storeErr(err)
	}
	if started {
		if err := s.enqueue(ctx, it); err != nil {
			s.log.Warn("queue a conversion job; the sweep tries again", "item", id, "err", err)
		}
	}
	return it, true, nil
}

// apply sets what r changes on it.
func (r Reconversion) apply(it *items.Item) {
	if r.StartPath != nil {
		it.StartPath = *r.StartPath
	}
	if r.CommandLine != nil {
		it.CommandLine = r.CommandLine
	}
	if r.ProcessShattered != nil {
		it.ProcessShattered = *r.ProcessShattered
	}
}

// OutputKey returns the storage key of item id's output of type typ (the
// first if there are several), for a download token, and the file.
func (s *Service) OutputKey(ctx context.Context, id, typ string) (string, items.File, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return "", items.File{}, err
	}
	i := slices.IndexFunc(it.Files, func(f items.File) bool { return strings.EqualFold(f.Type, typ) })
	if i < 0 {
		return "", items.File{}, fmt.Errorf("%w: the item has no %s output", ErrNotFound, typ)
	}
	return items.OutputKey(id, it.Files[i].Name), it.Files[i], nil
}
