package farm

import (
	"time"
)

// PoolSpec says how a farm starts the instances of one pool.
type PoolSpec struct {
	// Name is the pool name clients ask for with ?pool=.
	Name string `koanf:"name" json:"name"`
	// Command is the executable; Args are its arguments. In a docker pool
	// Command replaces the image's entrypoint and Args its command, and
	// both may be empty: the image's own then run. Both may use the
	// template fields:
	//
	//	{{.ID}}           the instance id
	//	{{.Port}}         its port (0 for dial and stdio instances)
	//	{{.Addr}}         host:port (empty for dial and stdio instances)
	//	{{.Host}}         the farm's instance host
	//	{{.Pool}}         the pool name
	//	{{.PrivatePort}}  the farm's private port dial instances connect to
	//	{{.Model}}        the model the start asked for (StartOptions.Model)
	//	{{.ModelDirs}}    that model's directory; the models directory
	//	                  itself when the start named no model
	//	{{.Binaries}}     where Binaries was unpacked
	//
	// In a docker pool, {{.Port}} is the port inside the container
	// (ContainerPort), {{.Host}} is 0.0.0.0 and {{.Addr}} 0.0.0.0:{{.Port}},
	// where the program should listen, and {{.ModelDirs}} is the path
	// inside the container where the model's directory (or the models
	// directory) is mounted read-only: /models/<model> (or /models).
	Command string   `koanf:"command" json:"command"`
	Args    []string `koanf:"args" json:"args,omitempty"`
	// Env is added to the farm's environment as KEY=VALUE entries (templated
	// like Args). DROVER_INSTANCE_ID is always set, DROVER_PORT for
	// instances with a port. A container gets Env, DROVER_INSTANCE_ID and
	// DROVER_PORT (and its image's environment), never the farm's.
	Env []string `koanf:"env" json:"-"`
	// Dir is the working directory; empty means the farm's (or, with
	// Binaries, the unpacked directory, which a relative Dir is taken
	// relative to as well).
	Dir string `koanf:"dir" json:"dir,omitempty"`
	// Protocol is how the instance talks: "native" (the default), "dial",
	// "stdio" or "stream". README.md ("Instance programs") and
	// docs/protocol.md describe them; the adapter_*.go files implement them.
	Protocol string `koanf:"protocol" json:"protocol"`
	// StartTimeout bounds the time from spawn to ready (default 15 s); for
	// dial pools it bounds each spawn attempt.
	StartTimeout time.Duration `koanf:"start_timeout" json:"start_timeout"`

	// Binaries is a ZIP archive the farm unpacks once, when it starts, into
	// a directory under its state directory (or a temporary one); a
	// relative Command is then taken relative to that directory. Entries
	// that would land outside it, symbolic links and special files fail the
	// farm's start.
	Binaries string `koanf:"binaries" json:"binaries,omitempty"`

	// Delimiter (stdio): a stdout line equal to it ends the task. Without
	// one, a task ends after IdleGap without output.
	Delimiter string `koanf:"delimiter" json:"delimiter,omitempty"`
	// IdleGap (stdio, no Delimiter): the quiet time that ends a task,
	// counted from the task's input or its last output line (default
	// 100 ms).
	IdleGap time.Duration `koanf:"idle_gap" json:"idle_gap,omitempty"`

	// SpawnRetries (dial): how often a spawn that did not handshake within
	// StartTimeout, or whose process exited first, is tried again with a
	// fresh process (default 3; negative: never).
	SpawnRetries int `koanf:"spawn_retries" json:"spawn_retries,omitempty"`
	// SpawnBackoff (dial): the pause between spawn attempts (default 2 s).
	SpawnBackoff time.Duration `koanf:"spawn_backoff" json:"spawn_backoff,omitempty"`

	// Readiness (stream): "probe" (default), ready once the port accepts
	// connections, or "liveliness", ready at the instance's ready report.
	Readiness string `koanf:"readiness" json:"readiness,omitempty"`
	// Liveliness (stream): the interval of the instance's liveliness
	// pings; the farm kills an instance silent for three intervals
	// (default 10 s).
	Liveliness time.Duration `koanf:"liveliness" json:"liveliness,omitempty"`
	// InitialUse (stream): the farm kills an instance no client connected
	// to within this time of its ready (default 60 s).
	InitialUse time.Duration `koanf:"initial_use" json:"initial_use,omitempty"`

	// Runtime is where instances run: "process" (the default), a process
	// group on the farm's host, or "docker", a container per instance
	// (docker.go). Docker pools speak the native or the stream protocol;
	// dial and stdio pools and Binaries need the process runtime.
	Runtime string `koanf:"runtime" json:"runtime,omitempty"`
	// Image (docker) is the image every instance's container runs.
	Image string `koanf:"image" json:"image,omitempty"`
	// Pull (docker) says when the farm pulls Image: "never" (the default:
	// a missing image fails the farm's start), "missing" (when the Docker
	// host does not have it) or "always" (at every start of the farm).
	Pull string `koanf:"pull" json:"pull,omitempty"`
	// Network (docker): empty puts containers on Docker's default bridge
	// and publishes ContainerPort on the farm's instance host at the
	// instance's port; a network name (a user-defined bridge network, or
	// "bridge") attaches them to it without publishing, and the instance
	// is reached at its container's address there, which the farm must be
	// able to route to.
	Network string `koanf:"network" json:"network,omitempty"`
	// Memory (docker) caps a container's memory, swap included: "512m",
	// "2g" or a number of bytes. Empty: no limit.
	Memory string `koanf:"memory" json:"memory,omitempty"`
	// CPUs (docker) caps a container's CPU time, in CPUs ("0.5": half of
	// one). 0: no limit.
	CPUs float64 `koanf:"cpus" json:"cpus,omitempty"`
	// ReadOnly (docker) mounts a container's root filesystem read-only.
	ReadOnly bool `koanf:"read_only" json:"read_only,omitempty"`
	// Volumes (docker) are mounted into every container, in docker run -v
	// form: "/host/dir:/in/container[:ro]" or "volume-name:/in/container".
	// The model a start names is mounted on its own; see Command.
	Volumes []string `koanf:"volumes" json:"volumes,omitempty"`
	// ContainerPort (docker) is the port the program listens on inside its
	// container, for images with a fixed port; 0 means the instance's
	// port, which the program learns from DROVER_PORT or {{.Port}}.
	ContainerPort int `koanf:"container_port" json:"container_port,omitempty"`
	// CapAdd (docker) gives capabilities back to the pool's containers
	// ("NET_BIND_SERVICE" or "CAP_NET_BIND_SERVICE"). Containers start with
	// every capability dropped and with no-new-privileges set: a program
	// that needs more says so here.
	CapAdd []string `koanf:"cap_add" json:"cap_add,omitempty"`
	// PidsLimit (docker) caps the processes and threads of a container,
	// so a runaway program cannot exhaust the farm's host. 0 means the
	// default, DefaultPidsLimit; -1 means no limit.
	PidsLimit int64 `koanf:"pids_limit" json:"pids_limit,omitempty"`
}

// DefaultPidsLimit is a docker pool's cap on the processes and threads of
// each container when the pool sets none: far above what a CAD kernel or a
// streaming server runs, far below what would starve the host.
const DefaultPidsLimit = 4096
