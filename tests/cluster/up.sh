#!/usr/bin/env bash
# Start Headroom's local cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (built from the k8s.io/kubernetes Go module), kwok fake nodes,
# Prometheus and PostgreSQL (Debian packages), and the example service.
#
# Idempotent: a part already running is left alone. Everything lives under
# .cluster/ at the repo root; binaries are cached by version under
# ${HEADROOM_CACHE:-~/.cache/headroom}. If a part cannot start, this exits
# non-zero naming the part and showing the end of its log.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/tests/cluster"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
K8S_VERSION="1.36.3"
KWOK_VERSION="0.8.0"
K8S_BIN="$CACHE/k8s-v$K8S_VERSION"
KWOK_BIN="$CACHE/kwok-v$KWOK_VERSION"

ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=26443
KCM_PORT=20257
SCHEDULER_PORT=20259
KWOK_PORT=20247
PROMETHEUS_PORT=29090
POSTGRES_PORT=25432
CHECKOUT_PORT=28080
OPERATOR_METRICS="127.0.0.1:9464"
POSTGRES_MAX_CONNECTIONS="${POSTGRES_MAX_CONNECTIONS:-20}"
CHECKOUT_DB_PASSWORD="checkout-local"

mkdir -p "$C"/{logs,pids,pki,rules,prometheus}
log() { printf '[cluster-up] %s\n' "$*"; }

fail() {
  local part="$1" why="$2" logfile="${3:-}"
  echo "[cluster-up] FAILED: $part: $why" >&2
  if [[ -n "$logfile" && -f "$logfile" ]]; then
    echo "[cluster-up] last lines of $logfile:" >&2
    tail -n 25 "$logfile" >&2
  fi
  exit 1
}

running() {
  local pidfile="$C/pids/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start NAME CMD...: run in the background with its own log and pid file.
start() {
  local name="$1"; shift
  if running "$name"; then
    log "$name already running (pid $(cat "$C/pids/$name.pid"))"
    return 0
  fi
  log "starting $name"
  setsid "$@" >"$C/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$C/pids/$name.pid"
}

# wait_for NAME SECONDS CMD...: poll until CMD succeeds or the part dies.
wait_for() {
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$C/pids/$name.pid" ]] && ! running "$name"; then
      fail "$name" "process exited during start-up" "$C/logs/$name.log"
    fi
    if ((SECONDS >= deadline)); then
      fail "$name" "not ready after ${secs}s" "$C/logs/$name.log"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
[[ -x /usr/bin/prometheus ]] || need_pkgs+=(prometheus)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v go >/dev/null || need_pkgs+=(golang-go)
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$C/logs/apt.log" 2>&1 || fail apt "apt-get update failed" "$C/logs/apt.log"
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >>"$C/logs/apt.log" 2>&1 \
    || fail apt "apt-get install ${need_pkgs[*]} failed" "$C/logs/apt.log"
  # The Debian packages start their own services where an init system runs;
  # ours are private instances on other ports, so stop those if present.
  service prometheus stop >/dev/null 2>&1 || true
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"

# ---------------------------------------------------------------- binaries
if [[ ! -x "$K8S_BIN/kube-apiserver" || ! -x "$K8S_BIN/kube-controller-manager" \
   || ! -x "$K8S_BIN/kube-scheduler" || ! -x "$K8S_BIN/etcd" || ! -x "$K8S_BIN/kubectl" ]]; then
  log "building Kubernetes v$K8S_VERSION control plane, etcd and kubectl from their Go modules"
  log "(first run only: about 10 minutes on 2 cores; cached in $K8S_BIN)"
  mkdir -p "$K8S_BIN"
  (
    cd "$HERE/k8s"
    go build -trimpath -ldflags="-s -w" -o "$K8S_BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl
    go build -trimpath -ldflags="-s -w" -o "$K8S_BIN/etcd" go.etcd.io/etcd/server/v3
  ) >"$C/logs/build-k8s.log" 2>&1 || fail build "go build of the control plane failed" "$C/logs/build-k8s.log"
fi
if [[ ! -x "$KWOK_BIN/kwok" ]]; then
  log "building kwok v$KWOK_VERSION (first run only)"
  mkdir -p "$KWOK_BIN"
  GOBIN="$KWOK_BIN" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" \
    >"$C/logs/build-kwok.log" 2>&1 || fail build "go install of kwok failed" "$C/logs/build-kwok.log"
fi
KUBECTL="$K8S_BIN/kubectl"
export KUBECONFIG="$C/kubeconfig"

# ---------------------------------------------------------------- PKI
P="$C/pki"
if [[ ! -f "$P/admin.crt" ]]; then
  log "generating certificates and service-account keys"
  (
    cd "$P"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=headroom-local-ca"
    cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=headroom-admin"
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >"$C/logs/pki.log" 2>&1 || fail pki "openssl failed" "$C/logs/pki.log"
fi
cat >"$C/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: headroom-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $P/ca.crt
users:
- name: admin
  user:
    client-certificate: $P/admin.crt
    client-key: $P/admin.key
contexts:
- name: headroom-local
  context: { cluster: headroom-local, user: admin }
current-context: headroom-local
EOF

# ---------------------------------------------------------------- etcd
start etcd "$K8S_BIN/etcd" --name default --data-dir "$C/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# ---------------------------------------------------------------- apiserver
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --allow-privileged=true
wait_for kube-apiserver 90 "$KUBECTL" get --raw /readyz

# ---------------------------------------------------------------- controller-manager, scheduler
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"

# ---------------------------------------------------------------- kwok and fake nodes
# kwok's own stage definitions (shipped in its Go module) make nodes Ready
# with lease heartbeats, and pods scheduled to them Running and Ready.
KWOK_STAGES="$(cd "$HERE/k8s" && go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage"
if [[ ! -d "$KWOK_STAGES" ]]; then
  (cd "$HERE/k8s" && go mod download -x "sigs.k8s.io/kwok@v$KWOK_VERSION") >"$C/logs/kwok-stages.log" 2>&1 \
    || fail kwok "downloading kwok's stage definitions failed" "$C/logs/kwok-stages.log"
fi
kwok_configs=()
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  [[ -f "$KWOK_STAGES/$f" ]] || fail kwok "stage file $KWOK_STAGES/$f missing"
  kwok_configs+=(--config "$KWOK_STAGES/$f")
done
start kwok "$KWOK_BIN/kwok" --kubeconfig "$KUBECONFIG" "${kwok_configs[@]}" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 \
  --node-ip 10.0.0.1 --cidr 10.0.0.1/16 \
  --server-address "127.0.0.1:$KWOK_PORT"
wait_for kwok 30 curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
"$KUBECTL" apply -f "$HERE/manifests/nodes.yaml" >"$C/logs/nodes.log" 2>&1 || fail nodes "applying fake nodes failed" "$C/logs/nodes.log"
wait_for kwok 60 "$KUBECTL" wait --for=condition=Ready node --all --timeout=2s

# ---------------------------------------------------------------- PostgreSQL
PGDATA="$C/postgres"
if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
  log "initialising PostgreSQL in $PGDATA"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" --auth-host=scram-sha-256 --auth-local=trust -U postgres \
    >"$C/logs/initdb.log" 2>&1 || fail postgresql "initdb failed" "$C/logs/initdb.log"
fi
mkdir -p "$C/pgsocket" && chown postgres:postgres "$C/pgsocket"
if ! running postgresql; then
  log "starting postgresql (max_connections=$POSTGRES_MAX_CONNECTIONS)"
  touch "$C/logs/postgresql.log" && chown postgres:postgres "$C/logs/postgresql.log"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$C/logs/postgresql.log" -w -t 30 start \
    -o "-p $POSTGRES_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$C/pgsocket -c max_connections=$POSTGRES_MAX_CONNECTIONS -c superuser_reserved_connections=2 -c fsync=off" \
    >"$C/logs/pg_ctl.log" 2>&1 || fail postgresql "pg_ctl start failed" "$C/logs/postgresql.log"
  head -n 1 "$PGDATA/postmaster.pid" >"$C/pids/postgresql.pid"
fi
wait_for postgresql 30 "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$POSTGRES_PORT"
psql_admin() { runuser -u postgres -- psql -h "$C/pgsocket" -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ "$(psql_admin -c "select 1 from pg_roles where rolname='checkout'")" != "1" ]]; then
  psql_admin -c "create role checkout login password '$CHECKOUT_DB_PASSWORD'" >/dev/null
  psql_admin -c "create database checkout owner checkout" >/dev/null
fi
DATABASE_URL="postgres://checkout:$CHECKOUT_DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/checkout"

# ---------------------------------------------------------------- Prometheus
cat >"$C/prometheus/prometheus.yml" <<EOF
# Generated by tests/cluster/up.sh. Fast intervals so tests see changes in seconds.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $C/rules/*.yml
scrape_configs:
  - job_name: checkout
    static_configs: [{ targets: ["127.0.0.1:$CHECKOUT_PORT"] }]
  - job_name: headroom
    static_configs: [{ targets: ["$OPERATOR_METRICS"] }]
EOF
start prometheus /usr/bin/prometheus \
  --config.file "$C/prometheus/prometheus.yml" \
  --storage.tsdb.path "$C/prometheus/data" \
  --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" \
  --web.enable-lifecycle --web.enable-admin-api
wait_for prometheus 30 curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"

# ---------------------------------------------------------------- example service
"$KUBECTL" apply -f "$HERE/manifests/checkout.yaml" >"$C/logs/checkout-manifests.log" 2>&1 \
  || fail checkout "applying the checkout namespace and Deployment failed" "$C/logs/checkout-manifests.log"
if ! running checkout; then
  log "building the example service (cargo build --release -p checkout)"
  (cd "$ROOT" && cargo build --release -q -p checkout) >"$C/logs/build-checkout.log" 2>&1 \
    || fail checkout "cargo build -p checkout failed" "$C/logs/build-checkout.log"
  start checkout "$ROOT/target/release/checkout" \
    --listen "127.0.0.1:$CHECKOUT_PORT" --kubeconfig "$KUBECONFIG" \
    --namespace checkout --deployment checkout --database-url "$DATABASE_URL"
fi
wait_for checkout 30 curl -fsS "http://127.0.0.1:$CHECKOUT_PORT/metrics"
wait_for checkout 60 "$KUBECTL" -n checkout rollout status deployment/checkout --timeout=2s

# ---------------------------------------------------------------- env
cat >"$C/env" <<EOF
KUBECONFIG=$C/kubeconfig
KUBECTL=$KUBECTL
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
PROMETHEUS_RULES_DIR=$C/rules
DATABASE_URL=$DATABASE_URL
POSTGRES_MAX_CONNECTIONS=$POSTGRES_MAX_CONNECTIONS
CHECKOUT_URL=http://127.0.0.1:$CHECKOUT_PORT
OPERATOR_METRICS_ADDR=$OPERATOR_METRICS
EOF
log "ready: $("$KUBECTL" get nodes --no-headers | wc -l) kwok nodes; env in $C/env"
