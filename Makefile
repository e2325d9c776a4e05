# nodexds — the commands README.md documents.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build demo test unit e2e e2e-deps bench fmt vet clean

all: build

# The same static binary the image contains (see Dockerfile).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodexds ./cmd/nodexds
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodexds-echo ./cmd/nodexds-echo

# Three nodes, two zones, real backends and a real gRPC xDS client, no cluster.
demo:
	$(GO) run ./cmd/nodexds-demo

# Everything CI runs: static checks, unit and integration tests, then the
# end-to-end suite against a real control plane (needs root; see e2e/README.md).
test: vet unit e2e

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

e2e-deps:
	e2e/build-bins.sh >/dev/null
	e2e/build-helm.sh >/dev/null
	cd e2e/jsclient && npm ci --no-audit --no-fund --loglevel=error

e2e: e2e-deps
	cd e2e && $(GO) test -count=1 -timeout 30m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
