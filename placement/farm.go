package placement

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/drover-dev/drover/farmapi"
)

// Farm is placement's handle on a farm: one in the same process, or a
// remote one reached over the farm REST API (Register makes those).
// *farm.Farm implements it.
type Farm interface {
	ID() string
	Slots() int
	Pools() []string
	// StartInstance starts an instance of pool and returns once it is
	// ready. An error wrapping farmapi.ErrNoSlot is a normal outcome (the
	// holder is placed elsewhere); one wrapping ErrUnreachable makes the
	// farm suspect.
	StartInstance(ctx context.Context, pool string) (farmapi.Instance, error)
	// StopInstance stops an instance; farmapi.ErrNotFound counts as stopped.
	StopInstance(ctx context.Context, id string) error
}

// Optional Farm capabilities, found by type assertion.
type (
	// StarterWith starts instances with per-instance options (a model for
	// stream sessions).
	StarterWith interface {
		StartInstanceWith(ctx context.Context, pool string, opts farmapi.StartOptions) (farmapi.Instance, error)
	}
	// Labeled farms carry labels holders can ask for, and a priority:
	// higher farms are filled first.
	Labeled interface {
		Labels() map[string]string
		Priority() int
	}
	// Via is implemented by farms that serve instances behind their own
	// port: Header carries the farm token, Serves tells which instance URLs
	// are theirs.
	Via interface {
		Header() http.Header
		Serves(url string) bool
	}
	// Prober answers whether the farm can be reached; a suspect farm is
	// probed until it answers. Without it, only a heartbeat clears suspicion.
	Prober interface {
		Probe(ctx context.Context) error
	}
	// JobSlotter tells how many conversion jobs the farm runs at once.
	JobSlotter interface {
		JobSlots() int
	}
	// SessionFiler puts files into the session directory of an instance
	// started with StartOptions.SessionDir (a streaming session's model).
	SessionFiler interface {
		AddSessionFiles(ctx context.Context, instance string, files []farmapi.ModelFile) error
	}
	// StreamWatcher is a farm that stops a stream instance no client
	// connected to. A client relayed to the instance's own port passes
	// no part of the farm, so StreamConnected tells it (*farm.Farm has it).
	StreamWatcher interface {
		StreamConnected(instance string) error
	}
	// Connector is a farm in the manager's process that connects it to
	// the instances it adapts (stdio, dial) without a network connection:
	// an in-process one past the WebSocket handshake (*farm.Farm via
	// drover's local farm). served false: the instance is dialled at its
	// URL as usual. Used when Config.Attach is set.
	Connector interface {
		ConnectInstance(info farmapi.Instance) (conn net.Conn, served bool, err error)
	}
)

// InstanceURL is where an instance's native-protocol WebSocket is opened.
func InstanceURL(info farmapi.Instance) string {
	if info.URL != "" {
		return info.URL
	}
	return "ws://" + info.Addr + "/"
}

// farmHeader is sent when connecting to an instance through its farm's
// port: it carries the farm token, which the farm strips. Never to an
// instance reached directly (a farm advertising direct ports): it must
// not see the token.
func farmHeader(f Farm, info farmapi.Instance) http.Header {
	if v, ok := f.(Via); ok && info.URL != "" && v.Serves(info.URL) {
		return v.Header()
	}
	return nil
}

type farmEntry struct {
	f     Farm
	id    string
	slots int
	used  int // slots this manager reserved: instances alive or starting
	// others are the slots other managers hold, as the store last said;
	// a Reserve refused as full raises it until the next look.
	others   int
	owner    string // the store's Owner: set for a farm in a manager's process
	spec     []byte // the registration, as stored, for remote farms
	name     string
	url      string
	jobSlots int
	pools    map[string]bool
	labels   map[string]string
	priority int
	draining bool
	added    time.Time
	// remote farms send heartbeats; local ones are alive while added.
	remote   bool
	lastSeen time.Time
	// suspect: a start found the farm unreachable at suspectAt; it gets no
	// placements until it answers (a heartbeat or a probe).
	suspect   bool
	suspectAt time.Time
	probing   bool
	// fullUntil: the farm said it has no free slot although the books
	// said it had; it gets no placements until then, or its next heartbeat.
	fullUntil time.Time
	// ctx ends when the farm leaves the books: starts on it give up.
	ctx    context.Context
	cancel context.CancelFunc
}

func (fe *farmEntry) free() int { return fe.slots - fe.used - fe.others }

// takes reports whether the farm takes placements now.
func (fe *farmEntry) takes(now time.Time) bool {
	return !fe.draining && !fe.suspect && !now.Before(fe.fullUntil)
}

// matches reports whether the farm has every label asked for.
func (fe *farmEntry) matches(want map[string]string) bool {
	for k, v := range want {
		if fe.labels[k] != v {
			return false
		}
	}
	return true
}

// mayBeSuspect: only a farm that can be heard from again (heartbeats, or
// a probe) is ever suspect; an in-process farm without a probe would
// stay suspect for ever.
func (fe *farmEntry) mayBeSuspect() bool {
	_, probes := fe.f.(Prober)
	return fe.remote || probes
}

func newFarmEntry(f Farm, remote bool, owner string, spec []byte, now time.Time) *farmEntry {
	fe := &farmEntry{f: f, id: f.ID(), slots: f.Slots(), pools: map[string]bool{}, added: now,
		remote: remote, lastSeen: now, owner: owner, spec: spec}
	for _, p := range f.Pools() {
		fe.pools[p] = true
	}
	if l, ok := f.(Labeled); ok {
		fe.labels, fe.priority = l.Labels(), l.Priority()
	}
	if j, ok := f.(JobSlotter); ok {
		fe.jobSlots = j.JobSlots()
	}
	if r, ok := f.(*remoteFarm); ok {
		fe.name, fe.url = r.req.Name, r.req.URL
	}
	fe.ctx, fe.cancel = context.WithCancel(context.Background())
	return fe
}
