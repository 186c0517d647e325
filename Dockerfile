# kstreams-count image: `docker build -t kstreams-count:0.1.0 .` from the repository root.
# Dependencies are compiled in their own layer (cargo-chef), so a source change does not
# rebuild RocksDB; the binary is built without debug info and stripped.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.77
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
# libclang: RocksDB's and zstd's bindings; libssl-dev + pkg-config: librdkafka with TLS and
# SASL/SCRAM.
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --package kstreams-count --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package kstreams-count

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="kstreams-count" \
      org.opencontainers.image.description="Kafka Streams-style word count on the kstreams engine (Rust, RocksDB state)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home kstreams && mkdir -p /data/count-store && chown kstreams /data/count-store
COPY --from=build /src/target/release/kstreams-count /usr/local/bin/kstreams-count
USER 10001
VOLUME /data/count-store
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/kstreams-count"]
