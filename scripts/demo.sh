#!/usr/bin/env bash
# The demo: the local cluster, the example service under load, the operator
# evaluating the example SLOs, left running. `make cluster-down` stops it.
#
# The experiment engine and the dashboard are not built yet: the demo shows
# SLO evaluation (status, burn rates, generated rules and alerts) so far.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

echo "==> local cluster (first run builds Kubernetes from source: ~10 minutes)"
./tests/cluster/up.sh
set -a; . .cluster/env; set +a

echo "==> building the operator"
cargo build -q -p headroom

echo "==> CRDs and example SLOs"
"$KUBECTL" apply --server-side -f crds/ >/dev/null
"$KUBECTL" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
"$KUBECTL" apply -f examples/slos.yaml

pidfile=.cluster/pids/headroom.pid
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "==> operator already running (pid $(cat "$pidfile"))"
else
  echo "==> starting the operator"
  setsid "$ROOT/target/debug/headroom" run --listen "$OPERATOR_METRICS_ADDR" \
    --prometheus-url "$PROMETHEUS_URL" --evaluation-interval 5s \
    --rules-dir "$PROMETHEUS_RULES_DIR" --prometheus-reload \
    --dashboard-url "http://$OPERATOR_METRICS_ADDR" \
    >.cluster/logs/headroom.log 2>&1 </dev/null &
  echo $! >"$pidfile"
fi

echo "==> waiting for the first evaluation"
for _ in $(seq 1 60); do
  if "$KUBECTL" get slo -A -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -q True; then
    break
  fi
  sleep 2
done
"$KUBECTL" get slo -A
cat <<MSG

Headroom is running.
  operator metrics:  http://$OPERATOR_METRICS_ADDR/metrics
  Prometheus:        $PROMETHEUS_URL  (alerts: $PROMETHEUS_URL/alerts)
  example service:   $CHECKOUT_URL/admin/state
  burn some budget:  curl -X POST '$CHECKOUT_URL/admin/error-rate?ratio=0.2'
  kubectl:           export KUBECONFIG=$KUBECONFIG; $KUBECTL get slo -A -o yaml
Stop everything with: make cluster-down
MSG
