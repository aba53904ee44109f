package placement

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/drover-dev/drover/farmapi"
)

type instState uint8

const (
	instStarting instState = iota // not on the books yet
	instIdle
	instBound
	instResetting // released by its holder, being reset before it goes idle
	instStopping
	instGone
)

func (s instState) String() string {
	return [...]string{"starting", "idle", "bound", "resetting", "stopping", "gone"}[s]
}

// Instance is one ready instance on a farm, as placement keeps it. What a
// holder reads of it (its report, farm, connection) never changes; its
// state is placement's.
type Instance struct {
	info farmapi.Instance
	opts farmapi.StartOptions // what it was started with
	pool *poolState
	farm *farmEntry
	conn Conn
	// slot is the instance's reservation in the store.
	slot string

	// guarded by Placer.mu
	state     instState
	holder    *Holder
	idleSince time.Time
	booked    time.Time // when it went on the books
	// retiredAt is when it was released to wait in its pool's retired
	// list for its stop (Placer.retireLocked).
	retiredAt time.Time
	// awaited: a waiter counts on the slot the stop of this instance frees
	// (waiter.evicting).
	awaited bool
}

// ID is the farm's id of the instance.
func (i *Instance) ID() string { return i.info.ID }

// Info is the farm's report of the instance.
func (i *Instance) Info() farmapi.Instance { return i.info }

// Pool is the instance's pool.
func (i *Instance) Pool() string { return i.pool.cfg.Name }

// Farm is the id of the farm it runs on.
func (i *Instance) Farm() string { return i.farm.id }

// Slot is its reservation in the store.
func (i *Instance) Slot() string { return i.slot }

// Conn is the connection Dial made; nil for stream instances, whose
// clients' bytes are relayed to URL instead.
func (i *Instance) Conn() Conn { return i.conn }

// URL is where the instance's WebSocket is opened.
func (i *Instance) URL() string { return InstanceURL(i.info) }

// StreamConnected tells the instance's farm that a client is being
// relayed to URL, when URL is the instance's own port: a farm sees the
// clients that pass its port itself. A farm that is no StreamWatcher
// needs no word.
func (i *Instance) StreamConnected() error {
	sw, ok := i.farm.f.(StreamWatcher)
	if !ok || i.Header() != nil {
		return nil
	}
	return sw.StreamConnected(i.info.ID)
}

// ErrNoSessionFiles means the instance's farm cannot take session files.
var ErrNoSessionFiles = errors.New("the farm cannot put files into session directories")

// AddSessionFiles has the instance's farm put files into its session
// directory; see SessionFiler.
func (i *Instance) AddSessionFiles(ctx context.Context, files []farmapi.ModelFile) error {
	sf, ok := i.farm.f.(SessionFiler)
	if !ok {
		return ErrNoSessionFiles
	}
	return sf.AddSessionFiles(ctx, i.info.ID, files)
}

// Header is what a connection to URL sends: the farm token when the
// instance is reached through its farm's port, nil otherwise.
func (i *Instance) Header() http.Header { return farmHeader(i.farm.f, i.info) }

type poolState struct {
	cfg Pool
	// idle holds the idle instances, oldest first: the oldest is handed out
	// first so that every instance gets exercised.
	idle []*Instance
	// startingWarm counts spawns that refill the warm pool; startingBound
	// counts spawns made for a holder that waits for them (busy).
	startingWarm  int
	startingBound int
	// waiting counts this pool's holders in the queue.
	waiting    int
	failures   int
	retryAt    time.Time
	retryTimer *time.Timer // a refill later: after a failure, or once quiet
	// lastTake is when an idle instance was last handed out (refillLocked).
	lastTake time.Time
	// retired holds released instances waiting for the pool's takes to
	// pause before they are stopped, oldest first; retireTimer stops them
	// then (retireLocked).
	retired     []*Instance
	retireTimer *time.Timer
}
