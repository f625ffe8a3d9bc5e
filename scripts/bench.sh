#!/usr/bin/env bash
# make bench: performance figures on the local cluster with the real
# Prometheus, printed as tables (no pass/fail thresholds: figures).
#   BENCH_SLOS=100,1000     SLO counts to evaluate (each with recording
#                           rules, and with direct queries up to
#                           BENCH_DIRECT_MAX=100), and the idle cost with
#                           N/10 experiments scheduled but not due.
#                           10000 is accepted but, on 2 cores, Prometheus
#                           cannot evaluate the ~130,000 rules it makes in
#                           time and the run stalls waiting for them.
#   BENCH_RULE_INTERVAL=60s rule evaluation interval of the benchmark's own
#                           Prometheus
#   BENCH_PROMETHEUS_TIMEOUT=30s  the operator's --prometheus-timeout
#   BENCH_ABORT_RUNS=20     runs for the abort-reaction distribution
# Runs alone: thousands of SLOs load the API server and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d "$HOME/.cargo/bin" ]] && PATH="$HOME/.cargo/bin:$PATH"

echo "==> local cluster"
./tests/cluster/up.sh
echo "==> release build of the operator (the figures are for it)"
cargo build --release --locked -p headroom
cargo build --locked -p headroom
export HEADROOM_BIN="$PWD/target/release/headroom"
echo "==> benchmarks (several minutes)"
cargo test --locked -p headroom-e2e --test e2e -- --ignored --nocapture --test-threads=1 bench::
