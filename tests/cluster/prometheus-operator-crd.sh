#!/usr/bin/env bash
# Install the PrometheusRule and ServiceMonitor CRDs (monitoring.coreos.com/v1)
# into the local cluster, taken from the prometheus-operator Go module so the
# schemas are the real ones, not copies kept in this repo. The operator writes
# PrometheusRule objects only when the API server serves that resource; the
# Helm chart's ServiceMonitor is checked against the other.
#
# Idempotent: the module is downloaded once into the Go module cache, and the
# CRD is applied server-side.
#
# Environment:
#   PROMETHEUS_OPERATOR_VERSION  module version (default below)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
MODULE="github.com/prometheus-operator/prometheus-operator"
CRD_DIR="example/prometheus-operator-crd"
CRDS=(prometheusrules servicemonitors)

fail() { echo "[prometheus-operator-crd] FAILED: $*" >&2; exit 1; }
log() { printf '[prometheus-operator-crd] %s\n' "$*"; }

[[ -f "$C/env" ]] || fail "$C/env is missing: start the cluster with tests/cluster/up.sh"
KUBECTL="$(sed -n 's/^KUBECTL=//p' "$C/env")"
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$C/env")"
export KUBECONFIG
[[ -x "$KUBECTL" ]] || fail "kubectl from $C/env ($KUBECTL) is not executable"

[[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || fail "go is not installed (tests/cluster/up.sh installs it)"

mkdir -p "$C/logs"
# Outside any module: the download must not touch a go.mod of this repo.
dir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" 2>"$C/logs/prometheus-operator-crd.log" \
  | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')" || true
for crd in "${CRDS[@]}"; do
  file="$CRD_DIR/monitoring.coreos.com_$crd.yaml"
  [[ -n "$dir" && -f "$dir/$file" ]] \
    || fail "go mod download $MODULE@$VERSION gave no $file (see $C/logs/prometheus-operator-crd.log)"
  "$KUBECTL" apply --server-side --force-conflicts -f "$dir/$file" >>"$C/logs/prometheus-operator-crd.log" 2>&1 \
    || fail "kubectl apply of $file failed (see $C/logs/prometheus-operator-crd.log)"
  "$KUBECTL" wait --for=condition=Established --timeout=60s "crd/$crd.monitoring.coreos.com" \
    >>"$C/logs/prometheus-operator-crd.log" 2>&1 \
    || fail "$crd.monitoring.coreos.com not established (see $C/logs/prometheus-operator-crd.log)"
done
log "PrometheusRule and ServiceMonitor CRDs from $MODULE@$VERSION installed"
