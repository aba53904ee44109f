package farm

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
const (
	PathFarms     = "/api/v1/farms"
	PathInstances = "/api/v1/instances"
	PathStatus    = "/api/v1/status"
	PathInstance  = "/instances/" // + id
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
}

// RegisterResponse tells the farm how often to send heartbeats.
type RegisterResponse struct {
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
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
	Pool  string `json:"pool"`
	Model string `json:"model,omitempty"`
}

// StartOptions are per-instance start parameters.
type StartOptions struct {
	// Model names a model directory under the farm's models directory; the
	// instance's templates see it as {{.Model}} and {{.ModelDirs}}.
	Model string
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
}
