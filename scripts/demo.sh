#!/usr/bin/env bash
# The demo: the local cluster, the example service under load, the operator
# evaluating the example SLOs and running one experiment of each kind
# (examples/experiments.yaml), a summary of their verdicts, all left running.
# `make cluster-down` stops it.
#
# Experiments run one after another (by their label demo.headroom.dev/step),
# so each run's evidence is its own; each gets DEMO_RUN_TIMEOUT seconds
# (default 300) to reach a final phase. The script exits non-zero, leaving
# everything running, if one does not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_NAMESPACE=checkout
DEMO_RUN_TIMEOUT="${DEMO_RUN_TIMEOUT:-300}"
EXPERIMENT_LABEL=headroom.dev/experiment
STEP_LABEL=demo.headroom.dev/step

say() { printf '==> %s\n' "$*"; }
k() { "$KUBECTL" "$@"; }

# build_operator: cargo build, with a progress line every 30s (the first
# build compiles a few hundred crates and takes minutes).
build_operator() {
  local logfile=.cluster/logs/build-headroom.log t0=$SECONDS next pid
  command -v cargo >/dev/null || PATH="$PATH:$HOME/.cargo/bin"
  say "building the operator (cargo build -p headroom; the first build takes ~6 minutes on 2 cores, log: $logfile)"
  cargo build -p headroom --locked >"$logfile" 2>&1 &
  pid=$!
  next=$((t0 + 30))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      printf '    ... still building: %s crates compiled, %s min\n' \
        "$(grep -c '^ *Compiling' "$logfile" || true)" "$(((SECONDS - t0) / 60))"
      next=$((next + 30))
    fi
  done
  if ! wait "$pid"; then
    echo "FAILED: cargo build -p headroom; last lines of $logfile:" >&2
    tail -n 30 "$logfile" >&2
    exit 1
  fi
  say "operator built in $((SECONDS - t0))s"
}

# start_operator: start target/debug/headroom unless the same binary already
# runs (a rebuilt binary replaces the running operator).
start_operator() {
  local pidfile=.cluster/pids/headroom.pid bin pid running_exe
  bin="$(readlink -f target/debug/headroom)"
  if [[ -f "$pidfile" ]] && pid="$(cat "$pidfile")" && kill -0 "$pid" 2>/dev/null; then
    running_exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    if [[ "$running_exe" == "$bin" ]]; then
      say "operator already running (pid $pid)"
      return
    fi
    if [[ "${running_exe% (deleted)}" == "$bin" ]]; then
      # SIGTERM: running experiments are aborted and restored first.
      say "the operator binary was rebuilt: restarting the operator (pid $pid)"
      kill -TERM "$pid"
      for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  say "starting the operator (log: .cluster/logs/headroom.log)"
  # The example connectionExhaustion targets the local PostgreSQL by
  # address: allow exactly that address and port, nothing else.
  local pg_port
  pg_port="$(sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#' <<<"$DATABASE_URL")"
  setsid "$bin" run --listen "$OPERATOR_METRICS_ADDR" \
    --prometheus-url "$PROMETHEUS_URL" --evaluation-interval 5s \
    --rules-dir "$PROMETHEUS_RULES_DIR" --prometheus-reload \
    --dashboard-url "http://$OPERATOR_METRICS_ADDR" \
    --connection-target-allow "127.0.0.1/32:$pg_port" \
    >.cluster/logs/headroom.log 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  # tests/cluster/down.sh stops it, checking it still runs this binary.
  echo "$bin" >.cluster/pids/headroom.exe
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    if curl -fsS "http://$OPERATOR_METRICS_ADDR/healthz" >/dev/null 2>&1; then
      return
    fi
    sleep 0.2
  done
  echo "FAILED: the operator (pid $pid) did not answer on http://$OPERATOR_METRICS_ADDR/healthz; last lines of .cluster/logs/headroom.log:" >&2
  tail -n 30 .cluster/logs/headroom.log >&2
  exit 1
}

# wait_slos NS: until every SLO in NS is Ready (bounded).
wait_slos() {
  local ns="$1" deadline=$((SECONDS + 120)) total ready
  say "waiting for the first evaluation of the SLOs in $ns"
  while :; do
    total="$(k get slo -n "$ns" -o name | wc -l)"
    ready="$(k get slo -n "$ns" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)"
    ((total > 0 && ready == total)) && break
    if ((SECONDS >= deadline)); then
      echo "    $ready of $total SLOs Ready after 120s; continuing (the gate will say why it stays closed)" >&2
      break
    fi
    sleep 2
  done
  k get slo -n "$ns"
}

# final_run NS EXPERIMENT: the name of the experiment's first run that
# injected a fault and finished (Completed, Aborted or Failed); empty if none.
# Gated runs are records of a closed gate: a one-off experiment keeps
# waiting for the gate to open, so they are not its result.
final_run() {
  k get run -n "$1" -l "$EXPERIMENT_LABEL=$2" --sort-by=.metadata.creationTimestamp \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.phase}{"\n"}{end}' |
    awk '$2 == "Completed" || $2 == "Aborted" || $2 == "Failed" { print $1; exit }'
}

# progress NS EXPERIMENT: one line on where the experiment stands.
progress() {
  local ns="$1" exp="$2" latest gate
  latest="$(k get run -n "$ns" -l "$EXPERIMENT_LABEL=$exp" --sort-by=.metadata.creationTimestamp \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.phase}{"\n"}{end}' | tail -n 1)"
  gate="$(k get chaos -n "$ns" "$exp" \
    -o jsonpath='{.status.conditions[?(@.type=="Gated")].reason}: {.status.conditions[?(@.type=="Gated")].message}')"
  case "${latest#* }" in
    Injecting | Observing | Restoring | Pending) echo "run ${latest% *} is ${latest#* }" ;;
    *) echo "waiting for the gate (${gate:-not evaluated yet})" ;;
  esac
}

# wait_run NS EXPERIMENT SECONDS: until the experiment has a final run,
# printing progress every 10s. Returns non-zero on timeout.
wait_run() {
  local ns="$1" exp="$2" secs="$3" t0=$SECONDS next
  next=$t0
  while [[ -z "$(final_run "$ns" "$exp")" ]]; do
    if ((SECONDS - t0 >= secs)); then
      echo "    $exp: no finished run after ${secs}s; $(progress "$ns" "$exp")" >&2
      return 1
    fi
    if ((SECONDS >= next)); then
      printf '    %3ss  %s: %s\n' "$((SECONDS - t0))" "$exp" "$(progress "$ns" "$exp")"
      next=$((next + 10))
    fi
    sleep 2
  done
  printf '    %3ss  %s: run %s finished\n' "$((SECONDS - t0))" "$exp" "$(final_run "$ns" "$exp")"
}

# evidence NS RUN: the action's key observation, in a few words.
evidence() {
  k get run -n "$1" "$2" -o jsonpath='{.status.observations.recoverySeconds}{"|"}{.status.observations.orderMatches}{"|"}{range .status.observations.removedPods[*]}x{end}{"|"}{.status.observations.connectionsAtFirstRefusal}{"|"}{.status.observations.maxConnectionsHeld}' |
    awk -F'|' '{
      out = ""
      if ($1 != "") out = out sprintf("back in %.1fs ", $1)
      if ($3 != "") out = out sprintf("%s of %d removals as expected ", ($2 == "" ? "?" : $2), length($3))
      if ($4 != "") out = out sprintf("refused at %s connections ", $4)
      else if ($5 != "") out = out sprintf("held %s, no refusal ", $5)
      sub(/ $/, "", out)
      print (out == "" ? "-" : out)
    }'
}

# summary NS EXPERIMENT...: one line per experiment with its first finished run.
summary() {
  local ns="$1" exp run action phase verdict spent
  shift
  printf '\n%-28s %-21s %-10s %-13s %-8s %s\n' EXPERIMENT ACTION PHASE VERDICT SPENT EVIDENCE
  for exp in "$@"; do
    action="$(k get chaos -n "$ns" "$exp" -o jsonpath='{.status.action}')"
    run="$(final_run "$ns" "$exp")"
    if [[ -z "$run" ]]; then
      printf '%-28s %-21s %-10s %-13s %-8s %s\n' "$exp" "${action:--}" "(none)" - - "$(progress "$ns" "$exp")"
      continue
    fi
    IFS='|' read -r phase verdict spent < <(k get run -n "$ns" "$run" \
      -o jsonpath='{.status.phase}{"|"}{.status.verdict}{"|"}{.status.budget.spent}{"\n"}')
    if [[ -n "$spent" ]]; then spent="$(awk -v s="$spent" 'BEGIN { printf "%.2f%%", s * 100 }')"; fi
    printf '%-28s %-21s %-10s %-13s %-8s %s\n' "$exp" "${action:--}" "$phase" "${verdict:--}" "${spent:--}" "$(evidence "$ns" "$run")"
  done
  echo
}

# run_experiments NS FILE: apply FILE's experiments step by step and wait
# for each; print the summary. Returns non-zero if one did not finish.
run_experiments() {
  local ns="$1" file="$2" step steps exps=() exp ok=0
  mapfile -t steps < <(sed -n 's|.*demo\.headroom\.dev/step: *"\([0-9]*\)".*|\1|p' "$file" | sort -un)
  for step in "${steps[@]}"; do
    say "experiment step $step: kubectl apply -f $file -l $STEP_LABEL=$step"
    k apply -f "$file" -l "$STEP_LABEL=$step"
    while read -r exp; do
      [[ -n "$exp" ]] || continue
      exps+=("$exp")
      wait_run "$ns" "$exp" "$DEMO_RUN_TIMEOUT" || ok=1
    done < <(k get chaos -n "$ns" -l "$STEP_LABEL=$step" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  done
  summary "$ns" "${exps[@]}"
  k get run -n "$ns" --sort-by=.metadata.creationTimestamp
  return "$ok"
}

main() {
  say "local cluster (the first run builds Kubernetes from source: ~10 minutes)"
  ./tests/cluster/up.sh
  set -a
  # shellcheck source=/dev/null
  . .cluster/env
  set +a

  build_operator

  say "CRDs, example SLOs and the demo database Secret"
  k apply --server-side --force-conflicts -f crds/ >/dev/null
  k wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
  k apply -f examples/slos.yaml
  k apply -f examples/checkout-db-secret.yaml

  start_operator
  wait_slos "$DEMO_NAMESPACE"

  local status=0
  run_experiments "$DEMO_NAMESPACE" examples/experiments.yaml || status=1
  # The same service as real pods on the real node: what a killed process
  # costs its callers.
  if k get namespace checkout-real >/dev/null 2>&1; then
    say "real pods: kubectl apply -f examples/real-pods.yaml (namespace checkout-real, on real-0)"
    k apply -f examples/real-pods.yaml -l '!demo.headroom.dev/step'
    wait_slos checkout-real
    run_experiments checkout-real examples/real-pods.yaml || status=1
  fi

  if ! curl -fsS "http://$OPERATOR_METRICS_ADDR/" >/dev/null; then
    echo "FAILED: the dashboard did not answer at http://$OPERATOR_METRICS_ADDR/" >&2
    status=1
  fi
  cat <<MSG
Headroom is running.
  dashboard:         http://$OPERATOR_METRICS_ADDR/  (runs, runbooks; JSON API under /api/)
  operator:          http://$OPERATOR_METRICS_ADDR  (/metrics, /healthz)
  Prometheus:        $PROMETHEUS_URL  (alerts: $PROMETHEUS_URL/alerts)
  example service:   $CHECKOUT_URL/admin/state
  kubectl:           export KUBECONFIG=$KUBECONFIG PATH=$PATH_PREPEND:\$PATH
                     kubectl get slo,chaos,run -n $DEMO_NAMESPACE
                     kubectl get run -n $DEMO_NAMESPACE <name> -o yaml   # timeline, evidence, verdict
  burn some budget:  curl -X POST '$CHECKOUT_URL/admin/error-rate?ratio=0.2'
  run one again:     kubectl delete run -n $DEMO_NAMESPACE -l $EXPERIMENT_LABEL=<experiment>
Stop everything with: make cluster-down
MSG
  if ((status)); then
    echo "FAILED: not every experiment finished a run within ${DEMO_RUN_TIMEOUT}s (see the lines above; everything is left running)" >&2
  fi
  return "$status"
}

# Sourcing this file (e.g. to try the steps on another namespace) defines the
# functions without running the demo.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
