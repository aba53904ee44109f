// Package farm owns the farm agent's runtimes: it starts instance processes in
// a fixed number of slots, waits until they are ready, supervises them, stops
// them, and reports instances that exit on their own.
//
// The process runtime (Farm) starts each instance in its own process group
// with a parent-death signal, so stopping an instance takes its whole process
// tree with it, and a farm that is SIGKILLed leaves no instance behind.
//
// The package does not place sessions, route tasks or talk to the manager:
// the manager asks a Farm to start and stop instances and learns about crashes
// through Config.OnExit.
package farm
