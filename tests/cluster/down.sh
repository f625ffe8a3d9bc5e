#!/usr/bin/env bash
# Stop everything tests/cluster/up.sh started. Caches stay; with --purge the
# .cluster/ directory (etcd data, certificates, logs) goes too.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
[[ -d "$C/pids" ]] || { echo "[cluster-down] nothing running"; exit 0; }

stop() {
  local name="$1" pidfile="$C/pids/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[cluster-down] stopping $name (pid $pid)"
    # Each part was started in its own session: signal the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# Reverse order of start-up; the operator first if a demo started one.
for name in headroom headroom-2 checkout prometheus kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done
if [[ -f "$C/pids/postgresql.pid" ]]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  echo "[cluster-down] stopping postgresql"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$C/postgres" -m fast -w stop >/dev/null 2>&1 || stop postgresql
  rm -f "$C/pids/postgresql.pid"
fi
if [[ "${1:-}" == "--purge" ]]; then
  rm -rf "$C"
  echo "[cluster-down] removed $C"
fi
exit 0
