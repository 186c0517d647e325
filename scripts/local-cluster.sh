#!/usr/bin/env bash
# The StatefulSet on one machine: starts a local tansu broker (unless KAFKA_BROKER points at
# one), then `kstreams-count local` with N instances, a load generator and a live view.
#   scripts/local-cluster.sh                          3 instances, 200 records/s
#   scripts/local-cluster.sh --instances 2 --rate 1000
# Type `add`, `stop 1`, `kill 2`, `start 2`, `rate 500` or `quit` at the prompt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
source "$here/broker.sh"
cd "$here/.."

WORK="${LOCAL_CLUSTER_DIR:-$KSTREAMS_CACHE/local-cluster}"
"$here/install-deps.sh"
echo "==> building kstreams-count"
cargo build --release --locked -p kstreams-count
APP="$CARGO_TARGET_DIR/release/kstreams-count"

if [ -z "${KAFKA_BROKER:-}" ]; then
  rm -rf "$WORK" && mkdir -p "$WORK"
  start_broker "$WORK" "${LOCAL_BROKER_PORT:-9092}"
  trap 'kill -TERM "$BROKER_PID" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  export KAFKA_BROKER="127.0.0.1:${LOCAL_BROKER_PORT:-9092}"
fi
"$APP" create-topic counts-topic --partitions 6
"$APP" local --state-root "$WORK/instances" "$@"
