#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against real tansu brokers
# (each test starts its own on a free port) with real RocksDB state.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
cd "$here/.."

"$here/install-deps.sh"
# cargo-nextest, the runner (.config/nextest.toml), pinned, into the cache dir (not needed by
# demo.sh or bench.sh, hence here).
if [ -x "$CARGO_NEXTEST_BIN" ] && "$CARGO_NEXTEST_BIN" nextest --version | grep -q " $CARGO_NEXTEST_VERSION\b"; then
  echo "==> cargo-nextest $CARGO_NEXTEST_VERSION present at $CARGO_NEXTEST_BIN"
else
  echo "==> building cargo-nextest $CARGO_NEXTEST_VERSION into $KSTREAMS_CACHE/nextest (about 8 minutes on 2 cores, once)"
  cargo install cargo-nextest --version "$CARGO_NEXTEST_VERSION" --locked --quiet \
    --root "$KSTREAMS_CACHE/nextest"
fi
"$here/check-k8s.sh"
# Release, like demo.sh and bench.sh: one build of RocksDB serves all three.
echo "==> building (release, target dir $CARGO_TARGET_DIR)"
cargo build --release --workspace --all-targets --locked
echo "==> testing"
# Tests that skip an assertion for a limit of the local broker, or (with KSTREAMS_TEST_BROKER
# set) skip because they need a private broker, append a line here; listed at the end, pass or
# fail, since libtest does not show a passing test's output.
skipped="$(mktemp)"
export KSTREAMS_SKIPPED_LOG="$skipped"
list_skips() {
  if [ -s "$skipped" ]; then
    echo "==> skipped (see README, 'The local broker and its limits'):"
    cat "$skipped"
  else
    echo "==> no test skipped anything for a broker limit"
  fi
  rm -f "$skipped"
}
trap list_skips EXIT
# cargo-nextest (.config/nextest.toml): each test in its own process, two at a time across
# every test binary, the tests that take turns one at a time. Arguments are nextest's (a test
# name filter, `-E 'binary(word_count)'`, ...).
"$CARGO_NEXTEST_BIN" nextest run --release --workspace --locked \
  --test-threads "${TEST_THREADS:-2}" "$@"
# Documentation examples (nextest does not run doctests).
if [ $# -eq 0 ]; then
  cargo test --release --workspace --locked --doc
fi
