package conversion

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/storage"
)

// The reasons of failed items, the HOOPS conversion server's.
const (
	reasonConversion = convert.ReasonConversion
)

// jobID names the job of an item's conversion gen: a result of an earlier
// conversion names another job, whose lease is gone.
func jobID(id string, gen int) string { return id + "." + strconv.Itoa(gen) }

// parseJobID splits a job id into the item's id and the generation.
func parseJobID(j string) (string, int, bool) {
	i := strings.LastIndexByte(j, '.')
	if i <= 0 {
		return "", 0, false
	}
	gen, err := strconv.Atoi(j[i+1:])
	if err != nil || gen < 0 || items.ValidateID(j[:i]) != nil {
		return "", 0, false
	}
	return j[:i], gen, true
}

// enqueue queues the job of an item's current conversion.
func (s *Service) enqueue(ctx context.Context, it items.Item) error {
	err := s.q.Enqueue(ctx, queue.Job{ID: jobID(it.ID, it.Generation), Item: it.ID})
	if errors.Is(err, queue.ErrExists) {
		return nil
	}
	return err
}

// jobErr maps the queue's errors to the farm API's.
func jobErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, queue.ErrLeaseLost), errors.Is(err, queue.ErrNotFound):
		return fmt.Errorf("%w: %w", farmapi.ErrLeaseLost, err)
	case errors.Is(err, queue.ErrUnavailable), errors.Is(err, items.ErrUnavailable), errors.Is(err, ErrUnavailable):
		return fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
	}
	return err
}

// LeaseJobs hands a farm up to req.Max jobs, waiting up to req.WaitMS for
// a first one: the farm's long poll. A farm with no free slot (Max 0)
// gets none and is only noted, for /status.
func (s *Service) LeaseJobs(ctx context.Context, req farmapi.LeaseRequest) ([]farmapi.JobLease, error) {
	if req.Farm == "" || len(req.Farm) > 128 || req.Max < 0 || req.Slots < 0 {
		return nil, fmt.Errorf("%w: a lease needs the farm's id and a job count", farmapi.ErrBadJobRequest)
	}
	if err := s.alive(); err != nil {
		return nil, jobErr(err)
	}
	s.noteFarm(req)
	if req.Max == 0 {
		return nil, nil
	}
	wait := min(max(time.Duration(req.WaitMS)*time.Millisecond, 0), farmapi.MaxLeaseWait)
	// A stopping service ends its long polls.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	leases, err := s.q.Lease(ctx, queue.LeaseRequest{Consumer: req.Farm, Max: min(req.Max, queue.MaxBatch), Wait: wait})
	if err != nil {
		if s.ctx.Err() != nil {
			return nil, fmt.Errorf("%w: the manager is stopping", farmapi.ErrJobsUnavailable)
		}
		return nil, jobErr(err)
	}
	s.tookJobs(req.Farm, len(leases))
	// Each description is a read and a write of the item: a batch is
	// described at once, not one round trip after the other.
	jls := make([]farmapi.JobLease, len(leases))
	oks := make([]bool, len(leases))
	var wg sync.WaitGroup
	for i, l := range leases {
		if i == len(leases)-1 {
			jls[i], oks[i] = s.describe(context.WithoutCancel(ctx), l)
			break
		}
		wg.Go(func() { jls[i], oks[i] = s.describe(context.WithoutCancel(ctx), l) })
	}
	wg.Wait()
	out := make([]farmapi.JobLease, 0, len(leases))
	for i, l := range leases {
		if oks[i] {
			out = append(out, jls[i])
			s.log.Info("job leased", "job", l.JobID, "farm", req.Farm, "attempt", l.Attempt)
		}
	}
	return out, nil
}

// describe makes a farm's job of a lease. A job whose item is gone or
// reconverted is removed instead.
func (s *Service) describe(ctx context.Context, l queue.Lease) (farmapi.JobLease, bool) {
	id, gen, ok := parseJobID(l.JobID)
	if !ok {
		s.log.Warn("a job of no item, removed", "job", l.JobID)
		_ = s.q.Delete(ctx, l.JobID)
		return farmapi.JobLease{}, false
	}
	it, err := s.items.Update(ctx, id, func(it *items.Item) error {
		if it.Generation == gen && !it.State.Terminal() {
			it.Attempts = l.Attempt
		}
		return nil
	})
	switch {
	case errors.Is(err, items.ErrNotFound), err == nil && (it.Generation != gen || it.State.Terminal()):
		if err := s.q.Delete(ctx, l.JobID); err != nil && !errors.Is(err, queue.ErrNotFound) {
			s.log.Warn("remove the job of a deleted or reconverted item", "job", l.JobID, "err", err)
		}
		return farmapi.JobLease{}, false
	case err != nil:
		// The lease expires and the job comes back.
		s.log.Warn("describe a leased job", "job", l.JobID, "err", err)
		return farmapi.JobLease{}, false
	}
	jl := farmapi.JobLease{ID: l.JobID, Token: l.Token, Attempt: l.Attempt, Expires: l.Expires,
		LeaseMS: max(time.Until(l.Expires).Milliseconds(), 1), Item: id, Generation: gen, Name: it.Name,
		StartPath: it.StartPath, CommandLine: it.CommandLine, ProcessShattered: it.ProcessShattered}
	lp, _ := s.st.(storage.LocalPather)
	ps, _ := s.st.(storage.Presigner)
	jl.OutputURLs = ps != nil
	single := len(it.Originals) == 1
	for _, o := range it.Originals {
		in := farmapi.JobInput{Name: o.Name, Size: o.Size}
		if single {
			// One file goes by the server's name; the item's name says
			// its format. Several keep theirs: they refer to each other.
			in.Name = o.Stored
		}
		if lp != nil {
			in.LocalPath, _ = lp.LocalPath(items.OriginalKey(id, o.Stored))
		}
		if ps != nil {
			u, err := ps.PresignGet(ctx, items.OriginalKey(id, o.Stored), s.cfg.PresignTTL)
			if err != nil {
				// The farm downloads through the manager instead.
				s.log.Warn("presign a job input", "job", l.JobID, "err", err)
			}
			in.URL = u
		}
		in.Version = s.inputVersion(ctx, items.OriginalKey(id, o.Stored))
		jl.Inputs = append(jl.Inputs, in)
	}
	switch {
	case single:
		jl.Model = jl.Inputs[0].Name
	case slices.ContainsFunc(it.Originals, func(o items.Original) bool { return o.Name == it.StartPath }):
		jl.Model = it.StartPath
		jl.StartPath = ""
	}
	return jl, true
}

// inputVersion is the version of an input file for farms' caches: its
// size and modification time, which a replaced file changes. Empty (not
// cached) when the storage cannot say.
func (s *Service) inputVersion(ctx context.Context, key string) string {
	info, err := s.st.Stat(ctx, key)
	if err != nil {
		s.log.Warn("stat a job input for its version; farms will not cache it", "key", key, "err", err)
		return ""
	}
	return strconv.FormatInt(info.Size, 10) + "-" + strconv.FormatInt(info.ModTime.UnixNano(), 10)
}

// RenewJob extends a lease; farmapi.ErrLeaseLost when the attempt is over.
func (s *Service) RenewJob(ctx context.Context, id, token string) (time.Time, error) {
	t, err := s.q.Renew(ctx, id, token, 0)
	return t, jobErr(err)
}

// holds checks that token holds job id's lease, by renewing it, and
// returns the item and generation.
func (s *Service) holds(ctx context.Context, id, token string) (string, int, error) {
	item, gen, ok := parseJobID(id)
	if !ok {
		return "", 0, fmt.Errorf("%w: no job %q", farmapi.ErrLeaseLost, id)
	}
	if _, err := s.RenewJob(ctx, id, token); err != nil {
		return "", 0, err
	}
	return item, gen, nil
}

// OpenJobInput opens input index of a leased job, for the farm to
// download. The caller closes it.
func (s *Service) OpenJobInput(ctx context.Context, id, token string, index int) (io.ReadCloser, int64, error) {
	item, gen, err := s.holds(ctx, id, token)
	if err != nil {
		return nil, 0, err
	}
	it, err := s.items.Get(ctx, item)
	if err != nil || it.Generation != gen {
		return nil, 0, fmt.Errorf("%w: the item was deleted or reconverted", farmapi.ErrLeaseLost)
	}
	if index < 0 || index >= len(it.Originals) {
		return nil, 0, fmt.Errorf("%w: no input %d", farmapi.ErrBadJobRequest, index)
	}
	obj, err := s.st.Open(ctx, items.OriginalKey(item, it.Originals[index].Stored))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
	}
	return obj, obj.Info().Size, nil
}

// staging is the key prefix of an attempt's outputs until it completes:
// one per attempt (named by its token's hash), so that two attempts never
// mix their outputs.
func staging(item string, gen int, token string) string {
	h := sha256.Sum256([]byte(token))
	return stagingPrefix(item, gen) + hex.EncodeToString(h[:8]) + "/"
}

func stagingPrefix(item string, gen int) string {
	return items.Dir(item) + "staging/" + strconv.Itoa(gen) + "-"
}

// manifestName is the file, among an attempt's staged outputs, that lists
// them: the sweep finishes a completed job from it when the manager that
// completed it died before the item was updated.
const manifestName = ".manifest.json"

type manifest struct {
	Attempt int                 `json:"attempt"`
	Outputs []farmapi.JobOutput `json:"outputs"`
}

// outputName checks an output's file name: one path element, or one below
// the shattered outputs' directory (farmapi.ShatteredPrefix).
func outputName(name string) error {
	file, _ := strings.CutPrefix(name, farmapi.ShatteredPrefix)
	if err := fileName(file); err != nil || strings.HasPrefix(file, ".") {
		return fmt.Errorf("%w: output name %q", farmapi.ErrBadJobRequest, name)
	}
	return nil
}

// PutJobOutput stores an output of a leased job's attempt, streamed. It
// becomes the item's when the attempt completes.
func (s *Service) PutJobOutput(ctx context.Context, id, token, name string, r io.Reader) (int64, error) {
	if err := outputName(name); err != nil {
		return 0, err
	}
	item, gen, err := s.holds(ctx, id, token)
	if err != nil {
		return 0, err
	}
	n, err := s.st.Put(ctx, staging(item, gen, token)+name, r)
	if err != nil {
		return 0, fmt.Errorf("%w: store output %s: %w", farmapi.ErrJobsUnavailable, name, err)
	}
	return n, nil
}

// JobOutputURL presigns a PUT URL for output name of a leased job's
// attempt: the farm uploads it to storage directly, where PutJobOutput
// would have put it. farmapi.ErrBadJobRequest when the storage presigns
// nothing (the farm uses PutJobOutput).
func (s *Service) JobOutputURL(ctx context.Context, id, token, name string) (farmapi.OutputURLResponse, error) {
	if err := outputName(name); err != nil {
		return farmapi.OutputURLResponse{}, err
	}
	ps, ok := s.st.(storage.Presigner)
	if !ok {
		return farmapi.OutputURLResponse{}, fmt.Errorf("%w: this manager's storage takes outputs through it only", farmapi.ErrBadJobRequest)
	}
	item, gen, err := s.holds(ctx, id, token)
	if err != nil {
		return farmapi.OutputURLResponse{}, err
	}
	expires := time.Now().Add(s.cfg.PresignTTL)
	u, err := ps.PresignPut(ctx, staging(item, gen, token)+name, s.cfg.PresignTTL)
	if err != nil {
		return farmapi.OutputURLResponse{}, fmt.Errorf("%w: presign output %s: %w", farmapi.ErrJobsUnavailable, name, err)
	}
	return farmapi.OutputURLResponse{URL: u, Expires: expires}, nil
}

// CompleteJob ends an attempt whose outputs are uploaded: the job is done,
// and the item SUCCESS with these outputs, unless the attempt lost its
// lease (farmapi.ErrLeaseLost: its outputs are dropped). A repeated call
// answers as the first did.
func (s *Service) CompleteJob(ctx context.Context, id string, req farmapi.CompleteRequest) (farmapi.JobAck, error) {
	item, gen, ok := parseJobID(id)
	if !ok {
		return farmapi.JobAck{}, fmt.Errorf("%w: no job %q", farmapi.ErrLeaseLost, id)
	}
	if len(req.Outputs) == 0 {
		return farmapi.JobAck{}, fmt.Errorf("%w: a conversion without outputs", farmapi.ErrBadJobRequest)
	}
	dir := staging(item, gen, req.Token)
	for _, o := range req.Outputs {
		if err := outputName(o.Name); err != nil {
			return farmapi.JobAck{}, err
		}
		info, err := s.st.Stat(ctx, dir+o.Name)
		if errors.Is(err, storage.ErrNotFound) || err == nil && info.Size != o.Size {
			ji, err := s.q.Get(ctx, id)
			switch {
			case err == nil && ji.State == queue.StateDone && ji.Attempts == req.Attempt:
				// A repeated call finds its outputs moved into place already.
				return farmapi.JobAck{State: string(ji.State)}, nil
			case errors.Is(err, queue.ErrNotFound):
				// The item was deleted, purged or reconverted, and its
				// files with it: the attempt is over.
				s.dropStaged(ctx, dir)
				return farmapi.JobAck{}, fmt.Errorf("%w: the job is gone", farmapi.ErrLeaseLost)
			}
			return farmapi.JobAck{}, fmt.Errorf("%w: output %s was not uploaded whole", farmapi.ErrBadJobRequest, o.Name)
		}
		if err != nil {
			return farmapi.JobAck{}, fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
		}
	}
	b, _ := json.Marshal(manifest{Attempt: req.Attempt, Outputs: req.Outputs})
	if _, err := s.st.Put(ctx, dir+manifestName, bytes.NewReader(b)); err != nil {
		return farmapi.JobAck{}, fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
	}
	out, err := s.q.Complete(ctx, id, req.Token)
	switch {
	case errors.Is(err, queue.ErrDuplicate):
		return farmapi.JobAck{State: string(out.State)}, nil
	case err != nil:
		err = jobErr(err)
		if errors.Is(err, farmapi.ErrLeaseLost) {
			s.dropStaged(ctx, dir)
			s.log.Info("late result of an attempt dropped", "job", id, "attempt", req.Attempt)
		}
		return farmapi.JobAck{}, err
	}
	// The job is done: whatever happens to this request, the item ends
	// (or the sweep ends it).
	s.finishSuccess(context.WithoutCancel(ctx), item, gen, dir, req.Outputs)
	return farmapi.JobAck{State: string(out.State)}, nil
}

func (s *Service) dropStaged(ctx context.Context, dir string) {
	if _, err := s.st.DeletePrefix(context.WithoutCancel(ctx), dir); err != nil {
		s.log.Warn("remove staged outputs", "dir", dir, "err", err)
	}
}

// finishSuccess makes an attempt's staged outputs the item's, ends the
// item SUCCESS and tells its webhook.
func (s *Service) finishSuccess(ctx context.Context, id string, gen int, dir string, outs []farmapi.JobOutput) {
	it, err := s.items.Get(ctx, id)
	switch {
	case errors.Is(err, items.ErrNotFound):
		s.dropItemFiles(ctx, id) // deleted or purged
		return
	case err != nil:
		return
	case it.Generation != gen || it.State.Terminal():
		s.dropStaged(ctx, dir) // reconverted, or ended by another manager
		return
	}
	files := make([]items.File, 0, len(outs))
	var shattered []items.File
	for _, o := range outs {
		if err := s.placeOutput(ctx, dir+o.Name, items.OutputKey(id, o.Name), o.Size); err != nil {
			// The item stays PENDING: the sweep finishes it from the
			// manifest, or converts again if the staged outputs are gone
			// (another manager's sweep may have finished it meanwhile).
			s.log.Error("move an output into place; the sweep tries again", "item", id, "output", o.Name, "err", err)
			return
		}
		if part, ok := strings.CutPrefix(o.Name, farmapi.ShatteredPrefix); ok {
			shattered = append(shattered, items.File{Name: part, Type: o.Type, Size: o.Size})
			continue
		}
		files = append(files, items.File{Name: o.Name, Type: o.Type, Size: o.Size})
	}
	it, err = s.items.UpdateFrom(ctx, it, func(it *items.Item) error {
		if err := it.Succeed(gen, files); err != nil {
			return err
		}
		it.Shattered = shattered
		return nil
	})
	switch {
	case errors.Is(err, items.ErrNotFound):
		// Deleted or purged while the outputs were copied: the copies
		// must not outlive it.
		s.dropItemFiles(ctx, id)
		return
	case errors.Is(err, items.ErrStale), errors.Is(err, items.ErrTerminal):
		s.dropStaged(ctx, dir)
		return
	case err != nil:
		s.log.Error("end an item SUCCESS; the sweep tries again", "item", id, "err", err)
		return
	}
	s.dropStaged(ctx, dir)
	s.metrics.finished.WithLabelValues("success").Inc()
	s.log.Info("conversion succeeded", "item", id, "name", it.Name, "outputs", len(files), "attempts", it.Attempts)
	s.notify(ctx, it)
}

// placeOutput puts a staged output in its place: moved where the storage
// can (a rename, no bytes copied), copied elsewhere. An output that a
// finisher that stopped midway (or another manager's sweep) moved already
// is in place.
func (s *Service) placeOutput(ctx context.Context, from, to string, size int64) error {
	m, ok := s.st.(storage.Mover)
	if !ok {
		return s.copyObject(ctx, from, to)
	}
	err := m.Move(ctx, from, to)
	if errors.Is(err, storage.ErrNotFound) {
		if info, serr := s.st.Stat(ctx, to); serr == nil && info.Size == size {
			return nil
		}
	}
	return err
}

func (s *Service) copyObject(ctx context.Context, from, to string) error {
	if c, ok := s.st.(storage.Copier); ok {
		return c.Copy(ctx, from, to)
	}
	obj, err := s.st.Open(ctx, from)
	if err != nil {
		return err
	}
	defer obj.Close()
	_, err = s.st.Put(ctx, to, obj)
	return err
}

// FailJob ends a failed attempt: the job is retried after a backoff, or,
// when this was its last attempt or the failure is final, the item ends
// "ERROR - <reason>" with the detail as its detailedError.
func (s *Service) FailJob(ctx context.Context, id string, req farmapi.FailRequest) (farmapi.JobAck, error) {
	item, gen, ok := parseJobID(id)
	if !ok {
		return farmapi.JobAck{}, fmt.Errorf("%w: no job %q", farmapi.ErrLeaseLost, id)
	}
	reason, detail := cleanReason(req.Reason), shortDetail(req.Detail)
	out, err := s.q.Fail(ctx, id, req.Token, queue.Failure{Reason: failureText(reason, detail), Final: req.Final})
	switch {
	case errors.Is(err, queue.ErrDuplicate):
		return farmapi.JobAck{State: string(out.State)}, nil
	case err != nil:
		err = jobErr(err)
		if errors.Is(err, farmapi.ErrLeaseLost) {
			s.dropStaged(ctx, staging(item, gen, req.Token))
		}
		return farmapi.JobAck{}, err
	}
	s.dropStaged(ctx, staging(item, gen, req.Token))
	if out.Terminal() {
		s.finishFailure(context.WithoutCancel(ctx), item, gen, reason, detail)
	} else {
		s.log.Info("conversion attempt failed, retrying", "job", id, "attempt", out.Attempt, "reason", reason,
			"detail", detail, "retry_at", out.RetryAt)
	}
	return farmapi.JobAck{State: string(out.State)}, nil
}

// finishFailure ends an item's conversion gen in "ERROR - <reason>" and
// tells its webhook.
func (s *Service) finishFailure(ctx context.Context, id string, gen int, reason, detail string) {
	it, err := s.items.Update(ctx, id, func(it *items.Item) error { return it.Fail(gen, reason, detail) })
	switch {
	case errors.Is(err, items.ErrStale), errors.Is(err, items.ErrTerminal), errors.Is(err, items.ErrNotFound):
		return
	case err != nil:
		s.log.Error("end an item in ERROR; the sweep tries again", "item", id, "err", err)
		return
	}
	s.metrics.finished.WithLabelValues("error").Inc()
	s.log.Info("conversion failed", "item", id, "name", it.Name, "state", string(it.State), "detail", detail)
	s.notify(ctx, it)
}

// expiredDetail is the detailedError of a job whose last attempt's lease
// expired.
func expiredDetail(attempt int) string {
	return fmt.Sprintf("the conversion did not finish: the farm running attempt %d of %d stopped answering", attempt, attempt)
}

// cleanReason is one of the original server's reasons: what a farm says,
// or Conversion Error.
func cleanReason(r string) string {
	switch convert.Reason(r) {
	case convert.ReasonConversion, convert.ReasonStartPath, convert.ReasonUnzip:
		return r
	}
	return string(reasonConversion)
}

const maxDetail = 1000

func shortDetail(d string) string {
	d = strings.ToValidUTF8(d, "")
	if len(d) > maxDetail {
		d = "…" + strings.ToValidUTF8(d[len(d)-maxDetail:], "")
	}
	return d
}

// failureText is a queue failure's reason: the item's reason and the
// detail, which parseFailure splits again.
func failureText(reason, detail string) string { return reason + ": " + detail }

func parseFailure(text string) (string, string) {
	for _, r := range []convert.Reason{convert.ReasonConversion, convert.ReasonStartPath, convert.ReasonUnzip} {
		if d, ok := strings.CutPrefix(text, string(r)+": "); ok {
			return string(r), d
		}
	}
	return string(reasonConversion), text
}

// sweep repairs items a manager left PENDING while it died between two
// steps: a job never queued (or lost with an in-memory queue) is queued,
// a job that ended is carried over to its item; and an item that ended
// without its webhook sent gets it sent.
func (s *Service) sweep() {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.SweepInterval)
	defer cancel()
	all, err := s.items.List(ctx)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("sweep items", "err", err)
		}
		return
	}
	for _, it := range all {
		if time.Since(it.Updated) < s.cfg.SweepAge {
			continue
		}
		if unsent(it) {
			s.notifyUnsent(ctx, it)
			continue
		}
		if it.State != items.StatePending {
			continue
		}
		jid := jobID(it.ID, it.Generation)
		info, err := s.q.Get(ctx, jid)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			s.log.Info("queueing the lost job of a PENDING item", "item", it.ID)
			if err := s.enqueue(ctx, it); err != nil {
				s.log.Warn("queue a conversion job", "item", it.ID, "err", err)
			}
		case err != nil:
			s.log.Warn("sweep: job state", "job", jid, "err", err)
		case info.State == queue.StateFailed:
			reason, detail := parseFailure(info.Reason)
			if info.Reason == queue.ReasonLeaseExpired {
				detail = expiredDetail(info.Attempts)
			}
			s.finishFailure(ctx, it.ID, it.Generation, reason, detail)
		case info.State == queue.StateDone:
			s.recover(ctx, it, info.Attempts)
		}
	}
}

// recover ends an item whose job completed from the completing attempt's
// manifest, or queues the job again if its outputs are gone.
func (s *Service) recover(ctx context.Context, it items.Item, attempt int) {
	infos, err := s.st.List(ctx, stagingPrefix(it.ID, it.Generation))
	if err != nil {
		return
	}
	for _, in := range infos {
		if !strings.HasSuffix(in.Key, "/"+manifestName) {
			continue
		}
		obj, err := s.st.Open(ctx, in.Key)
		if err != nil {
			continue
		}
		var m manifest
		err = json.NewDecoder(io.LimitReader(obj, 1<<20)).Decode(&m)
		obj.Close()
		if err == nil && m.Attempt == attempt {
			s.log.Info("finishing an item whose job completed", "item", it.ID)
			s.finishSuccess(ctx, it.ID, it.Generation, strings.TrimSuffix(in.Key, manifestName), m.Outputs)
			return
		}
	}
	s.log.Warn("the outputs of a completed job are gone: converting again", "item", it.ID)
	if err := s.enqueue(ctx, it); err != nil {
		s.log.Warn("queue a conversion job", "item", it.ID, "err", err)
	}
}

// noteFarm records a farm's job slots from its lease call.
func (s *Service) noteFarm(req farmapi.LeaseRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.farms[req.Farm] = &jobFarm{slots: max(req.Slots, req.Max), free: req.Max, seen: time.Now()}
}

// farmTTL is how long a farm counts in the job slots after its last lease
// call: it calls again at the latest when a long poll ends.
// tookJobs counts jobs a farm leased against its free slots.
func (s *Service) tookJobs(farm string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.farms[farm]; f != nil {
		f.free = max(f.free-n, 0)
	}
}

const farmTTL = farmapi.MaxLeaseWait + 15*time.Second

// Status is the conversion part of the manager's /status.
type Status struct {
	// Queue counts the jobs by state; QueueError says why it could not.
	Queue      queue.Stats `json:"queue"`
	QueueError string      `json:"queue_error,omitempty"`
	// JobSlots and FreeJobSlots add up the farms that leased from this
	// manager lately.
	// Storage says where the files are, when the storage says so (S3's
	// bucket and endpoint, never its credentials).
	Storage      string            `json:"storage,omitempty"`
	JobSlots     int               `json:"job_slots"`
	FreeJobSlots int               `json:"free_job_slots"`
	Farms        []farmapi.JobFarm `json:"farms"`
}

// Status reports the queue and the farms' job slots.
func (s *Service) Status(ctx context.Context) Status {
	st := Status{Farms: []farmapi.JobFarm{}}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	qs, err := s.q.Stats(ctx)
	if err != nil {
		st.QueueError = err.Error()
	}
	st.Queue = qs
	if str, ok := s.st.(fmt.Stringer); ok {
		st.Storage = str.String()
	}
	st.Farms = s.jobFarms()
	for _, f := range st.Farms {
		st.JobSlots += f.Slots
		st.FreeJobSlots += f.Free
	}
	return st
}

func (s *Service) jobFarms() []farmapi.JobFarm {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := []farmapi.JobFarm{}
	for id, f := range s.farms {
		if now.Sub(f.seen) > farmTTL {
			delete(s.farms, id)
			continue
		}
		out = append(out, farmapi.JobFarm{ID: id, Slots: f.slots, Free: f.free, LastSeen: f.seen})
	}
	slices.SortFunc(out, func(a, b farmapi.JobFarm) int { return strings.Compare(a.ID, b.ID) })
	return out
}
