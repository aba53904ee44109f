# drover's developer entry points. `make test` is what CI runs (.ci/run).

GO        ?= go
FUZZTIME  ?= 30s
# Per test binary; the slowest packages take well under a minute.
TIMEOUT   ?= 10m

GOLANGCI_LINT := $(CURDIR)/bin/golangci-lint
# The reference worker image of the docker runtime.
IMAGE     ?= drover-worker:latest

.DEFAULT_GOAL := build
.PHONY: help setup setup-lint build image up test lint bench fuzz fuzz-smoke clean

## setup: check Go, install the Debian packages the tests need, download modules
setup:
	@./scripts/setup.sh

## setup-lint: setup, plus golangci-lint in ./bin
setup-lint:
	@./scripts/setup.sh --lint

## build: build bin/drover and bin/drover-worker (the reference worker alone, which drover up prefers)
# drover-worker is static (no cgo): a farm starts one per cold session, and
# the dynamic loader cost a third of its start (12 -> 8.5 ms to ready).
build:
	$(GO) build -o bin/drover ./cmd/drover
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/drover-worker ./cmd/drover-worker

## image: build the reference worker image (IMAGE) from a static drover
image:
	@mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/drover ./cmd/drover
	docker build -t $(IMAGE) -f Dockerfile bin/image

## cluster-images: build the FROM-scratch images of the container cluster (deploy/compose.yaml)
.PHONY: cluster-images
cluster-images:
	@./scripts/cluster-images.sh

## chaos-smoke: start the container cluster and break it (a farm killed, a manager paused, a farm cut off); needs Docker, about a minute
.PHONY: chaos-smoke
chaos-smoke: cluster-images
	$(GO) test -tags chaos -race -count=1 -timeout=$(TIMEOUT) -run '^TestCluster' -v ./test/chaos/

# How long `make chaos` breaks the cluster; CHAOS_SEED replays a run's faults,
# CHAOS_SUMMARY names a file for its summary.
CHAOS_DURATION ?= 3m

## chaos: the chaos run: mixed load on the container cluster while its containers are killed, paused and cut off at random for CHAOS_DURATION (3m), then the invariants; needs Docker
.PHONY: chaos chaos-ci
chaos: cluster-images
	CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -tags chaos -count=1 -timeout=2h -run '^TestChaos$$' -v ./test/chaos/

## chaos-ci: what make test runs: a 90 s chaos run and the partition scenario (about 4 minutes with the images)
chaos-ci: cluster-images
	CHAOS_DURATION=90s $(GO) test -tags chaos -count=1 -timeout=20m -run '^(TestChaos|TestClusterFarmPartition)$$' -v ./test/chaos/

## up: run the whole system on this machine
up: setup build
	./bin/drover up

# Where the browser tests leave their screenshots (the CI artifacts).
ARTIFACTS ?= $(CURDIR)/test-artifacts

## test: run every test with the race detector (screenshots go to ARTIFACTS), then fuzz-smoke, soak-short and chaos-ci
test: setup
	DROVER_ARTIFACTS=$(ARTIFACTS) $(GO) test -race -count=1 -timeout=$(TIMEOUT) ./...
	@# Memory per idle connection, without the race detector: it caps live
	@# goroutines below the 10,000 sessions the test holds, and inflates memory.
	$(GO) test -count=1 -run '^TestIdleConnsFit$$' ./manager/
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory soak-short
	@$(MAKE) --no-print-directory chaos-ci

# How long `make soak` loads the processes it watches for leaks.
SOAK_DURATION ?= 10m

## soak: mixed load on a manager (Redis) and two farms for SOAK_DURATION (10m), sampling goroutines, memory and open files; fails on a leak (docs/reliability.md)
.PHONY: soak soak-short
soak:
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -tags soak -count=1 -timeout=2h -run '^TestSoak$$' -v ./test/soak/

## soak-short: the soak for 25 s, as make test runs it
soak-short:
	SOAK_DURATION=25s $(GO) test -tags soak -count=1 -timeout=10m -run '^TestSoak$$' -v ./test/soak/

## lint: gofmt, go vet and golangci-lint
lint: setup-lint
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

## bench: run the benchmarks
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

## load: measure drover against a direct connection to the worker (about a minute)
.PHONY: load
load: build
	./bin/drover load

## bench-report: run drover bench in full (a few minutes) and write its figures into BENCHMARKS.md and docs/bench/
.PHONY: bench-report
BENCH_FLAGS ?=
bench-report: setup build image
	@mkdir -p docs/bench
	./bin/drover bench --require --json $(BENCH_FLAGS) > docs/bench/report.json.tmp
	mv docs/bench/report.json.tmp docs/bench/report.json
	./bin/drover bench --from-json docs/bench/report.json --svg docs/bench --markdown > docs/bench/figures.md
	./scripts/bench-figures.sh BENCHMARKS.md docs/bench/figures.md

## fuzz: run each fuzz target for FUZZTIME (default 30s)
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# What CI gives each fuzz target: a count, not a duration, so that a busy
# machine makes it slower, not flaky.
SMOKETIME ?= 300x
SMOKEJOBS ?= 2

## fuzz-smoke: run each fuzz target for SMOKETIME (300 inputs after its seeds), 2 packages at a time, as CI does
fuzz-smoke:
	@GO=$(GO) FUZZTIME=$(SMOKETIME) FUZZJOBS=$(SMOKEJOBS) ./scripts/fuzz.sh

## help: list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## clean: remove build outputs (keeps the tools in ./bin)
clean:
	rm -rf bin/drover bin/image
