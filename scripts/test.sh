#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against real tansu brokers
# (each test starts its own on a free port) with real RocksDB state.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
cd "$here/.."

"$here/install-deps.sh"
"$here/check-k8s.sh"
# Release, like demo.sh and bench.sh: one build of RocksDB serves all three.
echo "==> building (release, target dir $CARGO_TARGET_DIR)"
cargo build --release --workspace --all-targets --locked
echo "==> testing"
cargo test --release --workspace --locked -- --test-threads "${TEST_THREADS:-2}" "$@"
