# Shared settings for the project's scripts (sourced, not run).
# Build outputs and the broker live in caches outside the checkout, reused between runs.
export KSTREAMS_CACHE="${KSTREAMS_CACHE:-$HOME/.cache/kstreams}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KSTREAMS_CACHE/target}"
export TANSU_VERSION=0.6.0
# libsql: sqlite:// storage (tests, demo); dynostore: memory:// storage (throughput benchmarks).
export TANSU_FEATURES=libsql,dynostore
export TANSU_BIN="${TANSU_BIN:-$KSTREAMS_CACHE/tansu-$TANSU_VERSION-${TANSU_FEATURES/,/-}/bin/tansu}"
export PATH="$HOME/.cargo/bin:$PATH"
