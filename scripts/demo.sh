#!/usr/bin/env bash
# The main job, end to end: installs what is missing, starts a local tansu broker, creates the
# topics, starts kstreams-count, feeds sample lines and shows the counts.
#   scripts/demo.sh              run once and stop everything
#   KEEP_RUNNING=1 scripts/demo.sh   leave broker and app running (Ctrl-C to stop)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
source "$here/broker.sh"
cd "$here/.."

PORT="${DEMO_BROKER_PORT:-9092}"
METRICS="${DEMO_METRICS_ADDRESS:-127.0.0.1:9102}"
BROKER="127.0.0.1:$PORT"
WORK="$KSTREAMS_CACHE/demo"

"$here/install-deps.sh"
echo "==> building kstreams-count (release, into $CARGO_TARGET_DIR; RocksDB makes the first build long)"
cargo build --release --locked -p kstreams-count
APP="$CARGO_TARGET_DIR/release/kstreams-count"

rm -rf "$WORK" && mkdir -p "$WORK"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_broker "$WORK" "$PORT"
pids+=("$BROKER_PID")

export KAFKA_BROKER="$BROKER"
"$APP" create-topic input-topic --partitions 4
"$APP" create-topic counts-topic --partitions 4

echo "==> starting kstreams-count (state in $WORK/state, metrics on http://$METRICS/metrics)"
"$APP" --state-dir "$WORK/state" --metrics-address "$METRICS" --commit-interval-ms 1000 >"$WORK/app.log" 2>&1 &
app_pid=$!
pids=("$app_pid" "${pids[@]}")
ready() { python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$METRICS/health/ready', timeout=1)" 2>/dev/null; }
for _ in $(seq 600); do ready && break; kill -0 "$app_pid" 2>/dev/null || { cat "$WORK/app.log"; exit 1; }; sleep 0.1; done
ready || { echo "kstreams-count did not become ready; its log:"; cat "$WORK/app.log"; exit 1; }

echo "==> feeding sample lines to input-topic"
printf '%s\n' foo:bar hello:world hello:universe foo:baz john:doe | tee /dev/stderr | "$APP" produce --topic input-topic

echo "==> counts-topic (every update, then the latest count per key)"
expected="foo 2|hello 2|john 1"
for _ in $(seq 60); do
  updates="$("$APP" consume --topic counts-topic --from-beginning --idle-timeout-ms 1500)"
  latest="$(printf '%s\n' "$updates" | awk 'NF { last[$1] = $2 } END { for (k in last) print k, last[k] }' | sort)"
  [ "$(printf '%s\n' "$latest" | paste -sd'|')" = "$expected" ] && break
done
printf '%s\n' "$updates" | sed 's/^/  update: /'
printf '%s\n' "$latest"
[ "$(printf '%s\n' "$latest" | paste -sd'|')" = "$expected" ] || { echo "unexpected counts; app log:"; cat "$WORK/app.log"; exit 1; }

echo "==> the same counts asked of the instance (interactive queries: kstreams-count query KEY)"
for key in foo hello john; do
  "$APP" query "$key" --server "$METRICS" || { echo "query of $key failed; app log:"; cat "$WORK/app.log"; exit 1; }
done

if [ -n "${KEEP_RUNNING:-}" ]; then
  echo "==> running; broker on $BROKER, metrics on http://$METRICS/metrics. Ctrl-C stops both."
  wait "$app_pid"
fi
echo "==> stopping (logs in $WORK)"
