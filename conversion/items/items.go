// Package items keeps the records of conversion items, as the HOOPS
// Communicator conversion server's API shows them (`data`, `items`,
// `updated`): an item's name, state, outputs, originals, attempts and
// webhook delivery, and the time of the last change of any item.
//
// A Store creates, reads, lists, updates and deletes items. Updates are
// read-modify-write with a function (Update), so concurrent writers lose
// nothing, and every update is checked: an item ends (SUCCESS or ERROR)
// once per conversion, and only Reconvert starts it again. Every change,
// deletes included, moves LastUpdated and is published to subscribers
// (the `/events` of the API).
//
// Local keeps items in the process: in memory only (NewMemory), or
// persisted as JSON beside each item's files in a storage.Storage (Open),
// so that `drover up` finds its items again after a restart. Redis keeps
// them in a Redis server for several managers. Both pass one suite,
// itemstest.Run.
//
// The package owns item records, their state rules and their events. It
// does not own the files (storage; the key layout is here, Dir and
// friends), jobs (conversion/queue), converting (conversion/convert),
// webhooks' sending, or HTTP.
package items

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no item of that id (never created, or deleted).
	ErrNotFound = errors.New("items: item not found")
	// ErrExists: Create of an id that is taken.
	ErrExists = errors.New("items: item exists")
	// ErrInvalid: an id, state or field that breaks the rules, or an
	// update that changes what cannot change (id, created).
	ErrInvalid = errors.New("items: invalid item")
	// ErrTerminal: an update moves an item that ended (SUCCESS or ERROR)
	// to another state without Reconvert. A late or repeated result of a
	// conversion gets it, so an item reaches SUCCESS once.
	ErrTerminal = errors.New("items: item already ended")
	// ErrTransition: an update moves the state where it cannot go (back to
	// UPLOADING, or a generation skipped or undone).
	ErrTransition = errors.New("items: state transition refused")
	// ErrStale: a result for a generation that is not the item's current
	// one (the item was reconverted meanwhile).
	ErrStale = errors.New("items: result of an earlier conversion")
	// ErrChanged: DeleteUnchanged found the item changed since the
	// version its caller judged (another writer came first); nothing was
	// deleted.
	ErrChanged = errors.New("items: item changed")
	// ErrUnavailable: the store cannot be reached (Redis is down or does
	// not answer in time), or it is closed.
	ErrUnavailable = errors.New("items: unavailable")
)

// State is an item's conversionState: one of the HOOPS conversion server's
// four, so that its clients understand every state.
type State string

const (
	// StateUploading means the item exists, its files are not all there yet.
	StateUploading State = "UPLOADING"
	// StatePending means queued or converting.
	StatePending State = "PENDING"
	// StateSuccess means converted; Files lists the outputs.
	StateSuccess State = "SUCCESS"
)

// errorPrefix starts the failed states: "ERROR - <reason>".
const errorPrefix = "ERROR - "

// Failed is the state of an item whose conversion failed for reason, in
// the original server's words where they apply ("Conversion Error",
// "Specify startPath with ZIP", "Unzip Error").
func Failed(reason string) State { return State(errorPrefix + reason) }

// Failed reports whether s is an "ERROR - <reason>" state.
func (s State) Failed() bool { return strings.HasPrefix(string(s), errorPrefix) }

// Reason is the reason of a failed state, "" for the others.
func (s State) Reason() string {
	if !s.Failed() {
		return ""
	}
	return string(s[len(errorPrefix):])
}

// Terminal reports whether s ends a conversion: SUCCESS or ERROR.
func (s State) Terminal() bool { return s == StateSuccess || s.Failed() }

// Valid reports whether s is one of the states: UPLOADING, PENDING,
// SUCCESS, or ERROR with a reason of at most 200 bytes and no control
// characters.
func (s State) Valid() bool {
	switch s {
	case StateUploading, StatePending, StateSuccess:
		return true
	}
	r := s.Reason()
	return s.Failed() && r != "" && len(r) <= 200 &&
		!strings.ContainsFunc(r, func(c rune) bool { return c < 0x20 || c == 0x7f })
}

// Item is a conversion item. Its JSON is what it is stored as and close
// to what the API's `data` answers; the API shapes its own view.
type Item struct {
	// ID is the item's id, the HOOPS storageID (and itemid). See NewID
	// and ValidateID.
	ID   string `json:"storageID"`
	Name string `json:"name"`
	// Tenant owns the item: only its principals (and admins) see and
	// touch it. Set at Create and never changed. Empty in records made
	// before items had tenants; package conversion reads that as the
	// default tenant.
	Tenant string `json:"tenant,omitempty"`
	// StartPath names the model inside a ZIP or among several files
	// (rootFile of uploadArray).
	StartPath string `json:"startPath,omitempty"`
	State     State  `json:"conversionState"`
	// DetailedError says more about a failed state: the converter's last
	// output lines.
	DetailedError string `json:"detailedError,omitempty"`
	// Created and Updated are set by the store, in milliseconds: Created
	// once, Updated by every change.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Webhook is the URL told when the conversion ends.
	Webhook string `json:"webhook,omitempty"`
	// CommandLine is the user's conversionCommandLine, a flat
	// [flag, value, …] list.
	CommandLine      []string `json:"conversionCommandLine,omitempty"`
	ProcessShattered bool     `json:"processShattered,omitempty"`
	// Originals are the uploaded files.
	Originals []Original `json:"originals,omitempty"`
	// Awaiting is a file a client was given an upload token for
	// (uploadToken): it goes straight to OriginalKey(ID, Stored), and
	// joins Originals at reconvert once it is there. Its Size is the most
	// bytes it may hold, 0 for the server's limit.
	Awaiting *Original `json:"awaiting,omitempty"`
	// Files are the outputs of the last successful conversion.
	Files []File `json:"files,omitempty"`
	// Shattered are the shattered outputs of the last successful
	// conversion with ProcessShattered: a GLB per part and the index
	// (type xml), each ShatteredKey(id, Name).
	Shattered []File `json:"shattered,omitempty"`
	// Generation counts the item's conversions: 0 for the first,
	// incremented by Reconvert. A job carries the generation it converts,
	// so that a result of an earlier one is refused (ErrStale).
	Generation int `json:"generation"`
	// Attempts counts the attempts of the current conversion.
	Attempts int `json:"attempts"`
	// Delivery is the webhook's delivery record for the current state.
	Delivery *Delivery `json:"webhookDelivery,omitempty"`
}

// Original is an uploaded file.
type Original struct {
	// Name is the file's name as uploaded (or its path in uploadArray).
	Name string `json:"name"`
	// Stored is the name the server chose for it: the file is
	// OriginalKey(id, Stored).
	Stored string `json:"stored"`
	Size   int64  `json:"size"`
}

// File is an output: OutputKey(id, Name).
type File struct {
	Name string `json:"name"`
	// Type is the output's type: glb, png, stl, obj, mtl, xml, …
	Type string `json:"type"`
	Size int64  `json:"size"`
}

// Delivery records the webhook's notification of an item's state.
type Delivery struct {
	// ID names the delivery (a header of each attempt), so that a
	// receiver drops repeats.
	ID string `json:"id,omitempty"`
	// State is the state the delivery tells.
	State    State `json:"state,omitempty"`
	Attempts int   `json:"attempts"`
	// LastStatus is the HTTP status of the last attempt, 0 if it got none
	// (LastError says why).
	LastStatus  int       `json:"lastStatus,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// Delivered is when a receiver answered 2xx; zero until then.
	Delivered time.Time `json:"delivered,omitzero"`
	// GaveUp is set when the retry period passed without a delivery.
	GaveUp bool `json:"gaveUp,omitempty"`
}

// Clone returns a deep copy of it.
func (it *Item) Clone() Item {
	c := *it
	c.CommandLine = slices.Clone(it.CommandLine)
	c.Originals = slices.Clone(it.Originals)
	c.Files = slices.Clone(it.Files)
	c.Shattered = slices.Clone(it.Shattered)
	if it.Awaiting != nil {
		a := *it.Awaiting
		c.Awaiting = &a
	}
	if it.Delivery != nil {
		d := *it.Delivery
		c.Delivery = &d
	}
	return c
}

// Reconvert starts a new conversion of the item: the next generation,
// PENDING, with no outputs, attempts, error or delivery of the last one.
// It is the only way out of SUCCESS or ERROR.
func (it *Item) Reconvert() {
	it.Generation++
	it.State = StatePending
	it.Files = nil
	it.Shattered = nil
	it.Attempts = 0
	it.DetailedError = ""
	it.Delivery = nil
}

// Succeed ends conversion gen with its outputs. ErrStale if gen is not the
// item's generation; ErrTerminal if the conversion already ended (a
// repeated or late result).
func (it *Item) Succeed(gen int, files []File) error {
	if err := it.ending(gen); err != nil {
		return err
	}
	it.State = StateSuccess
	it.Files = slices.Clone(files)
	it.DetailedError = ""
	return nil
}

// Fail ends conversion gen in "ERROR - <reason>" with a detail for
// detailedError. Errors as for Succeed; ErrInvalid for a reason that makes
// no valid state.
func (it *Item) Fail(gen int, reason, detail string) error {
	if !Failed(reason).Valid() {
		return fmt.Errorf("%w: failure reason %q", ErrInvalid, reason)
	}
	if err := it.ending(gen); err != nil {
		return err
	}
	it.State = Failed(reason)
	it.DetailedError = detail
	return nil
}

func (it *Item) ending(gen int) error {
	switch {
	case gen != it.Generation:
		return fmt.Errorf("%w: item %s is at generation %d, the result is for %d", ErrStale, it.ID, it.Generation, gen)
	case it.State.Terminal():
		return fmt.Errorf("%w: item %s is %s", ErrTerminal, it.ID, it.State)
	}
	return nil
}

// ValidateUpdate checks an update of an item from before to after, as
// every Store does before it writes:
//   - ID, Tenant and Created stay;
//   - the state is valid;
//   - the generation stays, or goes up by one to a PENDING item
//     (Reconvert, from any state);
//   - within a generation, the state may stay; it may go from UPLOADING
//     to any state but back, from PENDING to SUCCESS or ERROR, and from
//     SUCCESS or ERROR nowhere (ErrTerminal).
func ValidateUpdate(before, after *Item) error {
	switch {
	case after.ID != before.ID:
		return fmt.Errorf("%w: item %s: the id cannot change", ErrInvalid, before.ID)
	case after.Tenant != before.Tenant:
		return fmt.Errorf("%w: item %s: the tenant cannot change", ErrInvalid, before.ID)
	case !after.Created.Equal(before.Created):
		return fmt.Errorf("%w: item %s: created cannot change", ErrInvalid, before.ID)
	case !after.State.Valid():
		return fmt.Errorf("%w: item %s: state %q", ErrInvalid, before.ID, after.State)
	case after.Generation == before.Generation+1:
		if after.State != StatePending {
			return fmt.Errorf("%w: item %s: a reconversion starts %s, not %s", ErrTransition, before.ID, StatePending, after.State)
		}
		return nil
	case after.Generation != before.Generation:
		return fmt.Errorf("%w: item %s: generation %d to %d", ErrTransition, before.ID, before.Generation, after.Generation)
	}
	from, to := before.State, after.State
	switch {
	case from == to:
		return nil
	case from.Terminal():
		return fmt.Errorf("%w: item %s is %s, not %s without a reconversion", ErrTerminal, before.ID, from, to)
	case to == StateUploading:
		return fmt.Errorf("%w: item %s: %s to %s", ErrTransition, before.ID, from, to)
	}
	return nil
}

// validateNew checks an item for Create and fills in its defaults: an id,
// UPLOADING.
func validateNew(it *Item) error {
	if it.ID == "" {
		it.ID = NewID()
	}
	if it.State == "" {
		it.State = StateUploading
	}
	if err := ValidateID(it.ID); err != nil {
		return err
	}
	if !it.State.Valid() {
		return fmt.Errorf("%w: item %s: state %q", ErrInvalid, it.ID, it.State)
	}
	if it.Generation < 0 || it.Attempts < 0 {
		return fmt.Errorf("%w: item %s: negative generation or attempts", ErrInvalid, it.ID)
	}
	return nil
}

// MaxIDLen is the longest item id.
const MaxIDLen = 128

// NewID returns a new random item id, a UUID (version 4) as the original
// server's storageIDs are.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ValidateID returns nil for a valid item id, an error wrapping ErrInvalid
// otherwise: 1 to MaxIDLen ASCII letters, digits, '-' and '_', starting
// with a letter or digit. An id is one path element of a storage key and
// part of a Redis key, and never needs quoting in either or in JSON.
func ValidateID(id string) error {
	ok := id != "" && len(id) <= MaxIDLen
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		ok = alnum || i > 0 && (c == '-' || c == '_')
	}
	if !ok {
		return fmt.Errorf("%w: id %q", ErrInvalid, truncate(id))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > MaxIDLen+10 {
		return s[:MaxIDLen+10] + "…"
	}
	return s
}

// The storage layout of items. An item's files are all below Dir(id); an
// item's files are removed with storage.DeletePrefix(Dir(id)), after the
// item's Delete (for Local on storage, that also removes the record).
const (
	// Prefix starts the keys of every item.
	Prefix = "items/"
	// metaName is the record's file in a Local store on storage.
	metaName = "item.json"
	// lastUpdatedKey keeps a Local store's LastUpdated across restarts,
	// for changes no item shows (deletes). Item ids have no dot, so no
	// item's directory can be called this.
	lastUpdatedKey = Prefix + "lastUpdated.json"
)

// Dir is the key prefix of item id's files, ending in a slash.
func Dir(id string) string { return Prefix + id + "/" }

// MetaKey is the key of item id's record in a Local store on storage.
func MetaKey(id string) string { return Dir(id) + metaName }

// OriginalKey is the key of an uploaded file of item id, by the name the
// server chose for it (Original.Stored).
func OriginalKey(id, stored string) string { return Dir(id) + "original/" + stored }

// OutputKey is the key of an output of item id (File.Name).
func OutputKey(id, name string) string { return Dir(id) + "outputs/" + name }

// ShatteredKey is the key of a shattered output of item id (File.Name in
// Item.Shattered).
func ShatteredKey(id, name string) string { return OutputKey(id, "shattered/"+name) }

// Store keeps items. Implementations are safe for concurrent use.
type Store interface {
	// Create adds an item and returns it as stored. An empty ID gets
	// NewID, an empty State UPLOADING; Created and Updated are set here.
	// ErrExists if the id is taken, ErrInvalid for a bad id or state.
	Create(ctx context.Context, it Item) (Item, error)
	// Get returns an item, or ErrNotFound.
	Get(ctx context.Context, id string) (Item, error)
	// List returns every item, oldest first.
	List(ctx context.Context) ([]Item, error)
	// Update reads the item, applies fn to a copy and writes the result,
	// atomically: concurrent updates of one item lose none. fn may be
	// called more than once (when another update came first), each time
	// with a fresh copy; an error from fn is returned as is and nothing
	// changes. The result must pass ValidateUpdate. An update that
	// changes nothing writes nothing, publishes nothing and does not move
	// LastUpdated. It returns the item as stored. ErrNotFound for an
	// unknown id.
	Update(ctx context.Context, id string, fn func(*Item) error) (Item, error)
	// UpdateFrom is Update from cur, a version of the item a Store method
	// returned: when the item is still that version, fn's change is
	// written without reading the item first (a round trip saved on
	// Redis); when it changed meanwhile, UpdateFrom reads it and goes on
	// as Update (also when fn changes nothing: cur may be old).
	UpdateFrom(ctx context.Context, cur Item, fn func(*Item) error) (Item, error)
	// Delete removes an item. ErrNotFound for an unknown id, so that the
	// API answers delete truthfully.
	Delete(ctx context.Context, id string) error
	// DeleteUnchanged removes an item only if it is still the version
	// whose Updated is updated, atomically: a compare-and-delete, for
	// deleters that judged the item by that version (retention), so that
	// a change in between (a reconversion, a result) keeps it. It
	// publishes and moves LastUpdated as Delete does. ErrChanged if the
	// item changed, ErrNotFound if it is gone (another deleter came
	// first).
	DeleteUnchanged(ctx context.Context, id string, updated time.Time) error
	// LastUpdated is the time of the last change of any item: a create,
	// an update or a delete. Each change moves it by at least a
	// millisecond, so that a client comparing its ISO form sees every
	// change. Zero for a store that never changed.
	LastUpdated(ctx context.Context) (time.Time, error)
	// Subscribe delivers an Event for every change after it returns, in
	// the order of their LastUpdated, until ctx ends or the store closes;
	// then the channel is closed. A subscriber that falls behind, or a
	// connection that broke, loses events and gets EventResync once it
	// can: refetch then.
	Subscribe(ctx context.Context) (<-chan Event, error)
	// Close ends the subscriptions and releases the store; later calls
	// fail with ErrUnavailable. Closing again returns the first result.
	Close() error
}

// EventType names an item event.
type EventType string

// Item events.
const (
	EventCreated EventType = "created"
	EventUpdated EventType = "updated"
	EventDeleted EventType = "deleted"
	// EventResync: events were lost (the subscriber fell behind, or the
	// connection to Redis broke); what the subscriber knows may be stale.
	EventResync EventType = "resync"
)

// Event is a change of an item.
type Event struct {
	Type EventType `json:"type"`
	ID   string    `json:"id,omitempty"`
	// Item is the item after the change, nil for deletes and resyncs.
	// Subscribers share it: read it, do not change it.
	Item *Item `json:"item,omitempty"`
	// LastUpdated is the store's LastUpdated after the change.
	LastUpdated time.Time `json:"lastUpdated,omitzero"`
}

// tick is the time of a change after last: now in milliseconds, or a
// millisecond after last if the clock has not passed it.
func tick(last, now time.Time) time.Time {
	t := now.UTC().Truncate(time.Millisecond)
	if !t.After(last) {
		t = last.Add(time.Millisecond)
	}
	return t
}
