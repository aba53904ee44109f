package farm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/farm/modelcache"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/safezip"
)

// JobSource is where a farm's job slots get conversion jobs: managers'
// job API over HTTP (JobClient), or a conversion service in the same
// process (`drover up`). Errors are farmapi's: ErrLeaseLost ends an
// attempt, ErrJobsUnavailable is worth another try.
type JobSource interface {
	LeaseJobs(ctx context.Context, req farmapi.LeaseRequest) ([]farmapi.JobLease, error)
	RenewJob(ctx context.Context, id, token string) (time.Time, error)
	OpenJobInput(ctx context.Context, id, token string, index int) (io.ReadCloser, int64, error)
	PutJobOutput(ctx context.Context, id, token, name string, r io.Reader) (int64, error)
	CompleteJob(ctx context.Context, id string, req farmapi.CompleteRequest) (farmapi.JobAck, error)
	FailJob(ctx context.Context, id string, req farmapi.FailRequest) (farmapi.JobAck, error)
}

// OutputURLSource is a JobSource that presigns the upload of an output to
// storage (farmapi.OutputURLRequest): a farm whose lease says OutputURLs
// uploads there, not through the manager.
type OutputURLSource interface {
	JobOutputURL(ctx context.Context, id, token, name string) (farmapi.OutputURLResponse, error)
}

// DefaultJobSlots is a farm's number of job slots, the HOOPS conversion
// server's maxConversions default.
const DefaultJobSlots = 4

// JobsConfig configures a farm's job slots.
type JobsConfig struct {
	// Source hands out the jobs. Required.
	Source JobSource
	// Farm is the farm's id, the lease holder's name. Required.
	Farm string
	// Slots is how many conversions run at once; 0 for DefaultJobSlots.
	Slots int
	// Converter runs the conversions; nil for the Debian converters with
	// the default limits.
	Converter *convert.Converter
	// WorkDir holds each running job's files; default
	// drover-jobs-<Farm> in the system's temporary directory. A job's
	// directory is removed when it ends. Run holds a lock on it until it
	// returns and empties it first of what a dead farm left; when another
	// live process holds it (a farm of the same id on this machine) Run
	// uses the first free one of WorkDir.2, WorkDir.3, … instead.
	WorkDir string
	// ReadLocal reads inputs in place when the manager offers their local
	// path and it exists here: for a farm that shares the manager's data
	// directory (the local farm of `drover up`).
	ReadLocal bool
	// Storage carries the downloads and uploads from and to the presigned
	// URLs of storage that farms reach directly (S3): no farm or manager
	// credentials go with them. Nil for a client with a one-minute
	// response header timeout.
	Storage *http.Client
	// Cache keeps downloaded inputs for later jobs of the same files (a
	// reconversion); nil downloads every time. Inputs the manager gives
	// no version are not cached.
	Cache *modelcache.Cache
	// PollWait is a lease call's long poll; default 20 s.
	PollWait time.Duration
	Logger   *slog.Logger
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
}

// Jobs runs a farm's job slots: while a slot is free it leases jobs from
// its source, converts each in its own directory while renewing its lease,
// uploads the outputs and only then completes the job, so that a farm that
// dies mid-job leaves a lease that expires and the job runs elsewhere.
type Jobs struct {
	cfg     JobsConfig
	conv    *convert.Converter
	log     *slog.Logger
	running atomic.Int64
	freed   chan struct{} // a slot came free

	drainOnce sync.Once
	drained   chan struct{} // closed by Drain: lease no more
	metrics   *jobMetrics

	dir atomic.Pointer[string] // the job directory Run holds
}

// NewJobs checks cfg and returns the job slots; Run runs them.
func NewJobs(cfg JobsConfig) (*Jobs, error) {
	if cfg.Source == nil || cfg.Farm == "" {
		return nil, errors.New("farm: job slots need a source and the farm's id")
	}
	cfg.Slots = cmp.Or(cfg.Slots, DefaultJobSlots)
	if cfg.Slots < 0 {
		return nil, errors.New("farm: negative job slots")
	}
	cfg.PollWait = min(cmp.Or(cfg.PollWait, 20*time.Second), farmapi.MaxLeaseWait)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = filepath.Join(os.TempDir(), "drover-jobs-"+safeName(cfg.Farm))
	}
	if cfg.Storage == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = time.Minute
		cfg.Storage = &http.Client{Transport: t}
	}
	j := &Jobs{cfg: cfg, conv: cfg.Converter, log: cfg.Logger, freed: make(chan struct{}, 1),
		drained: make(chan struct{})}
	if j.conv == nil {
		var err error
		if j.conv, err = convert.New(convert.Config{Logger: cfg.Logger, Registerer: cfg.Registerer}); err != nil {
			return nil, err
		}
	}
	m, err := newJobMetrics(cfg.Registerer, j)
	if err != nil {
		return nil, err
	}
	j.metrics = m
	return j, nil
}

// Slots is the number of job slots.
func (j *Jobs) Slots() int { return j.cfg.Slots }

// Running is the number of conversions running.
func (j *Jobs) Running() int { return int(j.running.Load()) }

var _ Drainer = (*Jobs)(nil)

// Drain stops leasing: the conversions running go on to their end. A long
// poll under way is cut short.
func (j *Jobs) Drain() { j.drainOnce.Do(func() { close(j.drained) }) }

// Busy is the number of conversions running (Drainer).
func (j *Jobs) Busy() int { return j.Running() }

// Dir is the directory the running jobs' files are in while Run runs
// (WorkDir or a sibling, see JobsConfig.WorkDir); "" before.
func (j *Jobs) Dir() string {
	if p := j.dir.Load(); p != nil {
		return *p
	}
	return ""
}

// safeName makes a file name of an id.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// Run leases and runs jobs until ctx ends. Conversions still running then
// are stopped and their attempts failed (not finally: another farm takes
// the job after the queue's backoff). It returns once every job has ended.
func (j *Jobs) Run(ctx context.Context) error {
	if j.cfg.Slots == 0 {
		<-ctx.Done()
		return nil
	}
	// What a killed farm left behind is of no use; what a live one uses
	// is not touched.
	jd, err := claimJobDir(j.cfg.WorkDir)
	if err != nil {
		return err
	}
	defer jd.release()
	if jd.path != j.cfg.WorkDir {
		j.log.Warn("the job directory is in use by another process (a farm of the same id?): using another",
			"busy", j.cfg.WorkDir, "dir", jd.path)
	}
	j.dir.Store(&jd.path)
	var wg sync.WaitGroup
	defer wg.Wait()
	fails := 0
	ping := time.NewTicker(10 * time.Second)
	defer ping.Stop()
	// Leases stop at a drain; running conversions end with ctx only.
	lctx, stopLeasing := context.WithCancel(ctx)
	defer stopLeasing()
	go func() {
		select {
		case <-j.drained:
			stopLeasing()
		case <-lctx.Done():
		}
	}()
	for lctx.Err() == nil {
		free := j.cfg.Slots - j.Running()
		if free <= 0 {
			select {
			case <-lctx.Done():
			case <-j.freed:
			case <-ping.C:
				// Full: say so now and then, for the managers' /status.
				_, _ = j.cfg.Source.LeaseJobs(lctx, farmapi.LeaseRequest{Farm: j.cfg.Farm, Slots: j.cfg.Slots})
			}
			continue
		}
		leases, err := j.cfg.Source.LeaseJobs(lctx, farmapi.LeaseRequest{Farm: j.cfg.Farm, Max: free,
			Slots: j.cfg.Slots, WaitMS: j.cfg.PollWait.Milliseconds()})
		if err != nil {
			if lctx.Err() != nil {
				break
			}
			fails++
			if fails == 1 || fails%30 == 0 {
				j.log.Warn("lease conversion jobs, will keep trying", "err", err)
			}
			sleepCtx(lctx, backoffStep(fails))
			continue
		}
		fails = 0
		for _, l := range leases {
			j.running.Add(1)
			j.metrics.running.Inc()
			wg.Go(func() {
				defer func() {
					j.running.Add(-1)
					j.metrics.running.Dec()
					select {
					case j.freed <- struct{}{}:
					default:
					}
				}()
				j.run(ctx, l)
			})
		}
	}
	return nil
}

// backoffStep is the wait after n failed calls: 250 ms doubling to 5 s.
func backoffStep(n int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// errLeaseLost stops a conversion whose attempt is over.
var errLeaseLost = errors.New("the job's lease was lost")

// run runs one attempt.
func (j *Jobs) run(ctx context.Context, l farmapi.JobLease) {
	log := j.log.With("job", l.ID, "attempt", l.Attempt)
	start := time.Now()
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var renewals sync.WaitGroup
	defer renewals.Wait()
	defer cancel(nil) // the renewals stop before run returns
	renewals.Go(func() { j.renew(jctx, cancel, l, log) })

	dir := filepath.Join(j.Dir(), safeName(l.ID)+"-"+fmt.Sprint(l.Attempt))
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("remove a job's directory", "err", err)
		}
	}()
	result, err := j.convert(jctx, dir, l)
	switch cause := context.Cause(jctx); {
	case errors.Is(cause, errLeaseLost):
		log.Info("conversion stopped: its lease was lost")
		j.metrics.jobs.WithLabelValues("lease_lost").Inc()
		return
	case ctx.Err() != nil:
		log.Info("conversion stopped: the farm is stopping")
		j.metrics.jobs.WithLabelValues("stopped").Inc()
		j.fail(l, farmapi.FailRequest{Token: l.Token, Reason: string(convert.ReasonConversion),
			Detail: "the farm running the conversion stopped"}, log)
		return
	}
	var ce *convert.Error
	switch {
	case errors.As(err, &ce):
		j.metrics.jobs.WithLabelValues("failed").Inc()
		j.fail(l, farmapi.FailRequest{Token: l.Token, Reason: string(ce.Reason), Detail: ce.Detail,
			// The same input fails the same way; a timeout may not.
			Final: !errors.Is(ce, convert.ErrTimeout)}, log)
		return
	case err != nil:
		j.metrics.jobs.WithLabelValues("error").Inc()
		log.Warn("conversion attempt failed", "err", err)
		j.fail(l, farmapi.FailRequest{Token: l.Token, Reason: string(convert.ReasonConversion),
			Detail: "the farm could not run the conversion"}, log)
		return
	}
	if err := j.deliver(jctx, dir, l, result); err != nil {
		if errors.Is(err, farmapi.ErrLeaseLost) || errors.Is(context.Cause(jctx), errLeaseLost) {
			log.Info("conversion done, but its lease was lost: results dropped")
			j.metrics.jobs.WithLabelValues("lease_lost").Inc()
			return
		}
		// The lease expires and another farm converts again.
		log.Warn("deliver a conversion's outputs", "err", err)
		j.metrics.jobs.WithLabelValues("error").Inc()
		return
	}
	j.metrics.jobs.WithLabelValues("done").Inc()
	log.Info("conversion job done", "outputs", len(result), "duration", time.Since(start))
}

// renew renews the lease at a third of its length until ctx ends, and
// cancels the conversion when the lease is lost.
func (j *Jobs) renew(ctx context.Context, cancel context.CancelCauseFunc, l farmapi.JobLease, log *slog.Logger) {
	every := max(time.Duration(l.LeaseMS)*time.Millisecond/3, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, every)
		_, err := j.cfg.Source.RenewJob(rctx, l.ID, l.Token)
		rcancel()
		if errors.Is(err, farmapi.ErrLeaseLost) {
			cancel(errLeaseLost)
			return
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("renew a job's lease, will keep trying", "err", err)
		}
	}
}

// convert puts the job's inputs in place and runs the converter.
func (j *Jobs) convert(ctx context.Context, dir string, l farmapi.JobLease) ([]convert.Output, error) {
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	for _, d := range []string{in, out} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(l.Inputs))
	for i, input := range l.Inputs {
		if err := j.fetch(ctx, l, i, input, in); err != nil {
			return nil, err
		}
		names = append(names, input.Name)
	}
	model := l.Model
	if model == "" {
		var err error
		if model, err = j.pickModel(names); err != nil {
			return nil, err
		}
	}
	if !contains(names, model) {
		return nil, &convert.Error{Reason: convert.ReasonConversion, Detail: fmt.Sprintf("%q is not among the uploaded files", model)}
	}
	return j.conv.Run(ctx, convert.Job{Input: filepath.Join(in, model), Name: l.Name, Dir: dir, OutputDir: out,
		StartPath: l.StartPath, CommandLine: l.CommandLine, Shattered: l.ProcessShattered})
}

func contains(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// pickModel chooses the model among several uploaded files when no
// rootFile named it: the only one of a format drover converts.
func (j *Jobs) pickModel(names []string) (string, error) {
	var models []string
	for _, n := range names {
		if j.conv.Supported(n) && !strings.EqualFold(filepath.Ext(n), ".zip") {
			models = append(models, n)
		}
	}
	if len(models) == 1 {
		return models[0], nil
	}
	return "", &convert.Error{Reason: convert.ReasonStartPath,
		Detail: fmt.Sprintf("%d of the uploaded files are models; rootFile must name one", len(models))}
}

// fetch puts input i in the input directory: a link to the manager's file
// when it is here, else a copy out of the cache, else a download.
func (j *Jobs) fetch(ctx context.Context, l farmapi.JobLease, i int, input farmapi.JobInput, in string) error {
	name, err := safezip.CheckName(input.Name)
	if err != nil || strings.Contains(name, "/") {
		return &convert.Error{Reason: convert.ReasonConversion, Detail: fmt.Sprintf("bad input name %q", input.Name)}
	}
	dst := filepath.Join(in, name)
	if j.cfg.ReadLocal && input.LocalPath != "" && filepath.IsAbs(input.LocalPath) {
		if fi, err := os.Stat(input.LocalPath); err == nil && fi.Mode().IsRegular() && fi.Size() == input.Size {
			j.metrics.transfers.WithLabelValues("input", "local").Inc()
			return os.Symlink(input.LocalPath, dst)
		}
	}
	// The presigned URL is tried once: one that failed may have expired,
	// and the manager serves the input too.
	direct := input.URL != ""
	if j.cfg.Cache != nil && input.Version != "" {
		return retry(ctx, func() error { return j.fetchCached(ctx, l, i, input, &direct, dst) })
	}
	return retry(ctx, func() error {
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = j.download(ctx, l, i, input, &direct, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// storageGet downloads from a presigned URL. Its errors leave the URL out:
// it holds a signature.
func (j *Jobs) storageGet(ctx context.Context, u string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errors.New("bad presigned URL")
	}
	resp, err := j.cfg.Storage.Do(req)
	if err != nil {
		return nil, plainURLErr("GET", err)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("%w: GET from storage: %s", farmapi.ErrJobsUnavailable, resp.Status)
	}
	return resp.Body, nil
}

// storagePut uploads size bytes of r to a presigned URL.
func (j *Jobs) storagePut(ctx context.Context, u string, r io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, r)
	if err != nil {
		return errors.New("bad presigned URL")
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	resp, err := j.cfg.Storage.Do(req)
	if err != nil {
		return plainURLErr("PUT", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: PUT to storage: %s", farmapi.ErrJobsUnavailable, resp.Status)
	}
	return nil
}

// plainURLErr is a transfer's error without its URL.
func plainURLErr(method string, err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("%w: %s to storage: %w", farmapi.ErrJobsUnavailable, method, err)
}

// putOutput uploads an output: to storage through a presigned URL when
// the lease says so and the source presigns, else through the source.
func (j *Jobs) putOutput(ctx context.Context, l farmapi.JobLease, name, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if us, ok := j.cfg.Source.(OutputURLSource); ok && l.OutputURLs {
		resp, err := us.JobOutputURL(ctx, l.ID, l.Token, name)
		if err != nil {
			return err
		}
		if err := j.storagePut(ctx, resp.URL, f, size); err != nil {
			return err
		}
		j.metrics.transfers.WithLabelValues("output", "storage").Inc()
		return nil
	}
	n, err := j.cfg.Source.PutJobOutput(ctx, l.ID, l.Token, name, f)
	if err == nil && n != size {
		err = fmt.Errorf("%w: output %s: stored %d bytes of %d", farmapi.ErrJobsUnavailable, name, n, size)
	}
	if err == nil {
		j.metrics.transfers.WithLabelValues("output", "manager").Inc()
	}
	return err
}

// download writes input i to w: from its presigned URL if *direct (and
// then never again), else through the manager.
func (j *Jobs) download(ctx context.Context, l farmapi.JobLease, i int, input farmapi.JobInput, direct *bool, w io.Writer) (int64, error) {
	var rc io.ReadCloser
	var err error
	via := "manager"
	if *direct {
		*direct, via = false, "storage"
		rc, err = j.storageGet(ctx, input.URL)
		if err != nil {
			j.log.Warn("download a job input from storage; trying through the manager", "job", l.ID, "input", input.Name, "err", err)
		}
	} else {
		rc, _, err = j.cfg.Source.OpenJobInput(ctx, l.ID, l.Token, i)
	}
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	if err == nil && n != input.Size {
		err = fmt.Errorf("%w: input %s: got %d bytes of %d", farmapi.ErrJobsUnavailable, input.Name, n, input.Size)
	}
	if err == nil {
		j.metrics.transfers.WithLabelValues("input", via).Inc()
	}
	return n, err
}

// fetchCached copies input i out of the cache, downloading it into the
// cache first when it is missing. The converter gets a copy of its own: a
// hard link would share the cache's inode, which a converter running as
// the farm's user could chmod and write, spoiling the file for every
// later job (copies are reflinks where the filesystem can).
func (j *Jobs) fetchCached(ctx context.Context, l farmapi.JobLease, i int, input farmapi.JobInput, direct *bool, dst string) error {
	key := modelcache.ItemKey(l.Item, input.Name, input.Version)
	h, err := j.cfg.Cache.Get(ctx, key, func(ctx context.Context, w io.Writer) (int64, error) {
		return j.download(ctx, l, i, input, direct, w)
	})
	if err != nil {
		return err
	}
	defer h.Close()
	if h.Size() != input.Size {
		// Not what was cached: someone changed the cache's file.
		j.cfg.Cache.Remove(key)
		return fmt.Errorf("%w: the cached copy of input %s has %d bytes of %d", farmapi.ErrJobsUnavailable,
			input.Name, h.Size(), input.Size)
	}
	_ = os.Remove(dst) // what a failed try left
	if err := modelcache.CopyOut(h.Path(), dst); err != nil {
		return fmt.Errorf("copy input %s out of the cache: %w", input.Name, err)
	}
	j.log.Debug("job input", "job", l.ID, "input", input.Name, "bytes", h.Size(), "cache_hit", h.Hit())
	return nil
}

// deliver uploads the outputs and completes the job.
func (j *Jobs) deliver(ctx context.Context, dir string, l farmapi.JobLease, outs []convert.Output) error {
	req := farmapi.CompleteRequest{Token: l.Token, Attempt: l.Attempt}
	for _, o := range outs {
		err := retry(ctx, func() error {
			return j.putOutput(ctx, l, o.Name, filepath.Join(dir, "out", o.Name), o.Size)
		})
		if err != nil {
			return err
		}
		req.Outputs = append(req.Outputs, farmapi.JobOutput{Name: o.Name, Type: o.Type, Size: o.Size})
	}
	return retry(ctx, func() error {
		_, err := j.cfg.Source.CompleteJob(ctx, l.ID, req)
		return err
	})
}

// fail reports a failed attempt, with a context of its own: the farm may
// be stopping.
func (j *Jobs) fail(l farmapi.JobLease, req farmapi.FailRequest, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := retry(ctx, func() error {
		_, err := j.cfg.Source.FailJob(ctx, l.ID, req)
		return err
	})
	switch {
	case errors.Is(err, farmapi.ErrLeaseLost):
		log.Info("conversion failed, but its lease was lost")
	case err != nil:
		log.Warn("report a failed conversion; its lease will expire", "err", err)
	default:
		log.Info("conversion attempt failed", "reason", req.Reason, "detail", req.Detail, "final", req.Final)
	}
}

// retry calls fn until it succeeds, fails for good (a lost lease, a bad
// request) or ctx ends; at most 6 times.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for n := 1; n <= 6; n++ {
		if err = fn(); err == nil || errors.Is(err, farmapi.ErrLeaseLost) || errors.Is(err, farmapi.ErrBadJobRequest) {
			return err
		}
		var ce *convert.Error
		if errors.As(err, &ce) || !sleepCtx(ctx, backoffStep(n)) {
			return err
		}
	}
	return err
}

// jobMetrics are the job slots' metrics.
type jobMetrics struct {
	running   prometheus.Gauge
	jobs      *prometheus.CounterVec
	transfers *prometheus.CounterVec
}

func newJobMetrics(reg prometheus.Registerer, j *Jobs) (*jobMetrics, error) {
	m := &jobMetrics{
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_farm_jobs_running",
			Help: "Conversion jobs running in the farm's job slots.",
		}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_farm_jobs_total",
			Help: "Conversion attempts ended on the farm, by result (done, failed, lease_lost, stopped, error).",
		}, []string{"result"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_farm_job_transfers_total",
			Help: "Job inputs and outputs moved, by direction (input, output) and way: storage (a presigned URL), manager (the job API) or local (read in place).",
		}, []string{"direction", "via"}),
	}
	if reg == nil {
		return m, nil
	}
	slots := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_farm_job_slots",
		Help: "The farm's job slots (maxConversions).",
	}, func() float64 { return float64(j.cfg.Slots) })
	for _, c := range []prometheus.Collector{m.running, m.jobs, m.transfers, slots} {
		err := reg.Register(c)
		if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
			// Farms sharing a registry share the counters.
			switch old := are.ExistingCollector.(type) {
			case prometheus.Gauge:
				if c == m.running {
					m.running = old
				}
			case *prometheus.CounterVec:
				switch c {
				case m.jobs:
					m.jobs = old
				case m.transfers:
					m.transfers = old
				}
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("farm: register job metrics: %w", err)
		}
	}
	return m, nil
}
