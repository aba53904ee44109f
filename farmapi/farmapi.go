// Package farmapi is the wire protocol between farms and managers: the
// paths of the farm REST API, the bodies of register, heartbeat, start,
// stop and status calls, the instance report, and the errors a farm
// answers with, mapped to and from HTTP status codes.
//
// It holds types and constants only, so that the manager can speak to
// farms without importing the farm agent (and its container runtime), and
// a farm written in another program can speak to a manager. Job leases
// will be added here.
package farmapi

import (
	"errors"
	"net/http"
	"time"
)

// Errors a farm answers with. Over HTTP each has its own status code
// (Status and Error map between the two), so a manager sees the same
// sentinel from a remote farm as from one in its own process.
var (
	// ErrNoSlot means every slot of the farm holds an instance: a normal
	// placement outcome (try another farm, or queue), never a client error.
	ErrNoSlot = errors.New("farm: no free slot")
	// ErrUnknownPool means the farm has no pool of that name.
	ErrUnknownPool = errors.New("farm: unknown pool")
	// ErrNotFound means the farm has no live instance of that id. Callers
	// stopping an instance treat it as success.
	ErrNotFound = errors.New("farm: instance not found")
	// ErrClosed means the farm is closed and starts no more instances.
	ErrClosed = errors.New("farm: closed")
	// ErrStartTimeout means an instance did not become ready within its
	// pool's StartTimeout.
	ErrStartTimeout = errors.New("farm: instance not ready within start timeout")
	// ErrDraining means the farm is draining and starts no more instances.
	ErrDraining = errors.New("farm: draining")
	// ErrBadModel means a start named a model the farm refuses (one that
	// would leave its models directory).
	ErrBadModel = errors.New("farm: bad model")
	// ErrNoSessionDir means files were sent to an instance that was not
	// started with a session directory (StartOptions.SessionDir).
	ErrNoSessionDir = errors.New("farm: the instance has no session directory")
	// ErrModelFetch means the farm could not fetch a file of a session's
	// model from the managers.
	ErrModelFetch = errors.New("farm: model file fetch failed")
)

// Status is the HTTP status a farm answers err with.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrUnknownPool), errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadModel):
		return http.StatusBadRequest
	case errors.Is(err, ErrNoSessionDir):
		return http.StatusConflict
	case errors.Is(err, ErrModelFetch):
		return http.StatusBadGateway
	case errors.Is(err, ErrNoSlot):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrDraining), errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrStartTimeout):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// StartError is the sentinel a start answered with code stands for, or
// nil when the code names none. A 503 is ErrDraining (a closed farm
// starts nothing either).
func StartError(code int) error {
	switch code {
	case http.StatusNotFound:
		return ErrUnknownPool
	case http.StatusBadRequest:
		return ErrBadModel
	case http.StatusTooManyRequests:
		return ErrNoSlot
	case http.StatusServiceUnavailable:
		return ErrDraining
	case http.StatusGatewayTimeout:
		return ErrStartTimeout
	}
	return nil
}

// State is where an instance is in its life.
type State string

// Instance states as a farm reports them. The manager adds its own notion of
// idle and bound on top of StateReady.
const (
	StateStarting State = "starting"
	StateReady    State = "ready"
	StateStopping State = "stopping"
	StateExited   State = "exited"
)

// Instance is a farm's report of one instance.
type Instance struct {
	ID   string `json:"id"`
	Pool string `json:"pool"`
	Farm string `json:"farm"`
	Addr string `json:"addr"` // host:port where the instance speaks the native protocol
	// URL is where the manager opens the instance's native-protocol
	// WebSocket when it is not ws://Addr/ (a farm serving its instances
	// behind its own port sets ws://farm/instances/ID).
	URL string `json:"url,omitempty"`
	// Protocol is the pool's protocol; stream instances are relayed byte
	// for byte instead of spoken to.
	Protocol string `json:"protocol,omitempty"`
	// PID is the instance process's id on the farm's host; 0 for a
	// container.
	PID int `json:"pid,omitempty"`
	// Container is the short id of the instance's Docker container; empty
	// for a process.
	Container string    `json:"container,omitempty"`
	State     State     `json:"state"`
	Started   time.Time `json:"started"`
}

// Protocol names how an instance program talks: native (it speaks the
// manager's protocol itself), dial (ClassCAD style: it connects back to the
// farm), stdio (websocketd style) or stream (SC-server style, relayed byte
// for byte). README.md ("Instance programs") and docs/protocol.md describe
// each.
const (
	ProtocolNative = "native"
	ProtocolDial   = "dial"
	ProtocolStdio  = "stdio"
	ProtocolStream = "stream"
)

// The REST API between farms and managers. Both directions authenticate
// with "Authorization: Bearer <farm token>", compared in constant time.
//
// Farm → manager:
//
//	POST   /api/v1/farms                 RegisterRequest → RegisterResponse
//	POST   /api/v1/farms/:id/heartbeat   Heartbeat → HeartbeatResponse (404: register again)
//	DELETE /api/v1/farms/:id             deregister after a clean stop
//
// Manager → farm:
//
//	POST   /api/v1/instances             StartRequest → Instance (ready)
//	DELETE /api/v1/instances/:id         stop (404: not there, counts as stopped)
//	GET    /api/v1/status                FarmStatus
//	GET    /instances/:id                the instance's native-protocol WebSocket
//	PUT    /api/v1/instances/:id/files   AddFilesRequest → 204: files into the
//	                                     instance's session directory
//	POST   /api/v1/instances/:id/connected  204: a client is relayed to the
//	                                     stream instance's own port (a farm
//	                                     advertising direct ports cannot see it)
//
// Farm → manager, for those files:
//
//	GET    /api/v1/items/:id/files/:name an item's output file (ModelFile.Source)
const (
	PathFarms     = "/api/v1/farms"
	PathInstances = "/api/v1/instances"
	PathStatus    = "/api/v1/status"
	PathInstance  = "/instances/" // + id
	PathItems     = "/api/v1/items"
	// PathFiles and PathConnected follow PathInstances/:id.
	PathFiles     = "/files"
	PathConnected = "/connected"
)

// RegisterRequest is what a farm tells a manager when it joins.
type RegisterRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// URL is the farm's base URL as the manager must reach it (http://host:port).
	URL      string            `json:"url"`
	Labels   map[string]string `json:"labels,omitempty"`
	Priority int               `json:"priority,omitempty"`
	Slots    int               `json:"slots"`
	JobSlots int               `json:"job_slots,omitempty"`
	Pools    []string          `json:"pools"`
	// Instances are those still running from before a re-registration.
	Instances []Instance `json:"instances,omitempty"`
	// Managers is how many managers the farm registers with (0: it does
	// not say). A manager whose store is private (store.Private) and that
	// is a farm's only one knows that the instances it listed which the
	// store has no record of were placed by that manager before it
	// restarted, and asks the farm to stop them (RegisterResponse.Stop).
	Managers int `json:"managers,omitempty"`
}

// RegisterResponse tells the farm how often to send heartbeats, and which
// of the instances it listed the managers have given up on (their farm
// was declared dead meanwhile, their sessions told instance_lost): the
// farm stops those at once, so their slots are free when the manager
// counts them free.
type RegisterResponse struct {
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	// Stop names instances of RegisterRequest.Instances. A farm registered
	// with several managers that do not share state hears from each about
	// its own: a manager names only instances it placed, never one it does
	// not know. A farm's only manager, restarted with a private store,
	// names every instance it has no record of (RegisterRequest.Managers).
	// The farm marks them stopping before it sends its next heartbeat,
	// which reports their slots as used until they are gone, and beats
	// again as soon as they are; ids it does not have are ignored.
	Stop []string `json:"stop,omitempty"`
}

// Heartbeat is a farm's periodic report.
type Heartbeat struct {
	Free      int        `json:"free"`
	Draining  bool       `json:"draining"`
	Instances []Instance `json:"instances"`
}

// HeartbeatResponse carries the manager's wishes back to the farm.
type HeartbeatResponse struct {
	// Drain asks the farm to take no new instances and exit once its
	// sessions have ended.
	Drain bool `json:"drain"`
}

// StartRequest asks a farm for a ready instance of Pool.
type StartRequest struct {
	Pool       string `json:"pool"`
	Model      string `json:"model,omitempty"`
	SessionDir bool   `json:"session_dir,omitempty"`
	Warm       bool   `json:"warm,omitempty"` // StartOptions.Warm
}

// StartOptions are per-instance start parameters.
type StartOptions struct {
	// Model names a model directory under the farm's models directory; the
	// instance's templates see it as {{.Model}} and {{.ModelDirs}}.
	Model string
	// SessionDir gives the instance a fresh, empty directory of its own as
	// {{.ModelDirs}} (a streaming session's model directory), which the
	// farm fills with AddFilesRequest and removes when the instance exits.
	// It excludes Model.
	SessionDir bool
	// Warm marks a start ahead of demand, for a manager's warm pool: no
	// client is due until the manager hands the instance out, so the farm
	// does not kill an unused stream instance (InitialUse) that was started
	// warm. It does not tell instances apart: a holder that asks for no
	// options takes a warm instance, and Warm is not kept with it.
	Warm bool
}

// ModelFile is one file a farm puts into a stream instance's session
// directory: an output of a conversion item, fetched from the managers
// (GET PathItems/Item/files/Source, or URL).
type ModelFile struct {
	// Name is the file's name in the directory: one path element.
	Name string `json:"name"`
	// Item is the conversion item's id; Source the name of its output.
	Item   string `json:"item"`
	Source string `json:"source"`
	Size   int64  `json:"size"`
	// Version changes whenever the item's file does (a reconversion), so
	// that a farm's cache never serves a stale copy.
	Version string `json:"version"`
	// URL, when set, is where the farm downloads the file without the
	// farm token (a presigned URL of object storage).
	URL string `json:"url,omitempty"`
}

// AddFilesRequest asks a farm to put files into an instance's session
// directory, read-only. A file of the same name is replaced.
type AddFilesRequest struct {
	Files []ModelFile `json:"files"`
}

// FarmStatus is a farm's own view, served at PathStatus.
type FarmStatus struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Slots     int        `json:"slots"`
	Free      int        `json:"free"`
	Draining  bool       `json:"draining"`
	Pools     []string   `json:"pools"`
	Instances []Instance `json:"instances"`
	// Cache is the farm's model cache; absent without one.
	Cache *CacheStatus `json:"cache,omitempty"`
}

// CacheStatus is a farm's model cache in its status: its cap and use in
// bytes, its entries (Pinned: held by a job or session now), and its
// counts since the farm started. A hit is a file served without a
// download; Uncached counts misses whose file could not be kept (larger
// than the cap, or no room beside the entries in use).
type CacheStatus struct {
	MaxBytes  int64  `json:"max_bytes"`
	UsedBytes int64  `json:"used_bytes"`
	Entries   int    `json:"entries"`
	Pinned    int    `json:"pinned"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	Uncached  uint64 `json:"uncached"`
}
