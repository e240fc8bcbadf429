# syntax=docker/dockerfile:1
# rowcast container image: a Rust builder stage, then a distroless runtime with only the binary.
# (SQL migrations and the demo schema are compiled into the binary with include_str!.)
#
#   docker build -t rowcast:0.1.0 .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e ROWCAST_JWT_SECRET=... rowcast:0.1.0

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# make: the jemalloc allocator is built from its C sources.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only: this layer is reused until Cargo.toml, Cargo.lock or the patched
#    crates in vendor/ change.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The crate itself. `touch` makes cargo rebuild it instead of keeping the stub above.
COPY src ./src
COPY sql ./sql
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/rowcast /usr/local/bin/rowcast

# Runtime: glibc, libgcc and CA certificates, no shell, no package manager, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/rowcast /usr/local/bin/rowcast
USER 65532:65532
EXPOSE 8080
# Listens on 0.0.0.0:8080 by default (ROWCAST_LISTEN or `listen` in rowcast.toml change it).
# Liveness: GET /healthz; readiness: GET /readyz (the image has no shell for a HEALTHCHECK).
ENTRYPOINT ["/usr/local/bin/rowcast"]
CMD ["serve"]
