#!/usr/bin/env bash
# The end-to-end benchmarks (release build), printing Markdown tables as they finish:
# throughput vs the plain-pipe ceiling, peak RSS, recovery, latency, scaling.
# Sizes and sections: see bench/benches/throughput.rs, e.g.
#   BENCH_SECTIONS=throughput BENCH_KEYS=10000 BENCH_PARTITIONS=4 scripts/bench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The throughput sections run the broker on memory:// storage (tansu's dynostore feature,
# which scripts/env.sh builds by default).
source "$here/env.sh"
cd "$here/.."
"$here/install-deps.sh"
cargo build --release --locked -p kstreams-count
cargo bench --locked --bench throughput
