// Package session owns what a session is made of: tasks, results, the error
// codes clients see, and the codec of client protocol v1 (which is also the
// native protocol between the manager and an instance).
//
// It does not place sessions, talk to farms or hold connections; the manager
// does. The codec decodes without allocating: a decoded Frame aliases the
// buffer it was read from.
package session
