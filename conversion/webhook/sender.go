package webhook

import (
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	DefaultWorkers        = 4
	DefaultAttemptTimeout = 10 * time.Second
	DefaultRetryFor       = 24 * time.Hour
	DefaultMinBackoff     = 10 * time.Second
	DefaultMaxBackoff     = time.Hour
	DefaultMaxPending     = 10000
)

// Errors of Send and Resume, besides ValidateURL's.
var (
	// ErrStopped: the Sender was stopped.
	ErrStopped = errors.New("webhook: sender stopped")
	// ErrFull: Options.MaxPending deliveries are pending already.
	ErrFull = errors.New("webhook: too many pending deliveries")
	// ErrExists: a delivery of that id is pending already.
	ErrExists = errors.New("webhook: delivery already pending")
	// ErrInvalidDelivery: a delivery id that cannot be a header value.
	ErrInvalidDelivery = errors.New("webhook: invalid delivery")
)

// Options configure a Sender.
type Options struct {
	// Secret signs every attempt. Required.
	Secret Secret
	// PreviousSecrets sign too, while receivers move to a new Secret:
	// the signature header then holds one v1 entry per secret.
	PreviousSecrets []Secret
	// Policy says which hosts may be reached.
	Policy Policy
	// Workers is how many attempts run at once; 0 for DefaultWorkers.
	Workers int
	// AttemptTimeout bounds one attempt, from dialling to the end of the
	// response; 0 for DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// RetryFor is how long after Send a delivery is retried; 0 for
	// DefaultRetryFor.
	RetryFor time.Duration
	// MinBackoff is the wait before the first retry, doubled for each
	// further one up to MaxBackoff, with jitter (from half to all of it);
	// 0 for DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxPending bounds the deliveries pending at once; 0 for
	// DefaultMaxPending.
	MaxPending int
	// Report receives the record after every attempt, before the next
	// one is scheduled, and the records Resume refuses. It is called by
	// the worker that made the attempt, so it should be quick; never for
	// one delivery from two goroutines at once.
	Report func(Record)
	// Logger gets a line per delivery delivered or failed and, at debug,
	// per attempt; with the delivery id, the item id and the host, never
	// a path, a secret or a body. Nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
	// TLSConfig is for https receivers (RootCAs, say); nil for the
	// system's roots. TLS 1.2 at least.
	TLSConfig *tls.Config
}

// Sender delivers webhooks. Its methods are safe for concurrent use.
type Sender struct {
	opts    Options
	policy  *hostPolicy
	guard   *guard
	client  *http.Client
	log     *slog.Logger
	metrics *metrics
	secrets [][]byte

	// ctx is the attempts' context, canceled when Stop stops waiting.
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // closed by Stop: no attempt starts after it
	wake   chan struct{} // one token: the queue may have a due delivery
	wg     sync.WaitGroup

	mu       sync.Mutex
	started  bool
	stopping bool
	queue    entryHeap         // waiting deliveries, soonest first
	byID     map[string]*entry // every pending delivery, waiting or in flight
}

// entry is a pending delivery.
type entry struct {
	rec   Record
	body  []byte
	host  string // for logs
	index int    // in the heap; -1 in flight
}

// New returns a Sender; Start starts its workers. Deliveries sent or
// resumed before Start wait for it.
func New(opts Options) (*Sender, error) {
	if opts.Secret == "" {
		return nil, errors.New("webhook: a secret is required")
	}
	hp, err := opts.Policy.compile()
	if err != nil {
		return nil, err
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = DefaultRetryFor
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	secrets := [][]byte{[]byte(opts.Secret)}
	for _, p := range opts.PreviousSecrets {
		if p != "" {
			secrets = append(secrets, []byte(p))
		}
	}
	g := newGuard(hp)
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{
		opts:    opts,
		policy:  hp,
		guard:   g,
		client:  newClient(g, opts.TLSConfig),
		log:     opts.Logger,
		metrics: m,
		secrets: secrets,
		ctx:     ctx,
		cancel:  cancel,
		stop:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		byID:    map[string]*entry{},
	}, nil
}

// ValidateURL checks a webhook URL with the Sender's Policy, as
// Policy.ValidateURL does.
func (s *Sender) ValidateURL(raw string) error {
	_, err := s.policy.validate(raw)
	return err
}

// Send queues d for delivery now and returns its first record, with its
// id. A URL ValidateURL refuses is refused here, and nothing is sent or
// reported.
func (s *Sender) Send(d Delivery) (Record, error) {
	now := time.Now()
	rec := Record{Delivery: d, Created: now, State: StatePending, NextAttempt: now}
	if rec.ID == "" {
		rec.ID = newID()
	}
	e, err := s.newEntry(rec)
	if err != nil {
		return Record{}, err
	}
	if err := s.add(e); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Resume queues saved records that are still pending, each at its
// NextAttempt (at once if that is past) and within its period from
// Created; final records are skipped. A record whose URL the Policy now
// refuses ends failed (ClassBadURL) and is reported. The error joins those
// of records not queued (ErrExists, ErrFull, ErrStopped).
func (s *Sender) Resume(recs []Record) error {
	var errs []error
	for _, rec := range recs {
		if rec.Final() {
			continue
		}
		if rec.Created.IsZero() {
			rec.Created = time.Now()
		}
		if rec.NextAttempt.IsZero() {
			rec.NextAttempt = time.Now()
		}
		rec.State = StatePending
		e, err := s.newEntry(rec)
		if errors.Is(err, ErrInvalidURL) || errors.Is(err, ErrNotAllowed) {
			rec.State, rec.LastError, rec.NextAttempt = StateFailed, ClassBadURL, time.Time{}
			s.metrics.delivery(rec.State)
			s.log.Warn("webhook refused on resume", "delivery", rec.ID, "item", rec.Payload.ID, "err", ClassBadURL)
			s.report(rec)
			continue
		}
		if err == nil {
			err = s.add(e)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook: resume %s: %w", rec.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Sender) newEntry(rec Record) (*entry, error) {
	if !validID(rec.ID) {
		return nil, fmt.Errorf("%w: an id is 1 to 128 printable ASCII characters", ErrInvalidDelivery)
	}
	u, err := s.policy.validate(rec.URL)
	if err != nil {
		return nil, err
	}
	rec.Payload.Files = slices.Clone(rec.Payload.Files)
	body, err := rec.Payload.body()
	if err != nil {
		return nil, fmt.Errorf("webhook: payload: %w", err)
	}
	return &entry{rec: rec, body: body, host: normalizeHost(u.Hostname()), index: -1}, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

func (s *Sender) add(e *entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return ErrStopped
	case s.byID[e.rec.ID] != nil:
		return ErrExists
	case len(s.byID) >= s.opts.MaxPending:
		return ErrFull
	}
	s.byID[e.rec.ID] = e
	heap.Push(&s.queue, e)
	s.metrics.pendingAdd(1)
	s.signal()
	return nil
}

// signal wakes a waiting worker, if none is woken yet.
func (s *Sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Pending returns the records of the deliveries not yet final, waiting or
// in flight, soonest due first. After Stop, they are the deliveries it
// left pending.
func (s *Sender) Pending() []Record {
	s.mu.Lock()
	recs := make([]Record, 0, len(s.byID))
	for _, e := range s.byID {
		recs = append(recs, e.rec)
	}
	s.mu.Unlock()
	slices.SortFunc(recs, func(a, b Record) int { return a.NextAttempt.Compare(b.NextAttempt) })
	return recs
}

// Start starts the workers. A second Start does nothing; a Start after
// Stop is ErrStopped.
func (s *Sender) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return ErrStopped
	}
	if s.started {
		return nil
	}
	s.started = true
	for range s.opts.Workers {
		s.wg.Add(1)
		go s.worker()
	}
	return nil
}

// Stop stops the Sender: no attempt starts after it is called, and it
// waits for the attempts in flight until ctx ends, then cancels them
// (they count as attempts, ClassInterrupted, and stay pending). It returns
// the deliveries left pending, which nothing retries afterwards (see the
// package doc), and ctx's error if it had to cut attempts off. Stop may be
// called again; Send and Resume are ErrStopped after it.
func (s *Sender) Stop(ctx context.Context) ([]Record, error) {
	s.mu.Lock()
	first := !s.stopping
	if first {
		s.stopping = true
		close(s.stop)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("webhook: stop: attempts in flight cut off: %w", ctx.Err())
		s.cancel()
		<-done // canceled attempts end at once
	}
	s.cancel()
	s.client.CloseIdleConnections()
	pending := s.Pending()
	if first {
		s.metrics.pendingAdd(-len(pending))
		if len(pending) > 0 {
			s.log.Info("webhook sender stopped with deliveries pending", "pending", len(pending))
		}
	}
	return pending, err
}

// worker makes attempts as they fall due until Stop.
func (s *Sender) worker() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		e, wait, ok := s.next()
		if !ok {
			return
		}
		if e != nil {
			s.run(e)
			continue
		}
		var due <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			due = timer.C
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-due:
		}
		timer.Stop()
	}
}

// next takes the delivery due soonest if it is due, or says how long
// until it is (0: nothing waits); ok is false once the Sender stops.
func (s *Sender) next() (e *entry, wait time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, 0, false
	}
	if len(s.queue) == 0 {
		return nil, 0, true
	}
	now := time.Now()
	if d := s.queue[0].rec.NextAttempt.Sub(now); d > 0 {
		return nil, d, true
	}
	e = heap.Pop(&s.queue).(*entry)
	if len(s.queue) > 0 && !s.queue[0].rec.NextAttempt.After(now) {
		s.signal() // another is due: wake another worker for it
	}
	return e, 0, true
}

// run makes one attempt of e, records and reports it, and queues the next
// attempt or lets the delivery go.
func (s *Sender) run(e *entry) {
	res := s.attempt(e)
	s.mu.Lock()
	s.apply(e, res)
	rec := e.rec
	s.mu.Unlock()

	s.metrics.attempt(res.outcome, res.dur)
	log := s.log.With("delivery", rec.ID, "item", rec.Payload.ID, "host", e.host, "attempt", rec.Attempts)
	var detail []any
	if rec.LastStatus != 0 {
		detail = append(detail, "status", rec.LastStatus)
	}
	if rec.LastError != "" {
		detail = append(detail, "err", rec.LastError)
	}
	switch rec.State {
	case StateDelivered:
		s.metrics.delivery(rec.State)
		log.Info("webhook delivered", detail...)
	case StateFailed:
		s.metrics.delivery(rec.State)
		log.Warn("webhook failed", detail...)
	default:
		log.Debug("webhook attempt failed; retrying", append(detail, "next", rec.NextAttempt)...)
	}
	if rec.Final() {
		// Gone from Pending before its owner hears of it.
		s.mu.Lock()
		delete(s.byID, rec.ID)
		s.mu.Unlock()
		s.metrics.pendingAdd(-1)
		s.report(rec)
		return
	}
	// Reported before the next attempt is scheduled: an owner that saves
	// the record saves it before that attempt can be made.
	s.report(rec)
	s.mu.Lock()
	heap.Push(&s.queue, e)
	s.signal()
	s.mu.Unlock()
}

// apply records an attempt's result in e and decides what comes next.
func (s *Sender) apply(e *entry, res result) {
	r := &e.rec
	r.Attempts++
	r.LastAttempt = res.at
	r.LastStatus = res.status
	r.LastError = res.class
	r.NextAttempt = time.Time{}
	switch res.outcome {
	case outcomeDelivered:
		r.State = StateDelivered
		return
	case outcomeFailed:
		r.State = StateFailed
		return
	}
	now := time.Now()
	deadline := r.Created.Add(s.opts.RetryFor)
	if !now.Before(deadline) {
		r.State = StateFailed
		return
	}
	var wait time.Duration
	if res.class != ClassInterrupted {
		wait = backoff(r.Attempts, s.opts.MinBackoff, s.opts.MaxBackoff)
		if res.retryAfter > 0 {
			if now.Add(res.retryAfter).After(deadline) {
				r.State, r.LastError = StateFailed, ClassRetryAfterLong
				return
			}
			wait = max(wait, res.retryAfter)
		}
	}
	r.State = StatePending
	r.NextAttempt = now.Add(wait)
	if r.NextAttempt.After(deadline) {
		r.NextAttempt = deadline // one last attempt as the period ends
	}
}

func (s *Sender) report(rec Record) {
	if s.opts.Report != nil {
		s.opts.Report(rec)
	}
}

// entryHeap orders waiting deliveries by their next attempt.
type entryHeap []*entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	return h[i].rec.NextAttempt.Before(h[j].rec.NextAttempt)
}
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
