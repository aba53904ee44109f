// Package soak holds the soak test of drover (soak_test.go, built only with
// the soak tag: `make soak`, SOAK_DURATION long, 10 minutes by default;
// `make soak-short` for CI): a manager on Redis and two farms, real
// processes on loopback, under a mixed load of WebSocket sessions (tasks,
// resumes, logouts, sessions abandoned to expire), REST sessions and
// conversion jobs with assimp. It samples the goroutines, heap, RSS and
// open files of each process and fails on a leak (Analyze) or on any
// failed operation.
package soak
