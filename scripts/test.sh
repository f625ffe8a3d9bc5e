#!/usr/bin/env bash
# Every test Headroom has: lint, unit tests (maths tables, CRD drift), then
# the end-to-end suite against the local control plane started by
# tests/cluster/up.sh. If the cluster cannot start, this fails and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "disk space"
# A run builds several GiB under target/ (debug, every test binary) and the
# cluster's Go builds under ~/.cache/headroom; a full disk fails the linker
# with an error far from its cause, so say it first.
df -h . "${HOME}" | sed 's/^/  /'
avail_kib="$(df -Pk . | awk 'NR==2 {print $4}')"
if (( avail_kib < 8 * 1024 * 1024 )); then
  echo "FAILED: $(( avail_kib / 1024 / 1024 )) GiB free where the build runs; it needs about 8 GiB (target/ and the cluster's binaries)" >&2
  exit 1
fi
# Incremental compilation pays off when editing, not in a one-shot run, and
# doubles target/ (its cache is as big as the artifacts).
export CARGO_INCREMENTAL=0

step "toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lint (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "promtool (Debian's prometheus), for the import corpus test"
# controller/tests/import_corpus.rs compares alert timing with `promtool test
# rules` and fails without it; the cluster step below installs the same
# package, but only after the unit tests.
if ! command -v promtool >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus
fi
promtool --version | head -n 1

step "unit tests, maths tables, CRD drift, import corpus"
cargo test --workspace --exclude headroom-e2e --locked

step "property tests of user input, 20000 cases each (durations, \$window, specs)"
time PROPTEST_CASES=20000 cargo test -p headroom --test fuzz --locked

step "local cluster (tests/cluster/up.sh)"
keep_cluster="${HEADROOM_KEEP_CLUSTER:-}"
if ! ./tests/cluster/up.sh; then
  echo "FAILED: the local cluster did not start; see the messages above and .cluster/logs/" >&2
  exit 1
fi
if [[ -z "$keep_cluster" ]]; then
  trap './tests/cluster/down.sh || true' EXIT
fi

step "the demo's operator, if make demo left one running, is stopped: each test starts its own"
# It watches every namespace, so beside each test's own operator it would
# evaluate the tests' SLOs and start their experiments. Runs are safe with
# two instances (a run is driven by one, see README), but the tests assert
# on their own operator's log and metrics. SIGTERM aborts and restores its
# runs first; `make demo` starts it again.
demo_pid_file=.cluster/pids/headroom.pid
if [[ -f "$demo_pid_file" ]]; then
  demo_pid="$(cat "$demo_pid_file")"
  demo_exe="$(readlink "/proc/$demo_pid/exe" 2>/dev/null || true)"
  if [[ "$demo_pid" =~ ^[0-9]+$ && -f .cluster/pids/headroom.exe ]] && kill -0 "$demo_pid" 2>/dev/null \
    && [[ "${demo_exe% (deleted)}" == "$(cat .cluster/pids/headroom.exe)" ]]; then
    echo "stopping the demo's operator (pid $demo_pid)"
    kill -TERM "$demo_pid"
    for _ in $(seq 1 400); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$demo_pid" 2>/dev/null; then
      echo "FAILED: the demo's operator (pid $demo_pid) did not stop within 40s of SIGTERM" >&2
      exit 1
    fi
  else
    echo "no demo operator running"
  fi
  rm -f "$demo_pid_file" .cluster/pids/headroom.exe
else
  echo "no demo operator running"
fi

step "build the operator binary the end-to-end tests start"
cargo build -p headroom --locked

step "generated rules for examples/ pass promtool"
rules_file="$(mktemp --suffix=.yml)"
./target/debug/headroom rules -f examples/slos.yaml >"$rules_file"
promtool check rules "$rules_file"
rm -f "$rules_file"

step "headroom validate: examples/ pass, a broken file fails naming each problem"
./target/debug/headroom validate -f examples/slos.yaml -f examples/experiments.yaml -f examples/slos-recording-rules.yaml
broken="$(mktemp --suffix=.yaml)"
sed 's/name: checkout-availability$/name: checkout-availability-renamed/' examples/slos.yaml >"$broken"
if validate_out="$(./target/debug/headroom validate -f "$broken" -f examples/experiments.yaml 2>&1)"; then
  echo "FAILED: headroom validate accepted experiments whose SLOs are missing: $validate_out" >&2
  exit 1
fi
grep -q 'spec.slos names checkout-availability' <<<"$validate_out" || { echo "FAILED: headroom validate did not name the missing SLO: $validate_out" >&2; exit 1; }
# The CRD's schema and CEL rules, offline: a misspelt field and a podKill
# with both count and percent are named without a cluster.
sed -e 's/^  duration: /  durration: /' -e 's/^      count: 1$/      count: 1\n      percent: 10/' examples/experiments.yaml >"$broken"
if validate_out="$(./target/debug/headroom validate -f examples/slos.yaml -f "$broken" 2>&1)"; then
  echo "FAILED: headroom validate accepted a misspelt field and a podKill with count and percent: $validate_out" >&2
  exit 1
fi
for needle in 'spec.durration: unknown field' 'spec.action.podKill: Invalid value: "object": set exactly one of spec.action.podKill.count or spec.action.podKill.percent'; do
  grep -qF "$needle" <<<"$validate_out" || { echo "FAILED: headroom validate did not say $needle: $validate_out" >&2; exit 1; }
done
rm -f "$broken"

step "browser test dependencies (playwright-core, driving Debian's Chromium)"
npm ci --prefix tests/browser --no-audit --no-fund

step "helm, built from its Go module (cached), for the chart's tests (tests/e2e/helm.rs)"
HELM_BIN="$(./tests/cluster/helm.sh)"
export HELM_BIN
"$HELM_BIN" version --short

step "end-to-end tests (real kube-apiserver, Prometheus, PostgreSQL, Chromium)"
# Tests share one cluster; each uses its own namespace. Two threads keep the
# 2-core machine responsive for the control plane.
cargo test -p headroom-e2e --test e2e --locked -- --test-threads=2 --skip disruptive:: --skip node_faults:: --skip instances::cluster_wide

step "end-to-end tests that restart the kube-apiserver, cordon nodes or run a cluster-wide operator (alone: they touch what every test uses)"
cargo test -p headroom-e2e --test e2e --locked -- --test-threads=1 disruptive:: node_faults:: instances::cluster_wide

step "kubectl headroom status (the CLI as a kubectl plugin)"
set -a; . .cluster/env; set +a
plugin_dir="$(mktemp -d)"
ln -s "$PWD/target/debug/headroom" "$plugin_dir/kubectl-headroom"
status_out="$(PATH="$plugin_dir:$PATH" "$KUBECTL" headroom status)"
rm -rf "$plugin_dir"
grep -q '^NAMESPACE *SLO ' <<<"$status_out" || { echo "FAILED: kubectl headroom status printed no SLO table: $status_out" >&2; exit 1; }
grep -q '^NAMESPACE *EXPERIMENT ' <<<"$status_out" || { echo "FAILED: kubectl headroom status printed no experiment table" >&2; exit 1; }
echo "ok: kubectl headroom status"

step "headroom import output is accepted by the API server"
set -a
# shellcheck source=/dev/null
. .cluster/env
set +a
for format in sloth openslo pyrra; do
  ./target/debug/headroom import "$format" "examples/import/$format.yaml" \
    | "$KUBECTL" create --dry-run=server -n default -f -
done

step "deploy/ and examples/ against the API server: dry run, RBAC of the operator's account"
./scripts/deploy-check.sh
