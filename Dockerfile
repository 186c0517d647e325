# syntax=docker/dockerfile:1
# kstreams-count image: `docker build -t kstreams-count:0.1.0 .` from the repository root.
# The build links librdkafka with our patches (third_party/librdkafka/, prepared by
# scripts/prepare-rdkafka-sys.sh, which Cargo.toml's [patch.crates-io] builds): a patched
# path dependency is not something cargo-chef's recipe can skeleton, so dependencies are kept
# between builds by BuildKit cache mounts (the registry and the target dir) instead of a
# cargo-chef layer; a source change does not rebuild RocksDB. The binary is built without
# debug info and stripped.
FROM rust:1.95-bookworm AS build
# libclang: RocksDB's and zstd's bindings; libssl-dev + pkg-config: librdkafka with TLS and
# SASL/SCRAM; patch + python3: preparing the patched librdkafka.
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev cmake libssl-dev pkg-config patch python3 \
    && rm -rf /var/lib/apt/lists/*
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    ./scripts/prepare-rdkafka-sys.sh \
    && cargo build --release --locked --package kstreams-count \
    && install -D target/release/kstreams-count /out/kstreams-count

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="kstreams-count" \
      org.opencontainers.image.description="Kafka Streams-style word count on the kstreams engine (Rust, RocksDB state)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home kstreams && mkdir -p /data/count-store && chown kstreams /data/count-store
COPY --from=build /out/kstreams-count /usr/local/bin/kstreams-count
USER 10001
VOLUME /data/count-store
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/kstreams-count"]
