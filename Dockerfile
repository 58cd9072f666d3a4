# syntax=docker/dockerfile:1

# Build stage: runs on the build host's platform and cross-compiles for the
# target, so multi-platform builds need no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS
ARG TARGETARCH
# What -version and orders_build_info report (.git is not in the context):
# docker build --build-arg VERSION=$(git describe --tags --dirty --always) --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=devel
ARG REVISION=
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/acme/orders-service/internal/buildinfo.version=${VERSION} -X github.com/acme/orders-service/internal/buildinfo.revision=${REVISION}" \
    -o /out/ ./cmd/orders-service ./cmd/payments-sim ./cmd/ordersctl

# Runtime stage: static binaries on distroless, no shell, uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot
# 50051: gRPC (orders.v1 + grpc.health.v1); 8080: /metrics, /healthz, /readyz.
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/orders-service"]
