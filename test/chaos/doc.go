// Package chaos holds the tests that break a cluster of containers on
// purpose (internal/testkit/clustertest). They need Docker and the images of
// `make cluster-images`, and are built only with the chaos tag:
//
//   - TestChaos is the chaos run (`make chaos`, CHAOS_DURATION): a mixed load
//     of WebSocket sessions, REST sessions and conversion jobs while
//     containers are killed, paused and cut off at random, then named
//     invariant checks and a summary;
//   - the TestCluster scenarios (`make chaos-smoke`) each break one thing and
//     measure what clients see: a farm killed, a manager paused, a farm cut
//     off under a session and a conversion.
//
// `make test` runs 90 s of TestChaos and the partition scenario
// (`make chaos-ci`).
package chaos
