# shoal — every target runs over every module listed in go.work.
SHELL := /bin/bash
MODULES := $(shell sed -n 's|^[[:space:]]*\./\(.*\)$$|\1|p' go.work)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# go-nvml's cgo prologue calls NVML functions that CUDA 13's nvml.h marks deprecated, which
# prints ~150 lines of gcc warnings whenever go-nvml is compiled. A #cgo directive cannot be
# added to a third-party package, and nvml.h has no macro that turns the attribute off, so
# the flag goes into CGO_CFLAGS for every go command make runs (build, test, vet, images),
# added to whatever CGO_CFLAGS the user has (`go env`: -O2 -g by default) rather than
# replacing it. CGO_CFLAGS is part of the build cache key of every cgo package: export the
# same value to share make's cache from a shell (docs/dependencies.md).
export CGO_CFLAGS := $(filter-out -Wno-deprecated-declarations,$(shell go env CGO_CFLAGS)) -Wno-deprecated-declarations
BIN := bin
TEST_FLAGS ?= -race -count=1 -timeout 10m
OUT ?= out/function_minimization
SEARCH_EVALS ?= 300
SEARCH_SEEDS ?= 5
# bench-search-model: the openai backend against the perturb stand-in next to the mutate
# backend, on the polynomial fit with issue 16's database (3 islands, population 200,
# migration every 20). SEARCH_METHODS picks the methods (evolution, standin, random).
SEARCH_MODEL_EVALS ?= 3000
SEARCH_MODEL_SEEDS ?= 3
SEARCH_METHODS ?= evolution,standin
SEARCH_CONCURRENCY ?= 4
SEARCH_MODEL_PLOT ?= docs/bench-search-model.svg
# bench-search-bandit and bench-search-novelty: issue 16's model choice and novelty rejection on
# the same problem and database (docs/benchmarks.md).
SEARCH_BANDIT_EVALS ?= 1000
SEARCH_BANDIT_SEEDS ?= 3
SEARCH_NOVELTY_EVALS ?= 1000
SEARCH_NOVELTY_SEEDS ?= 3
SEARCH_ISSUE16_DB := -islands 3 -population 200 -migration-interval 20

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
	@cd pkg && go run ./gpu/placement/internal/placebench

bench-pipeline: build ## pipeline cost per candidate against raw JetStream, evaluations/s end to end, model-server saturation (docs/benchmarks.md)
	go run ./bench/pipeline -shoal $(BIN)/shoal $(PIPELINE_FLAGS)

bench-search: ## search quality: evolution vs random search, mean best score over seeds; table, and the plot in docs/bench-search.svg
	go run ./bench/search -evals $(SEARCH_EVALS) -seeds $(SEARCH_SEEDS) -plot docs/bench-search.svg

bench-search-model: ## search with a model: openai backend vs the perturb stand-in next to mutate, issue 16's config; table, and the plot in docs/bench-search-model.svg (SEARCH_MODEL_EVALS, SEARCH_MODEL_SEEDS, SEARCH_METHODS, SEARCH_CONCURRENCY, SEARCH_MODEL_PLOT)
	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods $(SEARCH_METHODS) \
		-evals $(SEARCH_MODEL_EVALS) -seeds $(SEARCH_MODEL_SEEDS) -checkpoints 1000,3000,10000 \
		-islands 3 -population 200 -migration-interval 20 -concurrency $(SEARCH_CONCURRENCY) -diagnose \
		-plot $(SEARCH_MODEL_PLOT)

bench-search-bandit: ## model choice: a useful and a noise stand-in of equal weight, llm.model_selection weights vs bandit; best score and each model's share of evaluations (SEARCH_BANDIT_EVALS, SEARCH_BANDIT_SEEDS)
	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods weights,bandit \
		-evals $(SEARCH_BANDIT_EVALS) -seeds $(SEARCH_BANDIT_SEEDS) -checkpoints 250,500,1000,2000,3000,5000 \
		$(SEARCH_ISSUE16_DB) -concurrency 4

bench-search-novelty: ## novelty rejection: the perturb stand-in writing 2 significant digits, with and without database.novelty_threshold 1; evaluations saved, best score at equal evaluations (SEARCH_NOVELTY_EVALS, SEARCH_NOVELTY_SEEDS)
	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods standin,novelty -standin-digits 2 \
		-evals $(SEARCH_NOVELTY_EVALS) -seeds $(SEARCH_NOVELTY_SEEDS) -checkpoints 250,500,1000,2000,3000,5000 \
		$(SEARCH_ISSUE16_DB) -concurrency 4 -diagnose

chaos: build ## crash test: kill service replicas ≥ 50 times during a run, then check nothing was lost or counted twice (docs/reliability.md)
	cd pkg && go build -o ../$(BIN)/nats-server github.com/nats-io/nats-server/v2
	go run ./chaos -bin $(BIN) $(CHAOS_FLAGS)

# Docker images and the compose deployment (compose.yaml). Images build offline: base images
# come from debootstrap (deploy/base-images.sh) and Go binaries are compiled here.
IMAGE_TAG ?= latest
BASE_IMAGE ?= shoal/debian:bookworm
PYTHON_BASE_IMAGE ?= shoal/debian-python:bookworm
IMAGE_BIN := deploy/.cache/bin
COMPOSE ?= docker compose
# docker buildx, pinned: Debian's Docker CLI ships without it, and its legacy builder prints a
# deprecation notice on every build.
BUILDX_VERSION := v0.38.2
COMPOSE_VERSION := $(shell sed -n 's|^\t*github.com/docker/compose/v5 \(v[^ ]*\).*|\1|p' deploy/compose/go.mod)

images: buildx-plugin ## build the nats, planner, generator, evaluator, archive and shoal images offline (debootstrap base, host-built binaries)
	deploy/base-images.sh $(BASE_IMAGE) $(PYTHON_BASE_IMAGE)
	@mkdir -p $(IMAGE_BIN)
	@for s in planner evaluator archive; do \
		CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(IMAGE_BIN)/$$s ./services/$$s/cmd/$$s || exit 1; done
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(IMAGE_BIN)/shoal ./cmd/shoal
	CGO_ENABLED=1 go build -trimpath -ldflags "$(LDFLAGS)" -o $(IMAGE_BIN)/generator ./services/generator/cmd/generator
	CGO_ENABLED=0 go build -trimpath -o $(IMAGE_BIN)/standin ./deploy/standin/cmd/standin
	cd pkg && CGO_ENABLED=0 go build -trimpath -o ../$(IMAGE_BIN)/nats-server github.com/nats-io/nats-server/v2
	printf 'FROM $(BASE_IMAGE)\nCOPY . /out/\n' | docker build -q -t shoal/build:local -f - $(IMAGE_BIN) >/dev/null
	@for i in nats planner generator evaluator archive shoal; do \
		base=$(BASE_IMAGE); [ $$i = evaluator ] && base=$(PYTHON_BASE_IMAGE); \
		echo "== image shoal/$$i:$(IMAGE_TAG)"; \
		docker build -q -f deploy/$$i/Dockerfile --build-arg GO_IMAGE=shoal/build:local \
			--build-arg BASE_IMAGE=$$base -t shoal/$$i:$(IMAGE_TAG) . >/dev/null || exit 1; done

buildx-plugin: ## provide `docker buildx` (BuildKit, built from the Go module proxy) where the Docker CLI has none, so image builds skip the deprecated legacy builder
	@if docker buildx version >/dev/null 2>&1; then docker buildx version; else \
		mkdir -p $(HOME)/.docker/cli-plugins $(BIN)/buildx && \
		GOWORK=off GOBIN=$(CURDIR)/$(BIN)/buildx go install -trimpath -ldflags "-X github.com/docker/buildx/version.Version=$(BUILDX_VERSION)" \
			github.com/docker/buildx/cmd/buildx@$(BUILDX_VERSION) && \
		mv $(BIN)/buildx/buildx $(HOME)/.docker/cli-plugins/docker-buildx && docker buildx version; fi

compose-plugin: ## provide `docker compose` (Compose v2, built from the Go module proxy) where only docker-compose 1.x is installed
	@if docker compose version >/dev/null 2>&1; then docker compose version; else \
		mkdir -p $(HOME)/.docker/cli-plugins && \
		cd deploy/compose && GOWORK=off go build -trimpath -ldflags "-X github.com/docker/compose/v5/internal.Version=$(COMPOSE_VERSION)" \
			-o $(HOME)/.docker/cli-plugins/docker-compose github.com/docker/compose/v5/cmd && docker compose version; fi

credentials: build ## one NATS password per role in .shoal/credentials, which compose.yaml mounts as secrets
	$(BIN)/shoal credentials

up: images compose-plugin credentials ## docker compose up: NATS with JetStream and the four services, built offline
	$(COMPOSE) up -d --wait

down: compose-plugin ## docker compose down (the JetStream volume stays; `$(COMPOSE) down -v` removes it)
	$(COMPOSE) down

e2e-compose: images compose-plugin build ## end to end on docker compose: up, scale generators, seed from the host, wait for the run, check, down; then the NATS cluster, its RESULTS leader stopped mid-run, RESULTS audited
	cd cmd/shoal && go test -tags e2ecompose -run 'TestCompose$$|TestComposeClusterFailover' -count=1 -timeout 30m -v ./...

# The Helm chart (deploy/helm/shoal). Helm is built from its Go module, at the version that
# deploy/helm/check/go.mod pins; the check is a module of its own, outside go.work and make test.
HELM_VERSION := $(shell sed -n 's|^\t*helm.sh/helm/v4 \(v[^ ]*\).*|\1|p' deploy/helm/check/go.mod)

helm: $(BIN)/helm ## build bin/helm (Helm v4) from the Go module proxy
$(BIN)/helm: deploy/helm/check/go.mod
	@mkdir -p $(BIN)
	cd deploy/helm/check && GOWORK=off go build -trimpath -ldflags "-X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" \
		-o ../../../$(BIN)/helm helm.sh/helm/v4/cmd/helm

helm-check: helm ## helm lint the chart, then helm template it under several values and decode every manifest strictly with the Kubernetes API types
	$(BIN)/helm lint deploy/helm/shoal
	$(BIN)/helm lint deploy/helm/shoal --set nats.enabled=false --set externalNats.url=nats://nats:4222 --set keda.enabled=true \
		--set externalNats.monitoringEndpoint=nats:8222
	cd deploy/helm/check && GOWORK=off HELM=$(abspath $(BIN)/helm) go test -count=1 -v ./...

screenshots: ## (re)generate the web UI's screenshots in docs/screenshots: a short `shoal up --ui` run in headless Chromium (apt-get install -y chromium)
	@command -v chromium || command -v chromium-browser || command -v google-chrome || \
		{ echo "no chromium binary: apt-get install -y chromium" >&2; exit 1; }
	@mkdir -p docs/screenshots
	cd cmd/shoal && SHOAL_SCREENSHOTS=$(CURDIR)/docs/screenshots go test -count=1 -run '^TestBrowserShowsALiveRun$$' -v .

tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

clean: ## remove build output and local run state
	rm -rf $(BIN) out .shoal

.PHONY: help build run test lint bench bench-pipeline bench-search bench-search-model bench-search-bandit bench-search-novelty chaos images buildx-plugin compose-plugin credentials up down e2e-compose helm helm-check screenshots tidy clean
