// Package e2e holds drover's end-to-end tests of the instance adapters and
// runtimes: each protocol (stdio, dial, stream) driven by a client through a
// manager, a farm registered with it over REST the way `drover farm`
// registers, and real instance processes; and docker pools, whose instances
// are containers of the reference worker image (docker_test.go).
//
// The package has no code of its own; everything is in its _test.go files.
// The instance programs are the test binary itself, re-executed by the farm
// in a child mode (see main_test.go), so the tests need nothing installed
// but, for the docker tests, a Docker daemon (internal/dockertest builds
// the image).
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
