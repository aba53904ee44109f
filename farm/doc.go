// Package farm owns the farm agent's runtimes: it starts instance processes in
// a fixed number of slots, waits until they are ready, supervises them, stops
// them, and reports instances that exit on their own.
//
// The process runtime (Farm) starts each instance in its own process group
// with a parent-death signal, so stopping an instance takes its whole process
// tree with it, and a farm that is SIGKILLed leaves no instance behind.
//
// A farm on another machine than its managers adds three parts: Server, the
// HTTP API managers call (api.go) and the relay of the instances' WebSockets
// through the farm's port; Agent, which registers the farm with its managers,
// sends heartbeats and drains it; and the state file (leftovers.go), with
// which a restarted farm kills what its previous run left behind.
//
// The package does not place sessions or route tasks: a manager asks a Farm
// to start and stop instances, in process or over the API, and learns about
// crashes through Config.OnExit or the connection to the instance.
package farm
