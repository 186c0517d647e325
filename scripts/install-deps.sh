#!/usr/bin/env bash
# Installs what a fresh machine lacks: Debian packages (below) and the tansu
# Kafka-protocol broker (pinned, into a cache dir, skipped when present).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"

# Debian packages: libclang for RocksDB's bindings; Prometheus (server + promtool) for the
# scrape tests; python3-venv for the manifest checks.
missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -x "$TANSU_BIN" ]; then
  echo "==> tansu $TANSU_VERSION present at $TANSU_BIN"
else
  echo "==> installing tansu $TANSU_VERSION (a Kafka-protocol broker) into $KSTREAMS_CACHE (about 20 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    --root "$(dirname "$(dirname "$TANSU_BIN")")" --quiet
fi
