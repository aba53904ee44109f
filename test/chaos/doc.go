// Package chaos holds the tests that break a cluster of containers on
// purpose (internal/testkit/clustertest). They need Docker and the images of
// `make cluster-images`, take a minute or more, and run only when
// DROVER_CLUSTER=1 (`make chaos-smoke`); `make test` skips them.
package chaos
