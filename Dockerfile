# syntax=docker/dockerfile:1
# The operator image: `docker build -t headroom:0.1.0 .` (or `make image`).
# Not built in CI here (no container engine); deploy/ expects this image.

# ---- build: the headroom binary, from the locked dependency versions
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (see .dockerignore): cargo needs every member's
# manifest even to build one package.
COPY . .
# Cache mounts keep downloaded crates and compiled dependencies between
# builds; the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p headroom \
 && install -D -m 0755 target/release/headroom /out/headroom

# ---- run: Debian slim with CA certificates, as an unprivileged user
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/headroom /usr/local/bin/headroom
# mimalloc gives freed pages back at once instead of after a second: a
# cycle's reads and a /metrics scrape come and go in well under that, and
# the pages they held counted in RSS on top of the next ones (issue 22, with
# examples/memory.rs at 10,000 SLOs: 70 MiB instead of 88 during a cycle's
# peak, for 0.2 s more system CPU over the whole run). tests/src/lib.rs
# starts the e2e and bench operators with the same setting.
ENV MIMALLOC_PURGE_DELAY=0
# Numeric, so runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
# /metrics and /healthz (the dashboard will be served here too).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/headroom"]
CMD ["run", "--listen=0.0.0.0:9464"]
