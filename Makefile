# nodexds — the commands README.md documents.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# The agent image and the demo workload's (deploy/examples). Name them after
# your registry: make push IMAGE=registry.example/nodexds:dev
IMAGE      ?= nodexds:$(VERSION)
ECHO_IMAGE ?= nodexds-echo:$(VERSION)
# podman if it is installed, else docker.
CONTAINER  ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)

.PHONY: all build image image-echo push push-echo demo test unit e2e e2e-deps bench fmt vet clean

all: build

# The same static binary the image contains (see Dockerfile).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodexds ./cmd/nodexds
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodexds-echo ./cmd/nodexds-echo

# The Dockerfile's images: the agent (its default target) and the echo
# workload. Both compile the binaries inside, on golang and distroless base
# images pulled from their registries.
BUILD_IMAGE = $(CONTAINER) build --build-arg VERSION=$(VERSION)

image:
	$(BUILD_IMAGE) -t $(IMAGE) .

image-echo:
	$(BUILD_IMAGE) --target echo -t $(ECHO_IMAGE) .

# Build and push: the name must be one you can push to.
push:
	@case "$(IMAGE)" in */*) ;; *) echo 'make push: set IMAGE to your registry, e.g. make push IMAGE=registry.example/nodexds:dev' >&2; exit 1;; esac
	$(BUILD_IMAGE) -t $(IMAGE) .
	$(CONTAINER) push $(IMAGE)

push-echo:
	@case "$(ECHO_IMAGE)" in */*) ;; *) echo 'make push-echo: set ECHO_IMAGE to your registry, e.g. make push-echo ECHO_IMAGE=registry.example/nodexds-echo:dev' >&2; exit 1;; esac
	$(BUILD_IMAGE) --target echo -t $(ECHO_IMAGE) .
	$(CONTAINER) push $(ECHO_IMAGE)

# Three nodes, two zones, real backends and a real gRPC xDS client, no cluster.
demo:
	@echo "make demo: building the demo; the first run downloads and compiles its dependencies, gRPC's xDS client among them (about 4.5 minutes on 2 cores), later runs start in seconds"
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
