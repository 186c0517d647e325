#!/usr/bin/env bash
# Installs what a fresh machine lacks: Debian packages (below) and the tansu
# Kafka-protocol broker (pinned, into a cache dir, skipped when present).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

# Debian packages: libclang for RocksDB's (and zstd's) bindings; Prometheus (server + promtool) for the
# scrape tests; python3-venv for the manifest checks; patch for the broker's patches.
missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
# patch: applies third_party/tansu/<crate>/*.patch to the broker's source, and
# third_party/librdkafka/*.patch to librdkafka's.
command -v patch >/dev/null 2>&1 || missing+=(patch)
# libssl-dev + pkg-config: librdkafka is built with TLS and SASL/SCRAM (OpenSSL).
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# stunnel4: the TLS front of the secured-cluster tests.
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing+=(stunnel4)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# librdkafka with our patches (third_party/librdkafka/), which Cargo.toml builds.
"$here/prepare-rdkafka-sys.sh"

if [ -x "$TANSU_BIN" ]; then
  echo "==> tansu $TANSU_VERSION (patches $TANSU_PATCHES_KEY) present at $TANSU_BIN"
else
  echo "==> building tansu $TANSU_VERSION (a Kafka-protocol broker) with third_party/tansu/*/*.patch into $KSTREAMS_CACHE (about 11 minutes on 2 cores, once per patch set and feature set)"
  src="$KSTREAMS_CACHE/tansu-src-$TANSU_PATCHES_KEY"
  rm -rf "$src" && mkdir -p "$src"
  # The crates we patch (one folder of patches each), plus tansu itself, whose binary we build.
  patched=()
  for dir in "$KSTREAMS_ROOT"/third_party/tansu/*/; do patched+=("$(basename "$dir")"); done
  for crate in tansu "${patched[@]}"; do
    file="$src/$crate-$TANSU_VERSION.crate"
    fetch_crate "$crate" "$TANSU_VERSION" "$file"
    tar xzf "$file" -C "$src"
  done
  printf '\n[patch.crates-io]\n' >> "$src/tansu-$TANSU_VERSION/Cargo.toml"
  for crate in "${patched[@]}"; do
    for patch_file in "$KSTREAMS_ROOT/third_party/tansu/$crate"/*.patch; do
      echo "    applying $crate/$(basename "$patch_file")"
      patch -d "$src/$crate-$TANSU_VERSION" -p1 --quiet < "$patch_file"
    done
    printf '%s = { path = "../%s-%s" }\n' "$crate" "$crate" "$TANSU_VERSION" \
      >> "$src/tansu-$TANSU_VERSION/Cargo.toml"
  done
  # The crate's own Cargo.lock pins every other dependency; only the patched crates are replaced.
  (cd "$src/tansu-$TANSU_VERSION" && CARGO_TARGET_DIR="$KSTREAMS_CACHE/tansu-target" \
    cargo build --release --features "$TANSU_FEATURES" --bin tansu)
  install -D "$KSTREAMS_CACHE/tansu-target/release/tansu" "$TANSU_BIN"
  # Sources of earlier patch sets are no longer needed (their brokers stay until removed).
  find "$KSTREAMS_CACHE" -maxdepth 1 -name 'tansu-src-*' ! -name "tansu-src-$TANSU_PATCHES_KEY" \
    -exec rm -rf {} +
fi
# Where the test harness looks when TANSU_BIN is not set.
ln -sfn "$(dirname "$(dirname "$TANSU_BIN")")" "$KSTREAMS_CACHE/tansu-current"

# confluent-kafka, pinned, into the cache dir's venv: the independent client of the broker's
# conformance test of transactions (suite/conformance/transactions.py).
if "$KSTREAMS_PYTHON" -c 'import confluent_kafka, sys; sys.exit(confluent_kafka.version() != sys.argv[1])' \
    "$CONFLUENT_KAFKA_VERSION" 2>/dev/null; then
  echo "==> confluent-kafka $CONFLUENT_KAFKA_VERSION present in $KSTREAMS_CACHE/venv"
else
  echo "==> installing confluent-kafka $CONFLUENT_KAFKA_VERSION into $KSTREAMS_CACHE/venv"
  python3 -m venv "$KSTREAMS_CACHE/venv"
  "$KSTREAMS_CACHE/venv/bin/pip" install --quiet "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
fi

# cargo-deny (supply-chain checks of deny.toml, run by .ci/run), pinned, into the cache dir.
if [ -x "$CARGO_DENY_BIN" ] && "$CARGO_DENY_BIN" --version | grep -q " $CARGO_DENY_VERSION\$"; then
  echo "==> cargo-deny $CARGO_DENY_VERSION present at $CARGO_DENY_BIN"
else
  echo "==> building cargo-deny $CARGO_DENY_VERSION into $KSTREAMS_CACHE/cargo-deny (about 2 minutes on 2 cores, once)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet \
    --root "$KSTREAMS_CACHE/cargo-deny"
fi

