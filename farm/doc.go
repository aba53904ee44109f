// Package farm owns the farm agent's runtimes: it starts instances in a fixed
// number of slots, waits until they are ready, supervises them, stops them,
// and reports instances that exit on their own.
//
// A Farm runs each pool's instances in one of two runtimes behind the same
// API (runtime.go): the process runtime (process.go) starts each instance in
// its own process group with a parent-death signal, so stopping an instance
// takes its whole process tree with it, and a farm that is SIGKILLed leaves
// no instance behind; the docker runtime (docker.go) runs each instance in a
// container of the pool's image, labelled with the farm's id and hardened
// by default (no capabilities, no-new-privileges, a pids limit), and removes
// the labelled containers it does not track when it starts and on a timer,
// so a restarted farm removes what a killed one left.
//
// A farm on another machine than its managers adds three parts: Server, the
// HTTP API managers call (server.go; the bodies are package farmapi's) and
// the relay of the instances' WebSockets through the farm's port; Agent,
// which registers the farm with its managers, sends heartbeats and drains
// it; and the state file (leftovers.go), with which a restarted farm kills
// the instance processes its previous run left behind.
//
// The manager speaks one protocol to every instance, the native one. The
// farm adapts instances that speak another (adapter*.go): dial instances
// (ClassCAD style) connect back to a private port, handshake and take tasks
// as frames of commands; stdio programs (websocketd style) take tasks on
// stdin and answer on stdout; stream instances (HOOPS SC-server style) are
// relayed byte for byte and watched through liveliness reports. Endpoint
// says how the farm's server reaches each instance; Connect hands a manager
// in the farm's own process an in-process connection to an adapted
// instance instead. Starts may name a model directory (StartOptions.Model),
// and a pool's binaries may come as a ZIP archive unpacked once (zip.go).
//
// The package does not place sessions or route tasks: a manager asks a Farm
// to start and stop instances, in process or over the API, and learns about
// crashes through Config.OnExit or the connection to the instance.
package farm
