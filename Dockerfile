# syntax=docker/dockerfile:1
# outrider: one static binary in a distroless, non-root image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse HEAD) -t outrider:v1.2.3 .
#
# The build context has no .git (and -buildvcs=false), so Go cannot stamp
# the commit itself: COMMIT does, and `outrider version` reports it.
#
# Stage 1 builds with CGO off, so the binary needs no libc; stage 2 is
# distroless "static" (CA certificates, tzdata, /etc/passwd with the
# nonroot user 65532, no shell, no package manager).

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits reuse this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/outrider ./cmd/outrider

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outrider /usr/local/bin/outrider
# Non-root: listen on unprivileged ports (8443/8080) and let the Service
# map 443/80 to them. Give --storage a mounted volume, or etcd://… (then
# nothing is written locally).
USER 65532:65532
EXPOSE 8443 8080 9901
ENTRYPOINT ["/usr/local/bin/outrider"]
CMD ["--help"]
