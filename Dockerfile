# syntax=docker/dockerfile:1
# The image holds the same static binary `make build` produces. Build it with
# podman or docker through make (README.md, Install):
#   make image IMAGE=registry.example/nodexds:dev    (make push: build and push)
# Base images are named in full, as podman needs without a search registry.
FROM docker.io/library/golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/nodexds ./cmd/nodexds && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/nodexds-echo ./cmd/nodexds-echo

# The demo and example workload (deploy/examples): docker build --target echo ...
FROM gcr.io/distroless/static-debian12:nonroot AS echo
COPY --from=build /out/nodexds-echo /nodexds-echo
USER 65532:65532
ENTRYPOINT ["/nodexds-echo"]

# The agent; the default target.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nodexds /nodexds
USER 65532:65532
EXPOSE 18000 18001
ENTRYPOINT ["/nodexds"]
CMD ["serve"]
