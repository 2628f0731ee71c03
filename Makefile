# memsync: `make run` serves on 127.0.0.1:8080 with an embedded Redis;
# `make test` runs every test with the race detector.
GO ?= go

.PHONY: run build test lint bench fuzz

run:
	$(GO) run ./cmd/server

build:
	$(GO) build -o bin/memsync ./cmd/server

test:
	$(GO) test -race -count=1 -timeout 12m ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# Go micro-benchmarks (clock, resolution, envelope, locks). Nothing else
# should run meanwhile; no -race.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzMerge -fuzztime=30s ./internal/clock/
