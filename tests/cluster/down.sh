#!/usr/bin/env bash
# Stop everything tests/cluster/up.sh started (and an operator a demo started),
# using the pid files in .cluster/pids/. Build caches stay; with --purge the
# .cluster/ directory (etcd and PostgreSQL data, certificates, logs) goes too.
# Idempotent: stopping a stopped cluster is not an error.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
  esac
done
log() { printf '[cluster-down] %s\n' "$*"; }

# ours PID NAME: the pid is alive and still runs the binary up.sh recorded.
ours() {
  local pid="$1" exe
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -f "$C/pids/$2.exe" ]] || return 0
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ "${exe% (deleted)}" == "$(cat "$C/pids/$2.exe")" ]]
}

stop() {
  local name="$1" pidfile="$C/pids/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    # Each part runs in its own session led by that pid: signal the group,
    # so children (e.g. a load generator) go too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 10s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile" "$C/pids/$name.exe"
}

if [[ -d "$C/pids" ]]; then
  # The operator and the example service first, the control plane last.
  for f in "$C"/pids/headroom*.pid; do
    [[ -e "$f" ]] && stop "$(basename "$f" .pid)"
  done
  # The real node before the API server; its pods' leftovers below.
  for name in kubelet kube-proxy containerd node-relay; do
    stop "$name"
  done
  for name in checkout prom-label-proxy prometheus-tls prometheus kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  if [[ -f "$C/pids/postgresql.pid" ]]; then
    PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if ours "$(head -n 1 "$C/pids/postgresql.pid")" postgresql; then
      log "stopping postgresql"
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$C/postgres" -m fast -w -t 20 stop || true
    fi
    stop postgresql
  fi
  # Whatever else up.sh may have recorded.
  for f in "$C"/pids/*.pid; do
    [[ -e "$f" ]] && stop "$(basename "$f" .pid)"
  done
  log "stopped"
else
  log "nothing running"
fi
# What the real node's pods leave behind once containerd and kubelet are
# gone: their processes, mounts, network namespaces, the bridge, iptables rules.
if [[ -d "$C/real-node" ]]; then
  "$ROOT/tests/cluster/real-node.sh" cleanup || log "the real node's cleanup failed (see above)"
fi
rm -f "$C/env"
if ((purge)); then
  rm -rf "$C"
  log "removed $C"
fi
