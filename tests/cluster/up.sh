#!/usr/bin/env bash
# Start Headroom's local cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl (built from their Go modules), kwok fake nodes,
# a real node (tests/cluster/real-node.sh: kubelet, kube-proxy, containerd),
# Prometheus and PostgreSQL (Debian packages), and the example service.
#
# Idempotent: a part already running is left alone. Everything lives under
# .cluster/ at the repo root; binaries are cached by version under
# ${HEADROOM_CACHE:-~/.cache/headroom}. If a part cannot start, this exits
# non-zero naming the part and showing the end of its log.
#
# Beside the plain Prometheus, the same data is served as users' stacks do:
# a second Prometheus (remote-reading the first) behind basic auth over TLS
# under the path prefix /prometheus, and prom-label-proxy (built from its Go
# module) before it, enforcing the tenant label `job` from X-Scope-OrgID.
#
# Environment:
#   POSTGRES_MAX_CONNECTIONS  PostgreSQL max_connections (default 28: 20 for
#                             the tests and the demo, and the 8 the real
#                             node's checkout pods may hold, role checkout_real)
#   CHECKOUT_LOAD_RPS         passed to the example service as --load-rps
#   HEADROOM_SKIP_CHECKOUT=1  start everything but the example service
#   HEADROOM_SKIP_REAL_NODE=1 start everything but the real node (real-node.sh)
#   HEADROOM_CACHE            where built binaries are cached
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/tests/cluster"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"

# Versions come from the wrapper module, so go.mod is the one place to bump them.
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/k8s/go.mod"; }
K8S_VERSION="$(modver k8s.io/kubernetes)"       # e.g. v1.36.3
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"  # e.g. v3.6.8
KWOK_VERSION="v0.8.0"
K8S_BIN="$CACHE/k8s-$K8S_VERSION"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$CACHE/kwok-$KWOK_VERSION"
LABEL_PROXY_VERSION="v0.11.1"
# Built from its Go module: Debian's Prometheus (2.42) is built without
# Kubernetes service discovery, which finds the real node's checkout pods.
PROMETHEUS_VERSION="v0.316.0" # Prometheus 3.16
LABEL_PROXY_BIN="$CACHE/prom-label-proxy-$LABEL_PROXY_VERSION"

ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=26443
KCM_PORT=20257
SCHEDULER_PORT=20259
KWOK_PORT=20247
PROMETHEUS_PORT=29090
PROMETHEUS_TLS_PORT=29091
LABEL_PROXY_PORT=29092
# The TLS Prometheus's one user. A fixed local test password, as the
# database's; the bcrypt hash below is of it (Prometheus's web config wants
# the hash; made once with golang.org/x/crypto/bcrypt, cost 10).
PROMETHEUS_AUTH_USER="headroom"
PROMETHEUS_AUTH_PASSWORD="headroom-local-prometheus"
PROMETHEUS_AUTH_BCRYPT='$2a$10$5keewhf1taqK.EYjMMTwgeZha2kUHimx0Tnb1/5f9NcSfhAtZdLVu'
POSTGRES_PORT=25432
CHECKOUT_PORT=28080
OPERATOR_METRICS="127.0.0.1:9464"
# checkout-real's pods (real-node.sh) connect as their own role, capped at
# CHECKOUT_REAL_DB_LIMIT sessions; max_connections is raised by as much, so
# the tests and the demo keep the 20 slots they were written against.
CHECKOUT_REAL_DB_LIMIT=8
POSTGRES_MAX_CONNECTIONS="${POSTGRES_MAX_CONNECTIONS:-$((20 + CHECKOUT_REAL_DB_LIMIT))}"
CHECKOUT_DB_PASSWORD="checkout-local"

mkdir -p "$C"/{logs,pids,pki,rules,prometheus,prometheus-tls}
# log, fail, running, start, wait_for, build, setup_go, gobuild
. "$HERE/lib.sh"

# One up.sh at a time (tests and the demo may both call it).
exec 9>"$C/.lock"
flock -w 120 9 || fail lock "another tests/cluster/up.sh holds $C/.lock (see: fuser $C/.lock)"

[[ "$POSTGRES_MAX_CONNECTIONS" =~ ^[0-9]+$ && "$POSTGRES_MAX_CONNECTIONS" -ge 5 ]] \
  || fail postgresql "POSTGRES_MAX_CONNECTIONS must be a number >= 5, got '$POSTGRES_MAX_CONNECTIONS'"

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v flock >/dev/null || need_pkgs+=(util-linux)
[[ -x /usr/bin/prometheus ]] || need_pkgs+=(prometheus)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
# The dashboard's browser test drives Debian's Chromium (headless).
[[ -x /usr/bin/chromium ]] || need_pkgs+=(chromium)
command -v node >/dev/null || need_pkgs+=(nodejs npm)
[[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
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
  service postgresql stop >/dev/null 2>&1 || true
fi
PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
setup_go

# ---------------------------------------------------------------- binaries
mkdir -p "$K8S_BIN" "$ETCD_BIN" "$KWOK_BIN"
est="6-10 minutes on 2 cores"
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  k8s_cmd_ok "$cmd" --version && continue
  build "$cmd $K8S_VERSION" "$est" "$C/logs/build-k8s.log" \
    gobuild "$K8S_BIN/$cmd" "$K8S_LDFLAGS" "k8s.io/kubernetes/cmd/$cmd"
  est="1-3 minutes"  # the later ones share most packages
done
if ! k8s_cmd_ok kubectl version --client; then
  build "kubectl $K8S_VERSION" "2 minutes" "$C/logs/build-k8s.log" \
    gobuild "$K8S_BIN/kubectl" "$K8S_LDFLAGS" k8s.io/kubernetes/cmd/kubectl
fi
if [[ ! -x "$ETCD_BIN/etcd" ]]; then
  build "etcd $ETCD_VERSION" "1 minute" "$C/logs/build-etcd.log" \
    gobuild "$ETCD_BIN/etcd" "-s -w" go.etcd.io/etcd/server/v3
fi
if [[ ! -x "$KWOK_BIN/kwok" ]]; then
  build "kwok $KWOK_VERSION" "2 minutes" "$C/logs/build-kwok.log" \
    env GOBIN="$KWOK_BIN" "$GO" install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if [[ ! -x "$LABEL_PROXY_BIN/prom-label-proxy" ]]; then
  build "prom-label-proxy $LABEL_PROXY_VERSION" "1 minute" "$C/logs/build-prom-label-proxy.log" \
    env GOBIN="$LABEL_PROXY_BIN" "$GO" install -trimpath -ldflags="-s -w" \
    "github.com/prometheus-community/prom-label-proxy@$LABEL_PROXY_VERSION"
fi
PROMETHEUS_BIN="$(HEADROOM_CACHE="$CACHE" "$HERE/go-tool.sh" prometheus \
  github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION")" \
  || fail prometheus "building Prometheus $PROMETHEUS_VERSION from its Go module failed" "$C/logs/build-prometheus.log"
# kwok's own stage definitions (from its module): nodes become Ready and keep
# a lease heartbeat; pods bound to them become Running and Ready, complete,
# and are removed when deleted -- what kwokctl configures by default.
KWOK_STAGES="$KWOK_BIN/stages"
if [[ ! -f "$KWOK_STAGES/pod-delete.yaml" ]]; then
  kwok_src="$(cd /tmp && "$GO" mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" 2>"$C/logs/kwok-stages.log" \
    | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')" || true
  [[ -d "$kwok_src/kustomize/stage" ]] || fail kwok "cannot find kwok's stage definitions (go mod download sigs.k8s.io/kwok@$KWOK_VERSION)" "$C/logs/kwok-stages.log"
  mkdir -p "$KWOK_STAGES"
  cp "$kwok_src"/kustomize/stage/node/fast/node-initialize.yaml \
     "$kwok_src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$kwok_src"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$KWOK_STAGES/"
fi
KUBECTL="$K8S_BIN/kubectl"
export KUBECONFIG="$C/kubeconfig"

# ---------------------------------------------------------------- PKI
P="$C/pki"
pki_ok=1
for f in ca.crt apiserver.crt admin.crt front-proxy-ca.crt front-proxy-client.crt sa.key sa.pub; do
  [[ -s "$P/$f" ]] || pki_ok=0
done
if ((!pki_ok)); then
  log "generating certificates and service-account keys"
  (
    set -e
    cd "$P"
    ca() { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2"; }
    # cert NAME CA SUBJECT EXTENSIONS
    cert() {
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$3"
      printf '%b\n' "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -out "$1.crt" -days 3650 -extfile "$1.ext"
    }
    ca ca headroom-local-ca
    ca front-proxy-ca headroom-local-front-proxy-ca
    cert apiserver ca "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth"
    cert admin ca "/O=system:masters/CN=headroom-admin" "extendedKeyUsage=clientAuth"
    cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
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
start etcd "$ETCD_BIN/etcd" --name default --data-dir "$C/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# ---------------------------------------------------------------- apiserver
# The real node's kubelet (real-node.sh) is reached at its InternalIP (its
# name is in no DNS) with a system:masters client certificate, for
# `kubectl logs` and `exec` there.
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --endpoint-reconciler-type none \
  --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --client-ca-file "$P/ca.crt" \
  --requestheader-client-ca-file "$P/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$P/front-proxy-client.crt" --proxy-client-key-file "$P/front-proxy-client.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --kubelet-client-certificate "$P/admin.crt" --kubelet-client-key "$P/admin.key" \
  --authorization-mode Node,RBAC \
  --allow-privileged=true
wait_for kube-apiserver 90 "$KUBECTL" get --raw /readyz

# ---------------------------------------------------------------- controller-manager, scheduler
# Every controller except those that need a cloud provider or a pod network.
# A long node-monitor grace period: after an API server restart (the
# disruptive tests) kwok's leases lapse for a while, and once the node
# lifecycle controller has set a pod's Ready to False, kwok never sets it
# back, which would take the example service out of service for good.
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --node-monitor-grace-period 5m \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller'
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"

# ---------------------------------------------------------------- kwok and fake nodes
start kwok "$KWOK_BIN/kwok" --kubeconfig "$KUBECONFIG" \
  --config "$KWOK_STAGES/node-initialize.yaml" --config "$KWOK_STAGES/node-heartbeat-with-lease.yaml" \
  --config "$KWOK_STAGES/pod-ready.yaml" --config "$KWOK_STAGES/pod-complete.yaml" \
  --config "$KWOK_STAGES/pod-delete.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 \
  --node-ip 10.0.0.1 --cidr 10.0.0.1/16 \
  --server-address "127.0.0.1:$KWOK_PORT"
wait_for kwok 30 curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
"$KUBECTL" apply -f "$HERE/manifests/nodes.yaml" >"$C/logs/nodes.log" 2>&1 \
  || fail nodes "applying fake nodes failed" "$C/logs/nodes.log"
wait_for kwok 60 "$KUBECTL" wait --for=condition=Ready node -l type=kwok --timeout=2s

# ---------------------------------------------------------------- PostgreSQL
# A private cluster owned by the postgres user (PostgreSQL refuses to run as root).
PGDATA="$C/postgres"
if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
  log "initialising PostgreSQL in ${PGDATA#"$ROOT"/}"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" --auth-host=scram-sha-256 --auth-local=trust -U postgres \
    >"$C/logs/initdb.log" 2>&1 || fail postgresql "initdb failed" "$C/logs/initdb.log"
fi
mkdir -p "$C/pgsocket" && chown postgres:postgres "$C/pgsocket"
touch "$C/logs/postgresql.log" && chown postgres:postgres "$C/logs/postgresql.log"
psql_admin() { runuser -u postgres -- "$PG_BIN/psql" -h "$C/pgsocket" -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
pg_ctl() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$C/logs/postgresql.log" "$@" 9>&-; }
if running postgresql && [[ "$(psql_admin -c 'show max_connections' 2>/dev/null)" != "$POSTGRES_MAX_CONNECTIONS" ]]; then
  log "restarting postgresql for max_connections=$POSTGRES_MAX_CONNECTIONS"
  pg_ctl -m fast -w stop >>"$C/logs/pg_ctl.log" 2>&1 || true
  rm -f "$C/pids/postgresql.pid"
fi
if ! running postgresql; then
  log "starting postgresql (max_connections=$POSTGRES_MAX_CONNECTIONS)"
  pg_ctl -w -t 30 start \
    -o "-p $POSTGRES_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$C/pgsocket -c max_connections=$POSTGRES_MAX_CONNECTIONS -c superuser_reserved_connections=2 -c fsync=off" \
    >"$C/logs/pg_ctl.log" 2>&1 || fail postgresql "pg_ctl start failed" "$C/logs/postgresql.log"
  head -n 1 "$PGDATA/postmaster.pid" >"$C/pids/postgresql.pid"
  echo "$PG_BIN/postgres" >"$C/pids/postgresql.exe"
fi
wait_for postgresql 30 "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$POSTGRES_PORT"
if [[ "$(psql_admin -c "select 1 from pg_roles where rolname='checkout'")" != "1" ]]; then
  psql_admin -c "create role checkout login password '$CHECKOUT_DB_PASSWORD'" >/dev/null
fi
# The real node's checkout pods: a role of their own, so the tests that count
# role checkout's sessions (the modelled pool) do not see them.
if [[ "$(psql_admin -c "select 1 from pg_roles where rolname='checkout_real'")" != "1" ]]; then
  psql_admin -c "create role checkout_real login password '$CHECKOUT_DB_PASSWORD'" >/dev/null
fi
psql_admin -c "alter role checkout_real connection limit $CHECKOUT_REAL_DB_LIMIT" >/dev/null
if [[ "$(psql_admin -c "select 1 from pg_database where datname='checkout'")" != "1" ]]; then
  psql_admin -c "create database checkout owner checkout" >/dev/null
fi
psql_admin -c "grant connect on database checkout to checkout_real" >/dev/null
DATABASE_URL="postgres://checkout:$CHECKOUT_DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/checkout"

# ---------------------------------------------------------------- Prometheus
# Rules: write *.yml into .cluster/rules/, then run tests/cluster/reload-prometheus.sh.
cat >"$C/prometheus/prometheus.yml.new" <<EOF
# Generated by tests/cluster/up.sh. Fast intervals so tests see changes in seconds.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $C/rules/*.yml
scrape_configs:
  - job_name: checkout
    static_configs: [{ targets: ["127.0.0.1:$CHECKOUT_PORT"] }]
  - job_name: headroom
    static_configs: [{ targets: ["$OPERATOR_METRICS"] }]
  # The real node's checkout pods (real-node.sh), found as kube-prometheus
  # finds pods: by Kubernetes service discovery, each pod a target at its IP
  # on the node's bridge, labelled with its namespace and name.
  - job_name: checkout-real
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: $KUBECONFIG
        namespaces: { names: [checkout-real] }
        selectors: [{ role: pod, label: app=checkout }]
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: http
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
  # Their callers' view: real-node.sh's load generator, which sends its
  # requests through the Service's ClusterIP.
  - job_name: checkout-real-load
    static_configs: [{ targets: ["127.0.0.1:28082"] }]
EOF
config_changed=0
cmp -s "$C/prometheus/prometheus.yml.new" "$C/prometheus/prometheus.yml" || config_changed=1
mv "$C/prometheus/prometheus.yml.new" "$C/prometheus/prometheus.yml"
if running prometheus && ((config_changed)); then
  "$HERE/reload-prometheus.sh" >/dev/null || fail prometheus "reloading the changed configuration failed" "$C/logs/prometheus.log"
fi
start prometheus "$PROMETHEUS_BIN" \
  --config.file "$C/prometheus/prometheus.yml" \
  --storage.tsdb.path "$C/prometheus/data" \
  --storage.tsdb.retention.time 1d \
  --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" \
  --web.enable-lifecycle --web.enable-admin-api
wait_for prometheus 30 curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"

# ---------------------------------------------------------------- Prometheus behind auth, TLS and a tenant proxy
# Its own CA, so a client given only the system roots (or the cluster's CA)
# is refused, as by a real one.
PT="$C/prometheus-tls"
if [[ ! -s "$PT/ca.crt" || ! -s "$PT/server.crt" ]]; then
  log "generating the TLS Prometheus's certificates"
  (
    set -e
    cd "$PT"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=headroom-local-prometheus-ca"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=prometheus"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext
    chmod 600 ./*.key
  ) >"$C/logs/pki-prometheus-tls.log" 2>&1 || fail prometheus-tls "openssl failed" "$C/logs/pki-prometheus-tls.log"
fi
cat >"$PT/web.yml" <<EOF
tls_server_config:
  cert_file: $PT/server.crt
  key_file: $PT/server.key
basic_auth_users:
  $PROMETHEUS_AUTH_USER: '$PROMETHEUS_AUTH_BCRYPT'
EOF
# The credentials as a mounted Secret holds them (the tests read this file).
printf '%s:%s\n' "$PROMETHEUS_AUTH_USER" "$PROMETHEUS_AUTH_PASSWORD" >"$PT/basic-auth"
chmod 600 "$PT/basic-auth"
# No scraping and no rules of its own: it answers from the first one's data
# (recorded series included) through remote read, so both show the same.
cat >"$PT/prometheus.yml" <<EOF
# Generated by tests/cluster/up.sh: the local Prometheus's data behind basic auth over TLS.
global:
  evaluation_interval: 1s
remote_read:
  - url: http://127.0.0.1:$PROMETHEUS_PORT/api/v1/read
    read_recent: true
EOF
start prometheus-tls /usr/bin/prometheus \
  --config.file "$PT/prometheus.yml" \
  --web.config.file "$PT/web.yml" \
  --storage.tsdb.path "$PT/data" \
  --storage.tsdb.retention.time 1h \
  --web.listen-address "127.0.0.1:$PROMETHEUS_TLS_PORT" \
  --web.external-url "https://127.0.0.1:$PROMETHEUS_TLS_PORT/prometheus/"
wait_for prometheus-tls 30 curl -fsS --cacert "$PT/ca.crt" -u "$PROMETHEUS_AUTH_USER:$PROMETHEUS_AUTH_PASSWORD" \
  "https://127.0.0.1:$PROMETHEUS_TLS_PORT/prometheus/-/ready"
# The proxy passes the client's Authorization header on; Go reads the CA
# that signs the upstream's certificate from SSL_CERT_FILE.
SSL_CERT_FILE="$PT/ca.crt" start prom-label-proxy "$LABEL_PROXY_BIN/prom-label-proxy" \
  -insecure-listen-address "127.0.0.1:$LABEL_PROXY_PORT" \
  -upstream "https://127.0.0.1:$PROMETHEUS_TLS_PORT/prometheus" \
  -label job -header-name X-Scope-OrgID
wait_for prom-label-proxy 30 curl -fsS "http://127.0.0.1:$LABEL_PROXY_PORT/healthz"

# ---------------------------------------------------------------- env
# Written before the example service starts, so the rest is usable even when
# it fails; tests read this file.
cat >"$C/env" <<EOF
# Written by tests/cluster/up.sh; removed by tests/cluster/down.sh.
KUBECONFIG=$C/kubeconfig
KUBECTL=$KUBECTL
PATH_PREPEND=$K8S_BIN
KUBERNETES_VERSION=$K8S_VERSION
KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
ETCD_VERSION=$ETCD_VERSION
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
PROMETHEUS_BIN=$PROMETHEUS_BIN
PROMETHEUS_RULES_DIR=$C/rules
PROMETHEUS_TLS_URL=https://127.0.0.1:$PROMETHEUS_TLS_PORT/prometheus
PROMETHEUS_TLS_CA_FILE=$PT/ca.crt
PROMETHEUS_TLS_BASIC_AUTH_FILE=$PT/basic-auth
PROMETHEUS_LABEL_PROXY_URL=http://127.0.0.1:$LABEL_PROXY_PORT
PROMETHEUS_LABEL_PROXY_TENANT_HEADER=X-Scope-OrgID
PROMETHEUS_LABEL_PROXY_TENANT_LABEL=job
PROMETHEUS_RELOAD=$HERE/reload-prometheus.sh
DATABASE_URL=$DATABASE_URL
DATABASE_ADMIN_URL="postgres:///postgres?host=$C/pgsocket&port=$POSTGRES_PORT&user=postgres"
POSTGRES_MAX_CONNECTIONS=$POSTGRES_MAX_CONNECTIONS
POSTGRES_SUPERUSER_RESERVED_CONNECTIONS=2
CHECKOUT_REAL_DB_USER=checkout_real
CHECKOUT_REAL_DB_PASSWORD=$CHECKOUT_DB_PASSWORD
CHECKOUT_REAL_DB_LIMIT=$CHECKOUT_REAL_DB_LIMIT
CHECKOUT_REAL_LOAD_URL=http://127.0.0.1:28082
CHECKOUT_URL=http://127.0.0.1:$CHECKOUT_PORT
CHECKOUT_NAMESPACE=checkout
CHECKOUT_DEPLOYMENT=checkout
OPERATOR_METRICS_ADDR=$OPERATOR_METRICS
EOF

# ---------------------------------------------------------------- example service
"$KUBECTL" apply -f "$HERE/manifests/checkout.yaml" >"$C/logs/checkout-manifests.log" 2>&1 \
  || fail checkout "applying the checkout namespace and Deployment failed" "$C/logs/checkout-manifests.log"
if [[ -n "${HEADROOM_SKIP_CHECKOUT:-}" ]]; then
  log "HEADROOM_SKIP_CHECKOUT is set: not starting the example service"
else
  if ! running checkout; then
    command -v cargo >/dev/null || PATH="$PATH:$HOME/.cargo/bin"
    log "building the example service (cargo build --release -p checkout)"
    (cd "$ROOT" && cargo build --release -p checkout) >"$C/logs/build-checkout.log" 2>&1 \
      || fail checkout "cargo build --release -p checkout failed" "$C/logs/build-checkout.log"
    load=()
    [[ -n "${CHECKOUT_LOAD_RPS:-}" ]] && load=(--load-rps "$CHECKOUT_LOAD_RPS")
    start checkout "$ROOT/target/release/checkout" \
      --listen "127.0.0.1:$CHECKOUT_PORT" --kubeconfig "$KUBECONFIG" \
      --namespace checkout --deployment checkout --database-url "$DATABASE_URL" "${load[@]}"
  fi
  wait_for checkout 30 curl -fsS "http://127.0.0.1:$CHECKOUT_PORT/metrics"
fi
wait_for kube-controller-manager 60 "$KUBECTL" -n checkout rollout status deployment/checkout --timeout=2s

# PrometheusRule CRD, so the operator's PrometheusRule writer runs for real
# (and ServiceMonitor, for the Helm chart's server-side dry run).
"$HERE/prometheus-operator-crd.sh" || fail prometheus-operator-crd "installing the PrometheusRule and ServiceMonitor CRDs failed" "$C/logs/prometheus-operator-crd.log"

# ---------------------------------------------------------------- the real node
# real-0: kubelet, kube-proxy and containerd; its pods are processes.
if [[ -n "${HEADROOM_SKIP_REAL_NODE:-}" ]]; then
  log "HEADROOM_SKIP_REAL_NODE is set: not starting the real node"
else
  HEADROOM_LOCK_HELD=1 "$HERE/real-node.sh"
fi

log "ready in ${SECONDS}s: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, $("$KUBECTL" get nodes -l type=kwok --no-headers | wc -l) kwok nodes, $("$KUBECTL" get nodes -l type=real --no-headers 2>/dev/null | wc -l) real node"
log "environment: ${C#"$ROOT"/}/env  (e.g. set -a; . .cluster/env; set +a)"
