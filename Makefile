# shoal — every target runs over every module listed in go.work.
SHELL := /bin/bash
MODULES := $(shell sed -n 's|^[[:space:]]*\./\(.*\)$$|\1|p' go.work)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# go-nvml's cgo prologue calls functions that CUDA 13 deprecates; they are not shoal's to fix.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
BIN := bin
TEST_FLAGS ?= -race -count=1 -timeout 10m
OUT ?= out/function_minimization
SEARCH_EVALS ?= 300
SEARCH_SEEDS ?= 5

.DEFAULT_GOAL := help

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

build: ## build bin/shoal and one binary per service
	@mkdir -p $(BIN)
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/shoal ./cmd/shoal
	@for s in planner generator evaluator archive; do \
		go build -ldflags "$(LDFLAGS)" -o $(BIN)/$$s ./services/$$s/cmd/$$s || exit 1; done
	go build -o $(BIN)/standin ./deploy/standin/cmd/standin

run: build ## evolve examples/function_minimization with the mutate backend; best program lands in $(OUT)
	$(BIN)/shoal up --fresh --output $(OUT)

test: lint ## gofmt, go vet and every test with the race detector, in every module
	@for m in $(MODULES); do echo "== test $$m"; (cd $$m && go test $(TEST_FLAGS) ./...) || exit 1; done

lint: ## gofmt and go vet over every module
	@bad=$$(gofmt -l $(MODULES)); if [ -n "$$bad" ]; then echo "not gofmt-clean:"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done

bench: ## every benchmark in every module (figures in docs/benchmarks.md)
	@for m in $(MODULES); do (cd $$m && set -o pipefail && go test -run '^$$' -bench . -benchmem $(BENCH_FLAGS) ./... | { grep -E '^(Benchmark|pkg:)' || true; }) || exit 1; done
	@echo "== GPU placement: replicas placed / VRAM leased (GiB) per strategy"
	@cd pkg && go run ./gpu/internal/placebench

bench-pipeline: build ## pipeline cost per candidate against raw JetStream, evaluations/s end to end, model-server saturation (docs/benchmarks.md)
	go run ./bench/pipeline -shoal $(BIN)/shoal $(PIPELINE_FLAGS)

bench-search: ## search quality: evolution vs random search, mean best score over seeds; table, and the plot in docs/bench-search.svg
	go run ./bench/search -evals $(SEARCH_EVALS) -seeds $(SEARCH_SEEDS) -plot docs/bench-search.svg

chaos: build ## crash test: kill service replicas ≥ 50 times during a run, then check nothing was lost or counted twice (docs/reliability.md)
	cd pkg && go build -o ../$(BIN)/nats-server github.com/nats-io/nats-server/v2
	go run ./chaos -bin $(BIN) $(CHAOS_FLAGS)

tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

clean: ## remove build output and local run state
	rm -rf $(BIN) out .shoal

.PHONY: help build run test lint bench bench-pipeline bench-search chaos tidy clean
