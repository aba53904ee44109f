package conversion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/storage"
)

// Options are what a client asks of an item's conversion: the arguments
// of upload, uploadArray and create.
type Options struct {
	// Name is the item's name; empty takes the first uploaded file's.
	Name string
	// StartPath names the model inside a ZIP, or among the files of a
	// multi-file upload (rootFile).
	StartPath string
	// Webhook is told when the conversion ends.
	Webhook string
	// CommandLine is the conversionCommandLine.
	CommandLine      []string
	ProcessShattered bool
	// SkipConversion keeps the files without converting them: the item is
	// SUCCESS with no outputs.
	SkipConversion bool
}

// check validates the options a client gave.
func (s *Service) check(o Options) error {
	if o.Webhook != "" {
		if err := s.hooks.ValidateURL(o.Webhook); err != nil {
			return fmt.Errorf("%w: webhook: %w", ErrInvalid, err)
		}
	}
	if _, err := convert.ParseCommandLine(o.CommandLine); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if o.StartPath != "" {
		if _, err := convert.CleanStartPath(o.StartPath); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if strings.ContainsFunc(o.Name, isControl) || len(o.Name) > 255 {
		return fmt.Errorf("%w: the item name must be at most 255 bytes without control characters", ErrInvalid)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Begin creates an item of the caller's tenant, UPLOADING, for files to
// be added with AddFile and converted at Commit. ErrReadOnly for a
// caller that may not write, ErrQuota when the tenant's quota is used up.
func (s *Service) Begin(ctx context.Context, o Options) (items.Item, error) {
	if err := s.alive(); err != nil {
		return items.Item{}, err
	}
	if err := writable(ctx); err != nil {
		return items.Item{}, err
	}
	if err := s.check(o); err != nil {
		return items.Item{}, err
	}
	tenant := callerTenant(ctx)
	release, err := s.usage.admit(tenant, s.cfg.Quota)
	if err != nil {
		return items.Item{}, err
	}
	defer release()
	it, err := s.items.Create(ctx, items.Item{Name: o.Name, Tenant: tenant, StartPath: o.StartPath, Webhook: o.Webhook,
		CommandLine: o.CommandLine, ProcessShattered: o.ProcessShattered})
	return it, s.storeErr(err)
}

// Create makes an empty item, a container for files added later (upload
// with its itemid) and converted by Reconvert. It is SUCCESS with no
// outputs: there is nothing to wait for.
func (s *Service) Create(ctx context.Context, o Options) (items.Item, error) {
	if err := s.alive(); err != nil {
		return items.Item{}, err
	}
	if err := writable(ctx); err != nil {
		return items.Item{}, err
	}
	if err := s.check(o); err != nil {
		return items.Item{}, err
	}
	it, err := s.items.Create(ctx, items.Item{Name: o.Name, Tenant: callerTenant(ctx), StartPath: o.StartPath, Webhook: o.Webhook,
		CommandLine: o.CommandLine, ProcessShattered: o.ProcessShattered, State: items.StateSuccess})
	return it, s.storeErr(err)
}

// fileName checks an uploaded file's name: one path element, as a ZIP
// entry would be allowed.
func fileName(name string) error {
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%w: file name %q: one file name, without a directory", ErrInvalid, name)
	}
	if _, err := convert.CleanStartPath(name); err != nil || storage.ValidateKey(name) != nil {
		return fmt.Errorf("%w: file name %q", ErrInvalid, name)
	}
	return nil
}

// storedName is the name the server gives an uploaded file: random, with
// the upload's extension when it is a plain one.
func storedName(name string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	ext := strings.ToLower(path.Ext(name))
	ok := len(ext) > 1 && len(ext) <= 16
	for _, c := range ext[min(1, len(ext)):] {
		ok = ok && ('a' <= c && c <= 'z' || '0' <= c && c <= '9')
	}
	if !ok {
		ext = ""
	}
	return hex.EncodeToString(b[:]) + ext
}

// AddFile streams an uploaded file into item id's originals. The item's
// uploads together may hold at most Config.MaxUpload bytes (ErrTooLarge),
// its tenant's items Config.Quota.MaxBytes (ErrQuota).
// It does not convert: Commit does, or Reconvert for an item that was
// converted before.
func (s *Service) AddFile(ctx context.Context, id, name string, r io.Reader) (items.Original, error) {
	if err := s.alive(); err != nil {
		return items.Original{}, err
	}
	if err := writable(ctx); err != nil {
		return items.Original{}, err
	}
	if err := fileName(name); err != nil {
		return items.Original{}, err
	}
	it, err := s.Get(ctx, id)
	if err != nil {
		return items.Original{}, err
	}
	orig, _, err := s.addFile(ctx, it, name, r, nil)
	return orig, err
}

// addFile stores a file of item it (as read or written last) and adds it
// to the item's originals, and applies then, if given, in the same
// update: Upload commits that way.
func (s *Service) addFile(ctx context.Context, it items.Item, name string, r io.Reader,
	then func(*items.Item) error) (items.Original, items.Item, error) {
	id := it.ID
	if slices.ContainsFunc(it.Originals, func(o items.Original) bool { return o.Name == name }) {
		return items.Original{}, it, fmt.Errorf("%w: the item has a file named %q already", ErrInvalid, name)
	}
	budget := s.cfg.MaxUpload - uploaded(it)
	stored := storedName(name)
	key := items.OriginalKey(id, stored)
	qr := s.quotaReader(r, TenantOf(it))
	// The bytes stay reserved until the item's update counts them.
	defer qr.release()
	lr := &limitReader{r: qr, left: budget}
	n, err := s.st.Put(ctx, key, lr)
	if err != nil {
		if lr.over {
			return items.Original{}, it, fmt.Errorf("%w: the uploads of an item may hold %d bytes", ErrTooLarge, s.cfg.MaxUpload)
		}
		if qr.over {
			return items.Original{}, it, qr.err()
		}
		return items.Original{}, it, fmt.Errorf("%w: store %s: %w", ErrUnavailable, name, err)
	}
	s.metrics.uploaded.Add(float64(n))
	orig := items.Original{Name: name, Stored: stored, Size: n}
	it, err = s.items.UpdateFrom(ctx, it, func(it *items.Item) error {
		if uploaded(*it)+n > s.cfg.MaxUpload {
			return fmt.Errorf("%w: the uploads of an item may hold %d bytes", ErrTooLarge, s.cfg.MaxUpload)
		}
		if slices.ContainsFunc(it.Originals, func(o items.Original) bool { return o.Name == name }) {
			return fmt.Errorf("%w: the item has a file named %q already", ErrInvalid, name)
		}
		it.Originals = append(it.Originals, orig)
		if then != nil {
			return then(it)
		}
		return nil
	})
	if err != nil {
		_ = s.st.Delete(context.WithoutCancel(ctx), key)
		if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid) {
			return items.Original{}, it, err
		}
		return items.Original{}, it, s.storeErr(err)
	}
	return orig, it, nil
}

func uploaded(it items.Item) int64 {
	var n int64
	for _, o := range it.Originals {
		n += o.Size
	}
	return n
}

// limitReader reads at most left bytes, and fails after them.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a body of exactly the limit from a larger one.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Commit ends an item's upload: with skip, the item is SUCCESS with no
// outputs; otherwise it is PENDING and its job queued. An item with no
// name takes its first file's.
func (s *Service) Commit(ctx context.Context, id string, skip bool) (items.Item, error) {
	it, err := s.items.Update(ctx, id, guard(ctx, id, func(it *items.Item) error { return commit(it, skip) }))
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return it, err
		}
		return it, s.storeErr(err)
	}
	return s.committed(ctx, it), nil
}

// commit ends an item's upload, in an update function.
func commit(it *items.Item, skip bool) error {
	if len(it.Originals) == 0 {
		return fmt.Errorf("%w: no file was uploaded", ErrInvalid)
	}
	if it.Name == "" {
		it.Name = it.Originals[0].Name
	}
	if it.State != items.StateUploading {
		return nil // committed already
	}
	if skip {
		it.State = items.StateSuccess
	} else {
		it.State = items.StatePending
	}
	return nil
}

// committed queues the job of an item that commit made PENDING.
func (s *Service) committed(ctx context.Context, it items.Item) items.Item {
	if it.State == items.StatePending {
		// A job that cannot be queued now is queued by the sweep.
		if err := s.enqueue(ctx, it); err != nil {
			s.log.Warn("queue a conversion job; the sweep tries again", "item", it.ID, "err", err)
		}
	}
	return it
}

// Abort deletes an item whose upload failed, and its files.
func (s *Service) Abort(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	if err := s.Delete(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("remove an item whose upload failed", "item", id, "err", err)
	}
}

// Upload makes an item of one file and converts it (unless
// o.SkipConversion): Begin, AddFile and Commit, the last two in one
// update, and Abort if one fails.
func (s *Service) Upload(ctx context.Context, o Options, name string, r io.Reader) (items.Item, error) {
	if o.Name == "" {
		o.Name = name
	}
	if err := fileName(name); err != nil {
		return items.Item{}, err
	}
	it, err := s.Begin(ctx, o)
	if err != nil {
		return it, err
	}
	id := it.ID
	_, it, err = s.addFile(ctx, it, name, r, func(it *items.Item) error { return commit(it, o.SkipConversion) })
	if err != nil {
		s.Abort(ctx, id)
		return items.Item{}, err
	}
	return s.committed(ctx, it), nil
}

// Reconversion is what a reconvert changes; nil fields keep the item's.
type Reconversion struct {
	StartPath        *string
	CommandLine      []string
	ProcessShattered *bool
}

// Reconvert starts a new conversion of an item from its uploaded files:
// the next generation, PENDING. A result of the conversion it replaces is
// dropped when it comes. ErrReadOnly for a caller that may not write;
// ErrQuota when the item ended and its tenant has the most conversions
// in flight it may have.
func (s *Service) Reconvert(ctx context.Context, id string, r Reconversion) (items.Item, error) {
	if err := s.alive(); err != nil {
		return items.Item{}, err
	}
	o := Options{CommandLine: r.CommandLine}
	if r.StartPath != nil {
		o.StartPath = *r.StartPath
	}
	if err := writable(ctx); err != nil {
		return items.Item{}, err
	}
	if err := s.check(o); err != nil {
		return items.Item{}, err
	}
	it, done, err := s.startAwaited(ctx, id, r)
	if done {
		return it, err
	}
	if it.State.Terminal() {
		// One more conversion in flight.
		release, err := s.usage.admit(TenantOf(it), s.cfg.Quota)
		if err != nil {
			return items.Item{}, err
		}
		defer release()
	}
	var before int
	it, err = s.items.Update(ctx, id, guard(ctx, id, func(it *items.Item) error {
		if len(it.Originals) == 0 {
			return fmt.Errorf("%w: the item has no uploaded file to convert", ErrInvalid)
		}
		before = it.Generation
		r.apply(it)
		it.Reconvert()
		return nil
	}))
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return it, err
		}
		return it, s.storeErr(err)
	}
	// The conversion replaced may still run: its job goes, and with it
	// its lease; a late result finds ErrLeaseLost.
	if err := s.q.Delete(ctx, jobID(id, before)); err != nil && !errors.Is(err, queue.ErrNotFound) {
		s.log.Warn("remove the job of a replaced conversion", "item", id, "err", err)
	}
	if _, err := s.st.DeletePrefix(ctx, items.Dir(id)+"outputs/"); err != nil {
		s.log.Warn("remove the outputs of a replaced conversion", "item", id, "err", err)
	}
	if err := s.enqueue(ctx, it); err != nil {
		s.log.Warn("queue a conversion job; the sweep tries again", "item", id, "err", err)
	}
	return it, nil
}

// Delete removes an item, its job and its files. ErrNotFound for an
// unknown id (or another tenant's): the API says so. ErrReadOnly for a
// caller that may not write.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := writable(ctx); err != nil {
		return err
	}
	it, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := s.items.Delete(ctx, id); err != nil {
		return s.storeErr(err)
	}
	if err := s.q.Delete(ctx, jobID(id, it.Generation)); err != nil && !errors.Is(err, queue.ErrNotFound) {
		s.log.Warn("remove the job of a deleted item", "item", id, "err", err)
	}
	if _, err := s.st.DeletePrefix(ctx, items.Dir(id)); err != nil {
		s.log.Warn("remove the files of a deleted item", "item", id, "err", err)
	}
	return nil
}

// Get returns an item: ErrNotFound if there is none of that id, or it
// belongs to a tenant the caller does not see. Every method that names
// an item reads it here.
func (s *Service) Get(ctx context.Context, id string) (items.Item, error) {
	if err := items.ValidateID(id); err != nil {
		return items.Item{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	it, err := s.items.Get(ctx, id)
	if err == nil && !visible(ctx, TenantOf(it)) {
		return items.Item{}, hidden(id)
	}
	return it, s.storeErr(err)
}

// List returns every item the caller sees, oldest first.
func (s *Service) List(ctx context.Context) ([]items.Item, error) {
	its, err := s.items.List(ctx)
	if err != nil || seesAll(ctx) {
		return its, s.storeErr(err)
	}
	mine := its[:0]
	for _, it := range its {
		if visible(ctx, TenantOf(it)) {
			mine = append(mine, it)
		}
	}
	return mine, nil
}

// LastUpdated is the time of the last change of any item the caller
// sees, deletes included. For a caller who sees one tenant, it is that
// tenant's last change as this service learnt of it (see usage).
func (s *Service) LastUpdated(ctx context.Context) (time.Time, error) {
	if !seesAll(ctx) {
		return s.usage.lastUpdated(callerTenant(ctx)), nil
	}
	t, err := s.items.LastUpdated(ctx)
	return t, s.storeErr(err)
}

// OpenOutput opens an item's output of type typ ("glb", "png", …), the
// first if there are several.
func (s *Service) OpenOutput(ctx context.Context, id, typ string) (storage.Object, items.File, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, items.File{}, err
	}
	i := slices.IndexFunc(it.Files, func(f items.File) bool { return strings.EqualFold(f.Type, typ) })
	if i < 0 {
		return nil, items.File{}, fmt.Errorf("%w: the item has no %s output", ErrNotFound, typ)
	}
	return s.openFile(ctx, items.OutputKey(id, it.Files[i].Name), it.Files[i])
}

// OpenOutputByName opens an item's output by its file name.
func (s *Service) OpenOutputByName(ctx context.Context, id, name string) (storage.Object, items.File, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, items.File{}, err
	}
	i := slices.IndexFunc(it.Files, func(f items.File) bool { return f.Name == name })
	if i < 0 {
		return nil, items.File{}, fmt.Errorf("%w: the item has no output named %q", ErrNotFound, name)
	}
	return s.openFile(ctx, items.OutputKey(id, it.Files[i].Name), it.Files[i])
}

// OpenOriginal opens an item's uploaded file: the one its startPath names
// among several, else the first.
func (s *Service) OpenOriginal(ctx context.Context, id string) (storage.Object, items.File, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, items.File{}, err
	}
	if len(it.Originals) == 0 {
		return nil, items.File{}, fmt.Errorf("%w: the item has no uploaded file", ErrNotFound)
	}
	o := it.Originals[0]
	if i := slices.IndexFunc(it.Originals, func(o items.Original) bool { return o.Name == it.StartPath }); i >= 0 {
		o = it.Originals[i]
	}
	return s.openFile(ctx, items.OriginalKey(id, o.Stored), items.File{Name: o.Name, Size: o.Size,
		Type: strings.TrimPrefix(strings.ToLower(path.Ext(o.Name)), ".")})
}

func (s *Service) openFile(ctx context.Context, key string, f items.File) (storage.Object, items.File, error) {
	obj, err := s.st.Open(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, f, fmt.Errorf("%w: %s is missing from storage", ErrNotFound, f.Name)
	case err != nil:
		return nil, f, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return obj, f, nil
}
