// Package e2e holds drover's end-to-end tests of the instance adapters: each
// protocol (stdio, dial, stream) driven by a client through a manager, a
// farm registered with it over REST the way `drover farm` registers, and
// real instance processes.
//
// The package has no code of its own; everything is in its _test.go files.
// The instance programs are the test binary itself, re-executed by the farm
// in a child mode (see main_test.go), so the tests need nothing installed.
//
//	client ──/ws, /stream──▶ manager ──REST, /instances/:id──▶ farm server
//	                                                   │
//	                     adapter (stdio pipes, dial private port, stream relay)
//	                                                   │
//	                                              child process
//
// Run them with
//
//	go test -race ./internal/e2e/
package e2e
