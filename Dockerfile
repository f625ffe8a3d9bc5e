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
# Numeric, so runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
# /metrics and /healthz (the dashboard will be served here too).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/headroom"]
CMD ["run", "--listen=0.0.0.0:9464"]
