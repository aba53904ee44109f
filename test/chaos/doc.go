// Package chaos holds the tests that break a cluster of containers on
// purpose (internal/testkit/clustertest). They need Docker and the images of
// `make cluster-images`, take a minute or more, and are built only with the
// chaos tag (`make chaos-smoke`): `make test` does not compile them.
package chaos
