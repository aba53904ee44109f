// Package store holds the state that managers share: the farms and their
// slots, the sessions a client may resume, the managers alive, and an event
// channel. Memory keeps it in the process (one manager, `drover up`); Redis
// keeps it in a Redis server, so that several managers behind a load
// balancer see one set of farms, place sessions on them without binding an
// instance twice, and resume each other's sessions.
//
// The task path never touches the store: only placement, release, farm
// registration and heartbeats, and resume do. A store that cannot be
// reached therefore stops new placements, not running sessions.
//
// Every implementation passes the same suite, storetest.Run.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no farm, slot or session of that id (or it expired).
	ErrNotFound = errors.New("store: not found")
	// ErrFull: the farm has no free slot.
	ErrFull = errors.New("store: farm full")
	// ErrDraining: the farm takes no new slots.
	ErrDraining = errors.New("store: farm draining")
	// ErrConflict: a compare-and-set lost (the slot is not in the state or
	// not of the owner the caller expected).
	ErrConflict = errors.New("store: conflict")
	// ErrUnavailable: the store cannot be reached. Callers fail new
	// placements with it and keep running sessions going.
	ErrUnavailable = errors.New("store: unavailable")
)

// Farm is a registered farm as every manager sees it.
type Farm struct {
	ID string `json:"id"`
	// Spec is the farm's registration as it sent it (JSON of
	// farm.RegisterRequest), kept opaque so that this package does not
	// depend on the farm's wire types. Empty for a farm in a manager's own
	// process.
	Spec []byte `json:"spec,omitempty"`
	// Owner is the manager a farm in its own process belongs to; other
	// managers cannot reach such a farm and place nothing on it. Empty for
	// farms that registered over the network.
	Owner    string `json:"owner,omitempty"`
	Slots    int    `json:"slots"`
	Draining bool   `json:"draining,omitempty"`
	// Seen is the time of the last registration or heartbeat.
	Seen time.Time `json:"seen"`

	// Filled in by Farms: reservations held on the farm, and those of them
	// busy (bound to a session, or starting for one).
	Used int `json:"used"`
	Busy int `json:"busy"`
}

// SlotState is where a reservation is in its life.
type SlotState string

// Slot states.
const (
	// SlotStarting: the owner asked the farm for an instance.
	SlotStarting SlotState = "starting"
	// SlotIdle: the instance is ready and bound to no session.
	SlotIdle SlotState = "idle"
	// SlotBound: the instance serves Session.
	SlotBound SlotState = "bound"
)

// Slot is one reservation of one farm slot: an instance alive or being
// started, and the manager that owns its connection.
type Slot struct {
	ID       string    `json:"id"`       // chosen by the owner, unique per farm
	Owner    string    `json:"owner"`    // manager id
	Pool     string    `json:"pool"`     //
	Instance string    `json:"instance"` // the farm's instance id, once started
	State    SlotState `json:"state"`
	// Session is the session the slot serves (bound) or starts for
	// (starting); empty otherwise.
	Session string    `json:"session,omitempty"`
	Since   time.Time `json:"since"` // set by Reserve
}

// Busy reports whether the slot counts as busy for health: bound, or
// starting for a waiting session.
func (s Slot) Busy() bool {
	return s.State == SlotBound || (s.State == SlotStarting && s.Session != "")
}

// Session is what another manager needs to resume a session whose manager
// is gone: the instance it is bound to and where to reach it.
type Session struct {
	ID string `json:"id"`
	// TokenHash is the hex SHA-256 of the resume token; the token itself is
	// never stored.
	TokenHash string `json:"token_hash"`
	Owner     string `json:"owner"`
	Pool      string `json:"pool"`
	Farm      string `json:"farm"`
	Slot      string `json:"slot"`
	// Instance is the instance as the farm reported it (JSON of
	// farm.Instance).
	Instance []byte    `json:"instance"`
	Created  time.Time `json:"created"`
}

// Capacity is the shared view /health is computed from.
type Capacity struct {
	Slots int // slots of farms that take sessions (not draining)
	Used  int // reservations on those farms
	Busy  int // busy reservations on those farms
}

// EventType names an event.
type EventType string

// Events managers publish.
const (
	EventFarmAdded    EventType = "farm_added"
	EventFarmRemoved  EventType = "farm_removed"
	EventFarmDraining EventType = "farm_draining"
	// EventSlotFreed: capacity came back; managers with waiters try again.
	EventSlotFreed EventType = "slot_freed"
	// EventSessionMoved: Manager claimed Session from From; From lets go of
	// it and answers with EventSessionReleased.
	EventSessionMoved    EventType = "session_moved"
	EventSessionReleased EventType = "session_released"
	// EventSessionOpened and EventSessionEnded tell dashboards that a
	// session was placed or ended.
	EventSessionOpened EventType = "session_opened"
	EventSessionEnded  EventType = "session_ended"
)

// Event is a change every manager (and dashboard) hears about.
type Event struct {
	Type    EventType `json:"type"`
	Farm    string    `json:"farm,omitempty"`
	Session string    `json:"session,omitempty"`
	// Manager is the manager that published the event; From, for
	// EventSessionMoved, the one the session moved from.
	Manager string `json:"manager,omitempty"`
	From    string `json:"from,omitempty"`
}

// Private is implemented by a store whose records live in this process
// alone (Memory). Such a store cannot lose a record behind the back of a
// manager that uses it, and it is new whenever its process is: a manager
// that starts with a new one knows that a farm's instance it finds no
// record of serves no live session it could reach, since every manager
// that placed one through the store before has gone with its sessions.
type Private interface {
	// Private reports whether the records live in this process alone.
	Private() bool
}

// Store is the shared state. All methods are safe for concurrent use; every
// method that changes more than one record does so atomically.
type Store interface {
	// PutFarm registers a farm or replaces its registration. Replacing
	// drops the farm's slots: a farm that registers again has restarted.
	// Seen is set to now; Used and Busy are ignored.
	PutFarm(ctx context.Context, f Farm) error
	// TouchFarm records a heartbeat: Seen becomes now, Draining is set if
	// draining (never cleared). ErrNotFound for an unknown farm.
	TouchFarm(ctx context.Context, id string, draining bool) (Farm, error)
	// DrainFarm marks a farm draining. ErrNotFound for an unknown farm.
	DrainFarm(ctx context.Context, id string) error
	// RemoveFarm forgets a farm and its slots. It reports whether the farm
	// was there, so that of several managers removing a dead farm exactly
	// one learns it did.
	RemoveFarm(ctx context.Context, id string) (bool, error)
	// Farms returns every registered farm with Used and Busy filled in,
	// ordered by id.
	Farms(ctx context.Context) ([]Farm, error)

	// Reserve takes one slot of a farm for s, atomically: ErrFull when the
	// farm's reservations reach its slots, ErrDraining when it drains,
	// ErrNotFound when it is not registered. s.Since is set to now. A
	// reservation of that id held by s.Owner already is success (a retry),
	// one held by another owner ErrConflict.
	Reserve(ctx context.Context, farm string, s Slot) error
	// UpdateSlot replaces a reservation's Instance, State and Session,
	// provided its owner is s.Owner and its state is from (ErrConflict
	// otherwise; ErrNotFound when it is gone). Binding an idle slot goes
	// through here: of two binders only one finds it idle.
	UpdateSlot(ctx context.Context, farm string, s Slot, from SlotState) error
	// FreeSlot drops a reservation. Freeing one that is gone is no error.
	FreeSlot(ctx context.Context, farm, slot string) error
	// Slots returns a farm's reservations, ordered by id.
	Slots(ctx context.Context, farm string) ([]Slot, error)
	// Capacity sums slots, reservations and busy reservations over the
	// farms that are not draining.
	Capacity(ctx context.Context) (Capacity, error)

	// PutSession stores a resumable session for ttl, replacing one with the
	// same token hash.
	PutSession(ctx context.Context, s Session, ttl time.Duration) error
	// TouchSessions extends the ttl of the sessions owner still owns among
	// tokenHashes; the others are left alone.
	TouchSessions(ctx context.Context, owner string, tokenHashes []string, ttl time.Duration) error
	// ClaimSession makes owner the owner of the session with tokenHash and
	// of its slot, atomically, and extends its ttl. It returns the session
	// as it was (its Owner is the previous owner). ErrNotFound when no
	// such session is stored or it expired.
	ClaimSession(ctx context.Context, tokenHash, owner string, ttl time.Duration) (Session, error)
	// DeleteSession removes the session with tokenHash if owner owns it: a
	// manager ending a session another one claimed deletes nothing.
	DeleteSession(ctx context.Context, tokenHash, owner string) error

	// Alive records that manager id is alive for ttl; ManagerAlive asks.
	// Gone forgets the record at once: the manager shut down, and nobody
	// should wait for it to answer.
	Alive(ctx context.Context, id string, ttl time.Duration) error
	ManagerAlive(ctx context.Context, id string) (bool, error)
	Gone(ctx context.Context, id string) error

	// Publish sends an event to every subscriber, the publisher's own
	// subscriptions included.
	Publish(ctx context.Context, e Event) error
	// Subscribe delivers events until ctx ends; then the channel is closed.
	// Events published while the store is unreachable may be lost:
	// subscribers resynchronise from Farms and Slots.
	Subscribe(ctx context.Context) (<-chan Event, error)

	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Close releases the store's connections.
	Close() error
}
