#!/usr/bin/env bash
# The throughput and recovery benchmark (release build), printing a Markdown table.
#   BENCH_RECORDS=200000 BENCH_KEYS=10000 BENCH_PARTITIONS=4 scripts/bench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
cd "$here/.."
"$here/install-deps.sh"
cargo bench --locked --bench throughput
