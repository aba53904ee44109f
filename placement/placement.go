// Package placement owns where instances run: the registry of farms and
// the judgement of their liveness, the slots reserved on them through the
// shared store, the instances started on them, the warm pools and the
// wait queue.
//
// It places holders. A holder is anything that needs an instance for a
// while: a client session today, a conversion job tomorrow. A holder
// names its pool, the farm labels it needs and its start options, and
// gives a callback for when its instance is lost; placement knows nothing
// else of it. The manager's sessions, the task path, client protocols and
// HTTP are not placement's business: the task path never enters this
// package, it speaks to an instance through the Conn that Dial made.
//
// The farm registry is usable on its own: Register, Heartbeat, Deregister,
// DrainFarm and Farms work without any pool or holder.
//
// One Placer per manager. Several managers share farms and slots through
// a store.Store; each keeps its own warm instances and its own queue.
package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// Sentinel errors. Placement returns these (wrapped, with the cause for
// logs); their messages are plain sentences a client may see, and a
// caller that shows an error to a client shows the sentinel's, never the
// wrapped chain, which can name farms and addresses.
var (
	// ErrNoCapacity: no instance is free and the holder did not want to wait.
	ErrNoCapacity = errors.New("no free instance")
	// ErrQueueTimeout: the holder waited its pool's queue timeout in vain.
	ErrQueueTimeout = errors.New("no instance became free in time")
	// ErrUnknownPool: no pool of that name is configured or served.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrNoFarm: farms are registered, but none of them serves the pool.
	ErrNoFarm = errors.New("no farm serves the pool")
	// ErrSpawnFailed: instances were started for the holder and failed.
	ErrSpawnFailed = errors.New("could not start an instance")
	// ErrShutdown: the placer is closed.
	ErrShutdown = errors.New("the manager is shutting down")
	// ErrFarmNotFound: no farm of that id is registered.
	ErrFarmNotFound = errors.New("farm not found")
	// ErrStoreUnavailable: the shared state cannot be reached: nothing can
	// be placed until it is back. Instances already placed keep working.
	ErrStoreUnavailable = errors.New("the shared state store is unreachable; new sessions fail until it is back")
	// ErrBadRegistration: a farm's registration is malformed.
	ErrBadRegistration = errors.New("bad farm registration")
	// ErrUnreachable: a farm did not answer (connection refused, broken or
	// timed out). A Farm implementation wraps it in such errors; the farm
	// is then suspect and gets no placements until it answers again.
	ErrUnreachable = errors.New("farm unreachable")
)

// PoolError is a failure about one pool: ErrUnknownPool or ErrNoFarm. Its
// message names the pool, which is the caller's own word.
type PoolError struct {
	Pool string
	Err  error
}

func (e *PoolError) Error() string {
	switch {
	case errors.Is(e.Err, ErrNoFarm):
		return fmt.Sprintf("no farm serves pool %q", e.Pool)
	case errors.Is(e.Err, ErrUnknownPool):
		return fmt.Sprintf("unknown pool %q", e.Pool)
	}
	return fmt.Sprintf("pool %q: %v", e.Pool, e.Err)
}

func (e *PoolError) Unwrap() error { return e.Err }

// Pool is placement's policy for one pool of instances.
type Pool struct {
	Name string
	// Warm is how many idle instances to keep ready.
	Warm int
	// Reuse returns an instance to the idle pool when its holder lets go
	// of it cleanly; otherwise it is stopped and a fresh one takes the slot.
	Reuse bool
	// Reset, when set for a Reuse pool, clears an instance before it goes
	// idle again. Until it returns the instance is neither idle nor
	// bound; an error stops the instance.
	Reset func(ctx context.Context, inst *Instance) error
	// ResetTimeout bounds Reset (30 s).
	ResetTimeout time.Duration
	// QueueTimeout bounds a holder's wait for an instance (60 s).
	QueueTimeout time.Duration
}

func (p *Pool) defaults() {
	if p.QueueTimeout <= 0 {
		p.QueueTimeout = 60 * time.Second
	}
	if p.ResetTimeout <= 0 {
		p.ResetTimeout = 30 * time.Second
	}
}

// Holder is what holds an instance: a session, a job. Placement keeps the
// pointer for as long as the holder is bound; its fields must not change
// meanwhile.
type Holder struct {
	// ID names the holder in status and in the store's reservations.
	ID string
	// Pool is the pool it wants an instance of.
	Pool string
	// Labels restrict it to farms that carry them all.
	Labels map[string]string
	// Start are the options a fresh instance is started with. An idle
	// instance serves the holder when the holder asks for none, or when the
	// instance was started with the same.
	Start farmapi.StartOptions
	// Lost is called, in a goroutine of its own, when the holder's instance
	// died, its connection broke or its farm was declared dead. The
	// instance is off the books by then: the holder need not release it.
	Lost func(cause error)
	// Draining, when set, is called when the farm of the holder's instance
	// starts draining: the holder may go on, but should end soon.
	Draining func(farm string)
}

// Conn is placement's side of the connection to an instance: the task
// path uses the connection itself, placement only asks whether it is
// clean and closes it.
type Conn interface {
	// Clean reports whether the instance could serve another holder now:
	// the connection is up and no task is running on it.
	Clean() bool
	// Close shuts the connection without reporting a loss.
	Close()
}

// DialFunc opens the connection to a started instance at url, sending
// header with the handshake. lost is to be called once if the connection
// breaks on its own.
type DialFunc func(ctx context.Context, url string, header http.Header, lost func(error)) (Conn, error)

// AttachFunc makes a Conn of conn, a connection to an instance already
// past its WebSocket handshake (a Connector's); lost as for DialFunc. It
// owns conn, closing it on an error too.
type AttachFunc func(conn net.Conn, lost func(error)) (Conn, error)

// Config configures a Placer. The zero value of each field means its
// default.
type Config struct {
	// Pools are the configured pools. Farms may bring others: they get the
	// default policy.
	Pools []Pool
	// Store is the state shared with other managers; required.
	Store store.Store
	// ID names this manager in the store; required.
	ID string
	// FarmToken is sent to remote farms.
	FarmToken string
	// FarmClient makes the REST calls to remote farms; nil: one with
	// the system's TLS roots. It needs no timeout: every call carries a
	// context that bounds it.
	FarmClient *http.Client
	// HeartbeatInterval is what farms are told to use (1 s); a farm silent
	// for MissedHeartbeats intervals (3) is dead.
	HeartbeatInterval time.Duration
	MissedHeartbeats  int
	// Dial connects to a started instance; nil means instances get no
	// connection (placement tests; stream instances never get one).
	Dial DialFunc
	// Attach takes the connections Connector farms make; nil: every
	// instance is dialled.
	Attach AttachFunc
	// Publish sends an event to the other managers; nil publishes to the
	// store directly. Placement publishes farm and slot events.
	Publish func(store.Event)
	// Resync, when set, is called when the store answers again after an
	// outage, or was found to have lost records: whoever keeps other
	// records in it puts them back.
	Resync func()
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer takes placement's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock the liveness judgement reads (time.Now).
	Now func() time.Time
	// RefillQuiet is how long a warm pool must hand out no instance before
	// it refills beyond a quarter of its warm count (25 ms); see
	// Placer.refillLocked.
	RefillQuiet time.Duration
}

func (c *Config) defaults() error {
	if c.Store == nil {
		return errors.New("placement: no store")
	}
	if c.ID == "" {
		return errors.New("placement: no manager id")
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.RefillQuiet <= 0 {
		c.RefillQuiet = 25 * time.Millisecond
	}
	if c.MissedHeartbeats <= 0 {
		c.MissedHeartbeats = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	seen := map[string]bool{}
	for i := range c.Pools {
		if c.Pools[i].Name == "" {
			return errors.New("placement: a pool has no name")
		}
		if seen[c.Pools[i].Name] {
			return fmt.Errorf("placement: pool %q configured twice", c.Pools[i].Name)
		}
		seen[c.Pools[i].Name] = true
		c.Pools[i].defaults()
	}
	return nil
}

// Placer places holders on farm instances. Its lock is taken when holders
// are placed and released, farms join and leave, and the store is
// compared with the books; never per task.
type Placer struct {
	cfg     Config
	st      store.Store
	id      string
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// store health: see store.go.
	down atomic.Bool
	upAt atomic.Int64 // unix nanos of the clock: when the store last came back

	resync chan struct{} // buffered 1: ask for a reconcile pass now
	// syncMu: one syncFarms at a time; it guards lastSync and wokeAt.
	syncMu   sync.Mutex
	lastSync time.Time
	// wokeAt is when this manager last woke from a stall: no farm is
	// judged by a silence from before it (see syncFarms).
	wokeAt time.Time
	// claimMu: a claim holds it (read) until its slot is pending;
	// reconcileSlots holds it while it reads the store and the books, so
	// it never takes a slot just claimed for a leftover.
	claimMu sync.RWMutex

	mu        sync.Mutex
	farms     map[string]*farmEntry
	instances map[string]*Instance
	pools     map[string]*poolState
	// queue holds the waiters in order, and those that left until the
	// next tidy; queued counts the ones still waiting.
	queue  []*waiter
	queued int
	// stopping are the instances whose stop has been asked of their farm
	// and has not returned (stopAsyncLocked).
	stopping  []*Instance
	tidyTimer *time.Timer
	closed    bool
	// pending are reservations whose instance is not on the books yet:
	// the store's view of them must not be reconciled away.
	pending map[string]struct{}
	// buried are the farms this manager gave up, with when: a farm that
	// registers again within buriedFor is told to stop the instances it
	// still runs that nobody holds.
	buried map[string]time.Time
}

// buriedFor is how long a farm that left is remembered.
const buriedFor = 10 * time.Minute

// New makes a Placer. Start starts its loops; Stop ends them.
func New(cfg Config) (*Placer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	p := &Placer{
		cfg: cfg, st: cfg.Store, id: cfg.ID, log: cfg.Logger, metrics: met, now: cfg.Now,
		resync:    make(chan struct{}, 1),
		farms:     map[string]*farmEntry{},
		instances: map[string]*Instance{},
		pools:     map[string]*poolState{},
		pending:   map[string]struct{}{},
		buried:    map[string]time.Time{},
	}
	if p.cfg.FarmClient == nil {
		p.cfg.FarmClient = &http.Client{}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.upAt.Store(p.now().UnixNano())
	for _, pc := range cfg.Pools {
		p.pools[pc.Name] = &poolState{cfg: pc}
	}
	if cfg.Publish == nil {
		p.cfg.Publish = p.publishDirect
	}
	met.registerCapacity(cfg.Registerer, p.Capacity)
	return p, nil
}

// Start runs the farm monitor (liveness, the store's farms, the store's
// health) and the reconciler of reservations.
func (p *Placer) Start() {
	p.goTracked(p.monitor)
	p.goTracked(p.reconciler)
}

// Close refuses new placements, fails every waiter with ErrShutdown and
// stops the idle instances. Bound instances stay until released. It is
// idempotent.
func (p *Placer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for _, w := range p.queue {
		p.leaveLocked(w, grant{err: ErrShutdown})
	}
	p.queue = nil
	if p.tidyTimer != nil {
		p.tidyTimer.Stop()
		p.tidyTimer = nil
	}
	p.metrics.queueLength.Set(0)
	for _, ps := range p.pools {
		if ps.retryTimer != nil {
			ps.retryTimer.Stop()
		}
		if ps.retireTimer != nil {
			ps.retireTimer.Stop()
			ps.retireTimer = nil
		}
		p.stopRetiredLocked(ps, true)
		for _, inst := range ps.idle {
			p.stopAsyncLocked(inst)
		}
		ps.idle = nil
	}
}

// Stop closes the placer, ends its loops and waits, bounded by ctx, for
// its goroutines: instance stops under way, lost callbacks.
func (p *Placer) Stop(ctx context.Context) error {
	p.Close()
	p.cancel()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("placement stop: %w", ctx.Err())
	}
}

func (p *Placer) goTracked(fn func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// HasPool reports whether a pool of that name is configured or served by a
// farm.
func (p *Placer) HasPool(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.pools[name]
	return ok
}

func (p *Placer) pool(name string) (*poolState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps, ok := p.pools[name]
	if !ok {
		return nil, &PoolError{Pool: name, Err: ErrUnknownPool}
	}
	return ps, nil
}

// ensurePoolsLocked gives the pools a farm brings that nobody configured
// the default policy.
func (p *Placer) ensurePoolsLocked(names []string) {
	for _, name := range names {
		if _, ok := p.pools[name]; !ok {
			cfg := Pool{Name: name}
			cfg.defaults()
			p.pools[name] = &poolState{cfg: cfg}
		}
	}
}
