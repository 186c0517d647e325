#!/usr/bin/env bash
# Validates what k8s/ ships: every manifest against the Kubernetes schema (kubernetes-validate,
# offline) and yamllint; the Prometheus scrape config with promtool.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
cd "$here/../k8s"

venv="$KSTREAMS_CACHE/venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/yamllint" ]; then
  echo "==> installing kubernetes-validate and yamllint into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate yamllint
fi
manifests=(configmap.yaml service.yaml statefulset.yaml pdb.yaml podmonitor.yaml examples/kafka-client-secret.yaml)
echo "==> yamllint k8s/"
"$venv/bin/yamllint" --strict -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' \
  "${manifests[@]}" prometheus-scrape.yml
echo "==> kubernetes-validate --strict (PodMonitor is a custom resource: no schema, warning only)"
"$venv/bin/kubernetes-validate" --strict "${manifests[@]}"
echo "==> promtool check config"
promtool check config prometheus-scrape.yml
