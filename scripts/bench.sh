#!/usr/bin/env bash
# make bench: performance figures on the local cluster with the real
# Prometheus, printed as tables (no pass/fail thresholds: figures).
#   BENCH_SLOS=100,1000,10000  SLO counts to evaluate (each with
#                           recording rules, and with direct queries up to
#                           BENCH_DIRECT_MAX=100), and the idle cost with
#                           N/10 experiments scheduled but not due.
#   BENCH_RULE_INTERVAL=60s rule evaluation interval of the benchmark's own
#                           Prometheus
#   BENCH_EXPORTED_FROM=10000  from this many SLOs the recorded series are
#                           served by the benchmark instead of evaluated
#                           from the operator's rules (280,000 rules at
#                           10,000 SLOs are more than 2 cores evaluate);
#                           the table's row says so
#   BENCH_PROMETHEUS_TIMEOUT=30s  the operator's --prometheus-timeout
#   BENCH_ABORT_RUNS=20     runs for the abort-reaction distribution
#   BENCH_SPEND_CAP_RUNS=10 runs for the spend-cap overshoot (spent / cap)
#   BENCH_RULE_SERVICES=100,1000  services (one SLO each) for the rule cost
#                           side by side with Sloth (the cluster's Prometheus
#                           binary, nothing else of it; ~45 minutes
#                           on 2 cores for both sizes)
#   BENCH_RULE_INSTANCES=3  instances per service (x 4 status codes)
#   BENCH_RULE_CYCLES=2     evaluation cycles measured per rule set
# Runs alone: thousands of SLOs load the API server and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && PATH="$HOME/.cargo/bin:$PATH"

started=$(date +%s)
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Every benchmark appends its headline figures here; the last step prints
# them as one table.
mkdir -p target
export BENCH_TABLE="$PWD/target/bench-table.jsonl"
: >"$BENCH_TABLE"

echo "==> local cluster"
./tests/cluster/up.sh
echo "==> release build of the operator (the figures are for it)"
cargo build --release --locked -p headroom
cargo build --locked -p headroom
export HEADROOM_BIN="$PWD/target/release/headroom"
# The benchmark's own Prometheus: Go's default GOGC, and a soft bound on
# its heap so that it cannot swap the machine (with GOGC=400 and 10,000
# SLOs' rules it grew to 21 GB).
export GOGC="${BENCH_PROMETHEUS_GOGC:-100}"
export GOMEMLIMIT="${BENCH_PROMETHEUS_GOMEMLIMIT:-12GiB}"
# A benchmark that fails does not stop the others: a run takes hours, and
# the table is printed with what completed; the run then fails, naming
# what did not.
failed=()
benchmarks() {
  local name="$1"
  shift
  if ! cargo test --locked -p headroom-e2e --test e2e -- --ignored --nocapture --test-threads=1 "$@"; then
    failed+=("$name")
  fi
}
echo "==> benchmarks (several minutes)"
benchmarks "bench:: (abort reaction, SLO evaluation, spend cap)" bench::
echo "==> Sloth for the side-by-side rule cost (built once, cached)"
SLOTH_BIN="$(./tests/cluster/sloth.sh)"
export SLOTH_BIN
echo "==> rule cost side by side with Sloth (the cluster's Prometheus binary; one Prometheus at a time)"
benchmarks "bench_rules:: (rule cost beside Sloth)" bench_rules::
echo "==> the table (also in $BENCH_TABLE)"
cargo test --locked -p headroom-e2e --test e2e -- --ignored --nocapture --test-threads=1 bench_table::print_the_table
echo "make bench on commit $commit ($(git status --porcelain 2>/dev/null | grep -q . && echo 'with local changes' || echo 'clean tree')), $(nproc) cores, wall time $(( $(date +%s) - started ))s"
if ((${#failed[@]})); then
  printf 'make bench: FAILED, the table lacks their figures: %s\n' "${failed[@]}" >&2
  exit 1
fi
