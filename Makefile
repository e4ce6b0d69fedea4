# Strata's everyday commands. `make help` lists them.
GO      ?= go
LINT    ?= golangci-lint
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/stratadb/strata.version=$(VERSION)

.PHONY: help run build test test-race lint bench generate ci

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

run: ## Run the platform on embedded defaults (go run ./cmd/strata serve)
	$(GO) run ./cmd/strata serve

build: ## Build bin/strata with the version stamped
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/strata ./cmd/strata

test: ## Run every test against a real PostgreSQL (go test ./...)
	$(GO) test ./...

test-race: ## Run every test with the race detector
	$(GO) test -race ./...

lint: ## gofmt, go vet and golangci-lint (install: go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@latest)
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
	$(GO) vet ./...
	$(LINT) run ./...

bench: ## Run the in-package benchmarks; side-by-side runs are in bench/ (see bench/README.md)
	$(GO) test -run '^$$' -bench . -benchmem ./...

generate: ## Regenerate generated files
	$(GO) generate ./...

ci: ## Run what CI runs
	./.ci/run
