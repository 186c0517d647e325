#!/usr/bin/env bash
# Validates what k8s/ ships: yamllint on every file; each overlay rendered with
# `kubectl kustomize` and checked against the Kubernetes schema (kubernetes-validate, offline)
# and Pod Security "restricted" (scripts/check_pod_security.py); the alert rules with promtool
# (syntax and unit tests) and equal to the PrometheusRule; the scrape config with promtool; the
# Grafana dashboard's JSON.
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
echo "==> yamllint k8s/"
"$venv/bin/yamllint" --strict -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' .
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in overlays/*/; do
  name="$(basename "$overlay")"
  echo "==> kubectl kustomize $overlay"
  kubectl kustomize "$overlay" > "$rendered/$name.yaml"
  echo "==> kubernetes-validate --strict ($name; PodMonitor and PrometheusRule are custom resources: no schema, warning only)"
  "$venv/bin/kubernetes-validate" --strict "$rendered/$name.yaml"
  echo "==> Pod Security \"restricted\" ($name)"
  "$venv/bin/python" "$here/check_pod_security.py" "$rendered/$name.yaml"
done
echo "==> the base and dev need no Prometheus Operator; prod's resources carry kube-prometheus-stack's release label"
kubectl kustomize base > "$rendered/base.yaml"
"$venv/bin/python" - "$rendered" <<'PY'
import sys, yaml
rendered = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(f"{rendered}/{name}.yaml")) if d]
for name in ("base", "dev"):
    crds = [d["kind"] for d in docs(name) if d["apiVersion"].startswith("monitoring.coreos.com/")]
    if crds:
        sys.exit(f"{name} renders Prometheus Operator resources {crds}: it must apply without their CRDs")
operator = [d for d in docs("prod") if d["apiVersion"].startswith("monitoring.coreos.com/")]
kinds = sorted(d["kind"] for d in operator)
if kinds != ["PodMonitor", "PrometheusRule"]:
    sys.exit(f"prod renders {kinds}, not a PodMonitor and a PrometheusRule")
unlabelled = [d["kind"] for d in operator if "release" not in d["metadata"].get("labels", {})]
if unlabelled:
    sys.exit(f"{unlabelled} in prod lack the `release` label kube-prometheus-stack selects by")
PY
echo "==> kubernetes-validate --strict (examples)"
"$venv/bin/kubernetes-validate" --strict examples/*.yaml
echo "==> promtool: rules, their unit tests, the scrape config"
promtool check rules prometheus/rules.yml
(cd prometheus && promtool test rules rules_test.yml)
promtool check config prometheus/scrape.yml
echo "==> the PrometheusRule carries the rules of prometheus/rules.yml"
"$venv/bin/python" - <<'PY'
import sys, yaml
rules = yaml.safe_load(open("prometheus/rules.yml"))["groups"]
crd = yaml.safe_load(open("components/prometheus-operator/prometheusrule.yaml"))["spec"]["groups"]
sys.exit(0 if rules == crd else "components/prometheus-operator/prometheusrule.yaml differs from prometheus/rules.yml")
PY
echo "==> the Grafana dashboard parses (its queries run against a real Prometheus in suite/tests/operations.rs)"
"$venv/bin/python" -c 'import json, sys; json.load(open("components/grafana-dashboard/kstreams-count.json"))'
