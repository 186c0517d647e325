# Shared settings for the project's scripts (sourced, not run).
# Build outputs and the broker live in caches outside the checkout, reused between runs.
export KSTREAMS_CACHE="${KSTREAMS_CACHE:-$HOME/.cache/kstreams}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KSTREAMS_CACHE/target}"
export TANSU_VERSION=0.6.0
# libsql: sqlite:// storage (tests, demo); dynostore: memory:// storage (the benchmarks, and
# the suite's conformance test of its offsets). One broker build serves both.
export TANSU_FEATURES="${TANSU_FEATURES:-libsql,dynostore}"
# The broker is tansu with our patches (third_party/tansu/<crate>/*.patch, each applied to
# that crate's source), built into a directory keyed by the patches' hash, so a changed patch
# builds a new broker.
KSTREAMS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TANSU_PATCHES_KEY="$(cd "$KSTREAMS_ROOT/third_party/tansu" && { ls ./*/*.patch; cat ./*/*.patch; } | sha256sum | cut -c1-12)"
export TANSU_BIN="${TANSU_BIN:-$KSTREAMS_CACHE/tansu-$TANSU_VERSION-${TANSU_FEATURES/,/-}-$TANSU_PATCHES_KEY/bin/tansu}"
# cargo-nextest, the suite's runner (.config/nextest.toml), installed by scripts/test.sh.
export CARGO_NEXTEST_VERSION=0.9.151
export CARGO_NEXTEST_BIN="$KSTREAMS_CACHE/nextest/bin/cargo-nextest"
# cargo-deny for deny.toml's supply-chain checks (.ci/run), installed by install-deps.sh.
export CARGO_DENY_VERSION=0.20.2
export CARGO_DENY_BIN="$KSTREAMS_CACHE/cargo-deny/bin/cargo-deny"
export PATH="$HOME/.cargo/bin:$PATH"
# Python with confluent-kafka (the broker's transaction conformance test), installed by install-deps.sh.
export CONFLUENT_KAFKA_VERSION=2.16.1
export KSTREAMS_PYTHON="${KSTREAMS_PYTHON:-$KSTREAMS_CACHE/venv/bin/python}"

# Copies crate $1's version $2 (`.crate` file) to $3: from cargo's download cache when it is
# there, else from crates.io (the broker's crates, the patched rdkafka-sys).
fetch_crate() {
  local name="$1" version="$2" file="$3" cached
  cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n 1 || true)"
  if [ -n "$cached" ]; then
    cp "$cached" "$file"
  else
    echo "    downloading $name $version from crates.io"
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "https://static.crates.io/crates/$name/$name-$version.crate" "$file"
  fi
}
