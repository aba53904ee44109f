// Package conversion is drover's conversion service: it turns uploads into
// conversion items, queues their jobs, hands the jobs to farms, and ends
// each item once: SUCCESS with one attempt's outputs, or "ERROR - <reason>"
// with a detailedError, after which the item's webhook is told.
//
// A Service owns the parts that package conversion's subpackages build:
// the storage the files live in, the item store (items), the job queue
// (queue) and the webhook sender (webhook). It runs what none of them runs
// by itself: Reclaim on a ticker, so that the jobs of a dead farm run
// elsewhere, a sweep that repairs what a manager that died between two
// steps left behind (an item PENDING whose job is gone or ended), and,
// when Config.Retention asks, the purge of old items.
//
// Farms reach a Service through the job methods (LeaseJobs, RenewJob,
// OpenJobInput, PutJobOutput, CompleteJob, FailJob), in process or over
// the farm API that package conversion/api serves; they never reach the
// queue itself. An attempt's outputs are uploaded to a staging area first
// and become the item's only when the queue accepts the attempt's
// completion, so a late result of a reclaimed attempt is dropped.
//
// The package does not convert (conversion/convert, on the farms), speak
// HTTP (conversion/api), or know about sessions and placement.
package conversion

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/storage"
)

// Sentinel errors. The API maps them to HTTP statuses.
var (
	// ErrNotFound: no item of that id, or no file of that type or name.
	ErrNotFound = errors.New("conversion: not found")
	// ErrInvalid: an argument that breaks the rules (a webhook URL the
	// policy refuses, a conversionCommandLine with an unknown flag, a
	// file name that is no file name).
	ErrInvalid = errors.New("conversion: invalid request")
	// ErrTooLarge: an upload above Config.MaxUpload.
	ErrTooLarge = errors.New("conversion: upload too large")
	// ErrUnavailable: the store, the queue or the storage cannot be
	// reached, or the service is stopped.
	ErrUnavailable = errors.New("conversion: unavailable")
)

// Defaults of Config.
const (
	DefaultMaxUpload       = 4 << 30
	DefaultReclaimInterval = time.Second
	DefaultSweepInterval   = 10 * time.Second
	// DefaultSweepAge is how long an item stays PENDING before the sweep
	// looks at its job: longer than any step between an item's update and
	// its job's.
	DefaultSweepAge = 30 * time.Second
	// DefaultPresignTTL is how long the presigned URLs of a job lease
	// live, with storage that farms reach directly.
	DefaultPresignTTL = 15 * time.Minute
)

// Config configures a Service.
type Config struct {
	// Storage keeps the uploads and outputs. Required.
	Storage storage.Storage
	// Items keeps the item records. Required.
	Items items.Store
	// Queue is the job queue. Required.
	Queue queue.Queue
	// Webhook configures the webhook sender. An empty Secret signs with a
	// random one (receivers cannot verify then, as with the original
	// server's unsigned webhooks): set one.
	Webhook webhook.Options
	// MaxUpload bounds the bytes of one item's uploads; 0 for
	// DefaultMaxUpload.
	MaxUpload int64
	// ReclaimInterval is how often expired leases are reclaimed; 0 for
	// DefaultReclaimInterval.
	ReclaimInterval time.Duration
	// SweepInterval and SweepAge pace the repair of items a stopped
	// manager left PENDING; 0 for the defaults.
	SweepInterval, SweepAge time.Duration
	// PresignTTL is how long the presigned URLs farms get live, when
	// Storage is a storage.Presigner (S3); 0 for DefaultPresignTTL.
	PresignTTL time.Duration
	// Retention purges old items; off by default.
	Retention Retention
	// Quota bounds what each tenant holds; unlimited by default. See
	// TenantQuota, and usage for how exact it is across managers.
	Quota TenantQuota
	// Now is the clock retention judges ages by; nil for time.Now.
	Now func() time.Time
	// Close closes Items and Queue (and Storage, if it is an io.Closer)
	// at Stop: the service owns them.
	Close bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
}

// Service is the conversion service. Its methods are safe for concurrent
// use.
type Service struct {
	cfg     Config
	st      storage.Storage
	items   items.Store
	q       queue.Queue
	hooks   *webhook.Sender
	log     *slog.Logger
	metrics *metrics
	usage   *usage

	ctx    context.Context // ends at Stop: long polls and loops
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	farms   map[string]*jobFarm
	started bool
	stopped bool
	stopErr error
	closers cleanup.Stack
}

// jobFarm is what the service knows of a farm from its lease calls.
type jobFarm struct {
	slots, free int
	seen        time.Time
}

// New checks cfg and builds a Service; Start starts its loops.
func New(cfg Config) (*Service, error) {
	if cfg.Storage == nil || cfg.Items == nil || cfg.Queue == nil {
		return nil, errors.New("conversion: a service needs storage, an item store and a queue")
	}
	cfg.MaxUpload = cmp.Or(cfg.MaxUpload, DefaultMaxUpload)
	cfg.ReclaimInterval = cmp.Or(cfg.ReclaimInterval, DefaultReclaimInterval)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, DefaultSweepInterval)
	cfg.SweepAge = cmp.Or(cfg.SweepAge, DefaultSweepAge)
	cfg.PresignTTL = cmp.Or(cfg.PresignTTL, DefaultPresignTTL)
	cfg.Retention.Interval = cmp.Or(cfg.Retention.Interval, DefaultRetentionInterval)
	if cfg.Quota.MaxInFlight < 0 || cfg.Quota.MaxBytes < 0 {
		return nil, errors.New("conversion: negative tenant quota")
	}
	if cfg.Retention.MaxAge < 0 || cfg.Retention.Unfinished < 0 || cfg.Retention.Interval < 0 {
		return nil, errors.New("conversion: negative retention")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, st: cfg.Storage, q: cfg.Queue, log: cfg.Logger, usage: newUsage(),
		farms: map[string]*jobFarm{}}
	s.items = trackedStore{Store: cfg.Items, u: s.usage}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	wo := cfg.Webhook
	if wo.Secret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		wo.Secret = webhook.Secret(hex.EncodeToString(b[:]))
		s.log.Warn("no webhook secret configured: webhooks are signed with a random one that receivers cannot verify")
	}
	wo.Report = s.saveDelivery
	if wo.Logger == nil {
		wo.Logger = cfg.Logger.With("component", "webhook")
	}
	if wo.Registerer == nil {
		wo.Registerer = cfg.Registerer
	}
	var err error
	if s.hooks, err = webhook.New(wo); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg.Registerer, s); err != nil {
		return nil, err
	}
	if cfg.Close {
		s.closers.PushFunc("items", cfg.Items.Close)
		s.closers.PushFunc("queue", cfg.Queue.Close)
	}
	return s, nil
}

// Start starts the webhook sender, resumes the deliveries that a stopped
// service left pending, and starts reclaiming expired leases and sweeping.
func (s *Service) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return fmt.Errorf("%w: stopped", ErrUnavailable)
	case s.started:
		return nil
	}
	s.started = true
	if err := s.hooks.Start(); err != nil {
		return err
	}
	s.resumeDeliveries()
	// The quotas count from the start; the loop keeps them current.
	if err := s.loadUsage(s.ctx); err != nil {
		s.log.Warn("count tenants' usage: the item store cannot be read; trying again", "err", err)
	}
	s.wg.Go(s.usageLoop)
	s.wg.Go(s.reclaimLoop)
	s.wg.Go(s.sweepLoop)
	if s.cfg.Retention.On() {
		s.wg.Go(s.retentionLoop)
	}
	return nil
}

// Stop ends long polls and the loops, stops the webhook sender (its
// pending deliveries stay recorded in their items, for the next Start),
// and, with Config.Close, closes the store and the queue. ctx bounds it.
// Every call returns the first one's result.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.stopErr
	}
	s.stopped = true
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("conversion: stop: %w", ctx.Err()))
	}
	if s.started {
		if _, err := s.hooks.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.closers.Run(ctx))
	s.stopErr = errors.Join(errs...)
	return s.stopErr
}

// MaxUpload is the most bytes an item's uploads may hold.
func (s *Service) MaxUpload() int64 { return s.cfg.MaxUpload }

// alive returns ErrUnavailable once the service is stopped.
func (s *Service) alive() error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("%w: stopped", ErrUnavailable)
	}
	return nil
}

func (s *Service) reclaimLoop() {
	t := time.NewTicker(s.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.reclaim()
		}
	}
}

// reclaim takes back expired leases and ends the items whose last attempt
// expired.
func (s *Service) reclaim() {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReclaimInterval*5)
	defer cancel()
	outs, err := s.q.Reclaim(ctx)
	if err != nil && s.ctx.Err() == nil {
		s.log.Warn("reclaim expired leases", "err", err)
	}
	for _, o := range outs {
		s.log.Info("job lease expired", "job", o.JobID, "item", o.Item, "attempt", o.Attempt, "farm", o.Consumer,
			"state", string(o.State))
		s.metrics.reclaimed.Inc()
		if o.Terminal() {
			id, gen, ok := parseJobID(o.JobID)
			if !ok {
				continue
			}
			s.finishFailure(ctx, id, gen, string(reasonConversion), expiredDetail(o.Attempt))
		}
	}
}

func (s *Service) sweepLoop() {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// Wait waits until item id's conversion ends (SUCCESS or ERROR) or ctx
// ends, and returns the item then. ErrNotFound if it is deleted meanwhile.
func (s *Service) Wait(ctx context.Context, id string) (items.Item, error) {
	ch, err := s.items.Subscribe(ctx)
	if err != nil {
		return items.Item{}, s.storeErr(err)
	}
	check := func() (items.Item, bool, error) {
		it, err := s.Get(ctx, id)
		if err != nil {
			return it, true, err
		}
		return it, it.State.Terminal(), nil
	}
	if it, done, err := check(); done {
		return it, err
	}
	for {
		select {
		case <-ctx.Done():
			return items.Item{}, ctx.Err()
		case <-s.ctx.Done():
			return items.Item{}, fmt.Errorf("%w: stopped", ErrUnavailable)
		case e, ok := <-ch:
			if !ok {
				return items.Item{}, fmt.Errorf("%w: the item store closed", ErrUnavailable)
			}
			if e.Type != items.EventResync && e.ID != id {
				continue
			}
			if e.Item != nil && !e.Item.State.Terminal() {
				continue
			}
			if it, done, err := check(); done {
				return it, err
			}
		}
	}
}

// Subscribe delivers item events, as items.Store.Subscribe does, for
// /events and clients that wait: those of the items the caller sees.
func (s *Service) Subscribe(ctx context.Context) (<-chan items.Event, error) {
	ch, err := s.items.Subscribe(ctx)
	if err != nil || seesAll(ctx) {
		return ch, s.storeErr(err)
	}
	return s.visibleEvents(ctx, ch), nil
}

// storeErr maps the item store's and the queue's errors to the service's.
func (s *Service) storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, items.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, items.ErrUnavailable), errors.Is(err, queue.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, items.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}
