# syntax=docker/dockerfile:1
# The spillway image: one static-ish binary with every role as a subcommand
# (`spillway coordinator`, `spillway worker`, `spillway run`, `spillway crd`, ...).
#
#   docker build -t ghcr.io/spillway-dev/spillway:0.1.0 .
#
# Stage 1 compiles the release binary with the toolchain the workspace declares
# (`rust-version` in Cargo.toml); stage 2 is a distroless runtime with glibc and CA certificates
# only, running as the unprivileged user 65532 (the chart's runAsUser).

ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Everything the workspace needs to resolve (members are crates/* and tests); .dockerignore
# keeps target/, .work/ and .git/ out of the context.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p spillway \
    && install -D -m 0755 target/release/spillway /out/spillway

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="spillway" \
      org.opencontainers.image.description="Export very large OpenSearch/Elasticsearch data sets to files on shared storage" \
      org.opencontainers.image.source="https://github.com/spillway-dev/spillway" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/spillway /usr/local/bin/spillway
USER 65532:65532
# /healthz, /readyz and /metrics of the coordinator and the worker.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/spillway"]
CMD ["--help"]
