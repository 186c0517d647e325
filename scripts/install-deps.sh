#!/usr/bin/env bash
# Installs what a fresh machine lacks: Debian's libclang (RocksDB's bindings) and the tansu
# Kafka-protocol broker (pinned, into a cache dir, skipped when present).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  echo "==> installing libclang-dev (needed to build RocksDB's bindings)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi

if [ -x "$TANSU_BIN" ]; then
  echo "==> tansu $TANSU_VERSION present at $TANSU_BIN"
else
  echo "==> installing tansu $TANSU_VERSION (a Kafka-protocol broker) into $KSTREAMS_CACHE (about 10 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
    --root "$KSTREAMS_CACHE/tansu-$TANSU_VERSION" --quiet
fi
