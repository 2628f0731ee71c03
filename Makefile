# memsync: `make run` serves on 127.0.0.1:8080 with an embedded Redis
# whose data is kept in DATA_FILE across restarts (`make run DATA_FILE=`
# keeps nothing; with REDIS_URL set, that Redis is used and keeps the data);
# `make test` runs every test with the race detector.
GO ?= go
DATA_FILE ?= memsync.data

.PHONY: run build test lint bench bench-load fuzz

run:
	$(GO) run ./cmd/server $(if $(REDIS_URL),,$(if $(DATA_FILE),--data-file $(DATA_FILE)))

build:
	$(GO) build -o bin/memsync ./cmd/server
	$(GO) build -o bin/memsync-mcp ./cmd/mcp

test:
	$(GO) test -race -count=1 -timeout 12m ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# Go micro-benchmarks (clock, resolution, envelope, locks), then the load
# benchmark. Nothing else should run meanwhile; no -race.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...
	$(GO) run ./cmd/bench

# The load benchmark alone: memsync against baselines in the same run, as
# ratios (BENCH.md). Needs redis-server; uses wrk when installed. Pass flags
# with BENCHFLAGS, e.g. make bench-load BENCHFLAGS='-only naive-set,memsync-put'.
bench-load:
	$(GO) run ./cmd/bench $(BENCHFLAGS)

# Every fuzz target, FUZZTIME each (go test fuzzes one target at a time).
# A failing input lands in the package's testdata/fuzz: commit it, and
# `make test` runs it from then on.
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list='^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$target"; \
			$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done
