# Starts a local tansu broker (sourced by demo.sh and local-cluster.sh, not run).
#   start_broker <work dir> <port>   starts it in the background, sets BROKER_PID, waits for the port
start_broker() {
  local work="$1" port="$2"
  mkdir -p "$work/broker"
  echo "==> starting tansu on 127.0.0.1:$port (sqlite storage in $work/broker, log $work/broker.log)"
  (cd "$work/broker" && exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db) >"$work/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "tansu did not open port $port; its log:"; cat "$work/broker.log"; return 1
}
