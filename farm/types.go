package farm

import (
	"time"
)

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
	Protocol string    `json:"protocol,omitempty"`
	PID      int       `json:"pid,omitempty"`
	State    State     `json:"state"`
	Started  time.Time `json:"started"`
}

// Protocol names how an instance program talks; see design.md, "Instances".
const (
	ProtocolNative = "native"
	ProtocolDial   = "dial"
	ProtocolStdio  = "stdio"
	ProtocolStream = "stream"
)

// PoolSpec says how a farm starts the instances of one pool.
type PoolSpec struct {
	// Name is the pool name clients ask for with ?pool=.
	Name string `koanf:"name" json:"name"`
	// Command is the executable; Args are its arguments. Both may use the
	// template fields {{.Port}}, {{.ID}} and {{.Addr}}.
	Command string   `koanf:"command" json:"command"`
	Args    []string `koanf:"args" json:"args,omitempty"`
	// Env is added to the farm's environment as KEY=VALUE entries (templated
	// like Args). DROVER_PORT and DROVER_INSTANCE_ID are always set.
	Env []string `koanf:"env" json:"-"`
	// Dir is the working directory; empty means the farm's.
	Dir string `koanf:"dir" json:"dir,omitempty"`
	// Protocol is how the instance talks: "native" (the default).
	Protocol string `koanf:"protocol" json:"protocol"`
	// StartTimeout bounds the time from spawn to ready (default 15 s).
	StartTimeout time.Duration `koanf:"start_timeout" json:"start_timeout"`
}
