#!/usr/bin/env bash
# Start the local cluster's real worker node, `real-0`, beside the kwok fake
# nodes: containerd (built from its Go module) with Debian's runc, the CNI
# bridge, host-local, loopback and portmap plugins, kubelet and kube-proxy
# (iptables mode) built from the same wrapper module as the control plane.
# Pods on it are processes on this host.
#
# Called by tests/cluster/up.sh once the control plane is up; it may also be
# run alone on a running cluster. Idempotent as up.sh: a part already running
# is left alone. `real-node.sh cleanup` (run by down.sh once the parts are
# stopped) kills what the node's pods left, unmounts, and removes the bridge,
# the route and the iptables rules.
#
# The node: name real-0, labels type=real and headroom.dev/real-node=true,
# taint headroom.dev/real-node=true:NoSchedule (only pods that tolerate it
# land there; the kwok nodes' pods and the zone tests never see it), no zone
# label. Images cannot be pulled here: they are built locally (static
# binaries in a one-layer docker archive, tests/cluster/node/) and imported;
# pods use imagePullPolicy: Never. The pause image is headroom.local/pause:1,
# the test server headroom.local/hello:1 (GET /, GET /ready on :8080).
#
# Network: pods get 10.244.0.0/24 on the bridge hr-cni0 (10.244.0.1, also the
# node's InternalIP); the service range 10.96.0.0/16 is routed to that bridge
# so ClusterIPs never leave the host, and forwarding from the pods to
# anything but the pods is dropped.
#
# Environment:
#   HEADROOM_CACHE   where built binaries are cached (as up.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/tests/cluster"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/k8s/go.mod"; }
K8S_VERSION="$(modver k8s.io/kubernetes)"
K8S_BIN="$CACHE/k8s-$K8S_VERSION"
# containerd 2.x: kubelet 1.36 no longer supports containerd 1.x.
CONTAINERD_VERSION="v2.2.9"
CNI_PLUGINS_VERSION="v1.9.1"
CONTAINERD_BIN="$CACHE/containerd-$CONTAINERD_VERSION"
CNI_BIN="$CACHE/cni-plugins-$CNI_PLUGINS_VERSION"

NODE_NAME="real-0"
NODE_TAINT="headroom.dev/real-node=true:NoSchedule"
NODE_LABELS="type=real,headroom.dev/real-node=true"
BRIDGE="hr-cni0"
POD_CIDR="10.244.0.0/24"
NODE_IP="10.244.0.1"
SERVICE_CIDR="10.96.0.0/16" # up.sh's --service-cluster-ip-range
APISERVER_PORT=26443
POSTGRES_PORT=25432 # up.sh's PostgreSQL, loopback only as the API server
PROMETHEUS_PORT=29090 # up.sh's Prometheus, loopback only too
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
KUBE_PROXY_HEALTHZ_PORT=20256
KUBE_PROXY_METRICS_PORT=20249
CHECKOUT_REAL_CLUSTER_IP="10.96.80.80" # manifests/checkout-real.yaml
CHECKOUT_REAL_LOAD_PORT=28082          # up.sh's Prometheus scrapes it
CHECKOUT_REAL_LOAD_RPS=30
PAUSE_IMAGE="headroom.local/pause:1"
HELLO_IMAGE="headroom.local/hello:1"
FORWARD_CHAIN="HEADROOM-REAL-NODE"

LOG_TAG="real-node"
# shellcheck source=tests/cluster/lib.sh
. "$HERE/lib.sh"

# Mounts are listed under the resolved path (.cluster may be a symlink).
mkdir -p "$C"
N="$(cd -P "$C" && pwd)/real-node"
CTR_SOCK="$N/containerd/containerd.sock"
ctr_() { "$CONTAINERD_BIN/ctr" --address "$CTR_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- cleanup
# After down.sh has stopped kubelet, kube-proxy and containerd: the pods'
# processes (still under their shims), their cgroups, mounts and network
# namespaces, the bridge, the route and the iptables rules.
cleanup() {
  local pids pid exe mnt cg tries
  # Every process in the pods' cgroups (the pids controller lists them all).
  for tries in 1 2 3; do
    pids="$(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
    [[ -z "$pids" ]] && break
    log "killing the node's pod processes: $(echo "$pids" | wc -l)"
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.5
  done
  # The shims: processes running our shim binary, by exact path, and their
  # sockets (/run/containerd/s/ is fixed in the shim: named by the sha256 of
  # address/namespace/id).
  local args sock
  for exe in /proc/[0-9]*/exe; do
    [[ "$(readlink "$exe" 2>/dev/null)" == "$CONTAINERD_BIN/containerd-shim-runc-v2" ]] || continue
    pid="${exe#/proc/}"; pid="${pid%/exe}"
    mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || args=()
    log "killing containerd-shim-runc-v2 (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    local i ns="" id="" address=""
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
      case "${args[i]}" in
        -namespace) ns="${args[i + 1]}" ;;
        -id) id="${args[i + 1]}" ;;
        -address) address="${args[i + 1]}" ;;
      esac
    done
    if [[ -n "$id" && "$address" == "$CTR_SOCK" ]]; then
      sock="/run/containerd/s/$(printf '%s' "$address/$ns/$id" | sha256sum | cut -d' ' -f1)"
      rm -f "$sock"
    fi
  done
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  # The pods' cgroups, deepest first, in every hierarchy.
  for cg in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Mounts under the node's directory (overlay rootfs, netns, volumes), deepest first.
  if [[ -d "$N" ]]; then
    awk -v n="$N/" 'index($5, n) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r mnt; do
      umount -l "$mnt" 2>/dev/null || true
    done
    # Runtime state and IP leases describe the pods just killed.
    rm -rf "$N/containerd/state" "$N/containerd/runc" "$N/cni/ipam"
  fi
  # Container log links kubelet made into this node's log directory.
  find /var/log/containers -maxdepth 1 -type l -lname "$N/*" -delete 2>/dev/null || true
  if [[ -x "$K8S_BIN/kube-proxy" ]] && iptables -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    "$K8S_BIN/kube-proxy" --cleanup >"$C/logs/kube-proxy-cleanup.log" 2>&1 || true
  fi
  # kubelet's own chains (kube-proxy --cleanup leaves them).
  local ipt t chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle; do
      for chain in INPUT OUTPUT; do
        while "$ipt" -t "$t" -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
      done
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -t "$t" -F "$chain" 2>/dev/null && "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  if iptables -S "$FORWARD_CHAIN" >/dev/null 2>&1; then
    iptables -D FORWARD -j "$FORWARD_CHAIN" 2>/dev/null || true
    iptables -F "$FORWARD_CHAIN" && iptables -X "$FORWARD_CHAIN"
  fi
  if [[ -f "$N/ip_forward.before" ]]; then
    cat "$N/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
    rm -f "$N/ip_forward.before"
  fi
  log "cleaned up"
}

case "${1:-}" in
  cleanup) cleanup; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [cleanup]" >&2; exit 2 ;;
esac

# One up.sh at a time; up.sh passes its lock on.
if [[ -z "${HEADROOM_LOCK_HELD:-}" ]]; then
  exec 9>"$C/.lock"
  flock -w 120 9 || fail lock "another tests/cluster/up.sh holds $C/.lock (see: fuser $C/.lock)"
fi
T0=$SECONDS
mkdir -p "$C"/{logs,pids} "$N"/{containerd,kubelet,pod-logs,cni/net.d,cni/ipam,images}

[[ -s "$C/pki/ca.key" && -s "$C/kubeconfig" ]] || fail "$NODE_NAME" "no cluster PKI in ${C#"$ROOT"/}: run tests/cluster/up.sh first"
KUBECTL="$K8S_BIN/kubectl"
export KUBECONFIG="$C/kubeconfig"
"$KUBECTL" get --raw /readyz >/dev/null 2>&1 || fail "$NODE_NAME" "the API server does not answer: run tests/cluster/up.sh first"

# ---------------------------------------------------------------- packages
need_pkgs=()
[[ -x /usr/sbin/runc ]] || need_pkgs+=(runc)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$C/logs/apt-real-node.log" 2>&1 || fail apt "apt-get update failed" "$C/logs/apt-real-node.log"
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >>"$C/logs/apt-real-node.log" 2>&1 \
    || fail apt "apt-get install ${need_pkgs[*]} failed" "$C/logs/apt-real-node.log"
fi
[[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
setup_go

# restart_if_changed NAME FILE: FILE.new replaces FILE; a running part whose
# configuration changed is stopped, so start() starts it with the new one.
restart_if_changed() {
  local name="$1" file="$2" pid
  if cmp -s "$file.new" "$file"; then
    rm -f "$file.new"
    return 0
  fi
  mv "$file.new" "$file"
  running "$name" || return 0
  pid="$(cat "$C/pids/$name.pid")"
  log "restarting $name: ${file#"$ROOT"/} changed"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  fail "$name" "did not stop in 10s for its new configuration"
}

# ---------------------------------------------------------------- binaries
mkdir -p "$K8S_BIN" "$CONTAINERD_BIN" "$CNI_BIN"
if ! k8s_cmd_ok kubelet --version; then
  build "kubelet $K8S_VERSION" "2-10 minutes on 2 cores" "$C/logs/build-k8s.log" \
    gobuild "$K8S_BIN/kubelet" "$K8S_LDFLAGS" k8s.io/kubernetes/cmd/kubelet
fi
if ! k8s_cmd_ok kube-proxy --version; then
  build "kube-proxy $K8S_VERSION" "1-3 minutes" "$C/logs/build-k8s.log" \
    gobuild "$K8S_BIN/kube-proxy" "$K8S_LDFLAGS" k8s.io/kubernetes/cmd/kube-proxy
fi
# Static and without cgo: no btrfs, devmapper or zfs snapshotters (overlayfs is used).
CTD_MOD=github.com/containerd/containerd/v2
CTD_LDFLAGS="-s -w -X $CTD_MOD/version.Version=$CONTAINERD_VERSION -X $CTD_MOD/version.Revision="
if [[ ! -x "$CONTAINERD_BIN/containerd" || ! -x "$CONTAINERD_BIN/ctr" ]]; then
  build "containerd $CONTAINERD_VERSION" "5-10 minutes" "$C/logs/build-containerd.log" \
    env CGO_ENABLED=0 GOBIN="$CONTAINERD_BIN" "$GO" install -trimpath -ldflags="$CTD_LDFLAGS" \
    -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs" \
    "$CTD_MOD/cmd/containerd@$CONTAINERD_VERSION" "$CTD_MOD/cmd/ctr@$CONTAINERD_VERSION"
fi
if [[ ! -x "$CONTAINERD_BIN/containerd-shim-runc-v2" ]]; then
  build "containerd-shim-runc-v2 $CONTAINERD_VERSION" "1-2 minutes" "$C/logs/build-containerd.log" \
    env CGO_ENABLED=0 GOBIN="$CONTAINERD_BIN" "$GO" install -trimpath -ldflags="$CTD_LDFLAGS" \
    -tags "no_grpc urfave_cli_no_docs" "$CTD_MOD/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
fi
CNI_MOD=github.com/containernetworking/plugins
if [[ ! -x "$CNI_BIN/bridge" || ! -x "$CNI_BIN/host-local" || ! -x "$CNI_BIN/loopback" || ! -x "$CNI_BIN/portmap" ]]; then
  build "CNI plugins $CNI_PLUGINS_VERSION" "1-2 minutes" "$C/logs/build-cni.log" \
    env CGO_ENABLED=0 GOBIN="$CNI_BIN" "$GO" install -trimpath \
    -ldflags="-s -w -X $CNI_MOD/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$CNI_MOD/plugins/main/bridge@$CNI_PLUGINS_VERSION" "$CNI_MOD/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "$CNI_MOD/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" "$CNI_MOD/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
fi
# The images' binaries, cached by the hash of their sources.
img_key="$(cat "$HERE"/node/go.mod "$HERE"/node/*/*.go "$HERE/node/image.py" | sha256sum | cut -c1-16)"
IMG_DIR="$CACHE/node-images-$img_key"
if [[ ! -s "$IMG_DIR/pause.tar" || ! -s "$IMG_DIR/hello.tar" || ! -x "$IMG_DIR/relay" ]]; then
  build "the node's images (pause, hello) and relay" "1 minute" "$C/logs/build-node-images.log" \
    bash -c 'set -e; mkdir -p "$2"; cd "$1"
      CGO_ENABLED=0 "$3" build -trimpath -ldflags="-s -w" -o "$2/" ./pause ./hello ./relay
      python3 ./image.py "$2/pause.tar" "$4" /pause "$2/pause=/pause"
      python3 ./image.py "$2/hello.tar" "$5" /hello "$2/hello=/hello"' \
    _ "$HERE/node" "$IMG_DIR" "$GO" "$PAUSE_IMAGE" "$HELLO_IMAGE"
fi

# ---------------------------------------------------------------- host network
# The bridge exists before the first pod, so its address can be the node's IP.
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
ip link set "$BRIDGE" up
ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
# The bridge plugin turns IPv4 forwarding on (the node is the pods'
# gateway); cleanup restores what the host had.
[[ -f "$N/ip_forward.before" ]] || cat /proc/sys/net/ipv4/ip_forward >"$N/ip_forward.before"
# Bridged pod-to-Service traffic must pass iptables (kube-proxy's rules).
modprobe br_netfilter 2>/dev/null || true
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
if ! iptables -S "$FORWARD_CHAIN" >/dev/null 2>&1; then
  iptables -N "$FORWARD_CHAIN"
  iptables -A "$FORWARD_CHAIN" -s "$POD_CIDR" ! -d "$POD_CIDR" -j DROP
fi
iptables -C FORWARD -j "$FORWARD_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$FORWARD_CHAIN"

# Pods reach the API server and PostgreSQL (which listen on loopback only)
# through a relay on the node's address; up before kubelet starts the pods
# that need it. PostgreSQL sees the relay's address (127.0.0.1): checkout's
# pods tell themselves apart by application_name (their pod name).
RELAY_ARGS="$NODE_IP:$APISERVER_PORT=127.0.0.1:$APISERVER_PORT $NODE_IP:$POSTGRES_PORT=127.0.0.1:$POSTGRES_PORT $NODE_IP:$PROMETHEUS_PORT=127.0.0.1:$PROMETHEUS_PORT"
echo "$RELAY_ARGS" >"$N/relay.args.new"
restart_if_changed node-relay "$N/relay.args"
# shellcheck disable=SC2086 # one argument per pair
start node-relay "$IMG_DIR/relay" $RELAY_ARGS
wait_for node-relay 10 curl -sk -o /dev/null "https://$NODE_IP:$APISERVER_PORT/readyz"
wait_for node-relay 10 bash -c "exec 3<>/dev/tcp/$NODE_IP/$POSTGRES_PORT"

# ---------------------------------------------------------------- CNI
cat >"$N/cni/net.d/10-headroom.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "headroom-real-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$N/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

# ---------------------------------------------------------------- containerd
cat >"$N/containerd/config.toml.new" <<EOF
# Generated by tests/cluster/real-node.sh.
version = 3
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CTR_SOCK"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (this VM) no process may lower its OOM score
  # below containerd's; kubelet asks -998 for the sandbox, and runc fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$N/containerd/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$N/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
restart_if_changed containerd "$N/containerd/config.toml"
# The shim is found on PATH.
PATH="$CONTAINERD_BIN:$PATH" start containerd "$CONTAINERD_BIN/containerd" --config "$N/containerd/config.toml"
wait_for containerd 60 "$CONTAINERD_BIN/ctr" --address "$CTR_SOCK" version
# Imported again when the archive changed.
for img in "$PAUSE_IMAGE=$IMG_DIR/pause.tar" "$HELLO_IMAGE=$IMG_DIR/hello.tar"; do
  name="${img%%=*}" tar="${img#*=}" stamp="$N/images/${name//[\/:]/_}.sha256"
  sum="$(sha256sum "$tar" | cut -d' ' -f1)"
  have="$(ctr_ images ls -q 2>/dev/null || true)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]] || ! grep -Fxq "$name" <<<"$have"; then
    log "importing $name"
    ctr_ images import --platform linux/amd64 "$tar" >>"$C/logs/containerd-import.log" 2>&1 \
      || fail containerd "importing $name failed" "$C/logs/containerd-import.log"
    echo "$sum" >"$stamp"
  fi
done

# ---------------------------------------------------------------- credentials
# Resolved, as N: the generated files read the same from any checkout.
P="$(cd -P "$C" && pwd)/pki"
# client_cert NAME SUBJECT: a client certificate from the cluster's CA.
client_cert() {
  [[ -s "$P/$1.crt" ]] && return 0
  (
    set -e
    cd "$P"
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile "$1.ext"
    chmod 600 "$1.key"
  ) >>"$C/logs/pki.log" 2>&1 || fail pki "openssl failed for $1" "$C/logs/pki.log"
}
# The Node authorizer knows kubelets by this subject; RBAC binds
# system:kube-proxy to system:node-proxier.
client_cert "$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME"
client_cert kube-proxy "/CN=system:kube-proxy"
kubeconfig() {
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: headroom-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $P/ca.crt
users:
- name: $1
  user:
    client-certificate: $P/$1.crt
    client-key: $P/$1.key
contexts:
- name: headroom-local
  context: { cluster: headroom-local, user: $1 }
current-context: headroom-local
EOF
}
kubeconfig "$NODE_NAME" >"$N/kubelet.kubeconfig"
kubeconfig kube-proxy >"$N/kube-proxy.kubeconfig"

# ---------------------------------------------------------------- kubelet
# cgroup v1 here: kubelet 1.35+ refuses it unless failCgroupV1 is false.
cat >"$N/kubelet.yaml.new" <<EOF
# Generated by tests/cluster/real-node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $P/ca.crt }
authorization:
  mode: Webhook
clusterDomain: cluster.local
failSwapOn: false
oomScoreAdj: 0
podLogsDir: $N/pod-logs
registerWithTaints:
  - { key: headroom.dev/real-node, value: "true", effect: NoSchedule }
maxPods: 30
serializeImagePulls: true
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
EOF
restart_if_changed kubelet "$N/kubelet.yaml"
start kubelet "$K8S_BIN/kubelet" --config "$N/kubelet.yaml" --kubeconfig "$N/kubelet.kubeconfig" \
  --root-dir "$N/kubelet" --cert-dir "$N/kubelet/pki" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --node-labels "$NODE_LABELS"
wait_for kubelet 60 curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
wait_for kubelet 120 "$KUBECTL" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s

# ---------------------------------------------------------------- kube-proxy
cat >"$N/kube-proxy.yaml.new" <<EOF
# Generated by tests/cluster/real-node.sh.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $NODE_NAME
clientConnection: { kubeconfig: $N/kube-proxy.kubeconfig }
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
conntrack: { maxPerCore: 0 }
oomScoreAdj: 0
EOF
restart_if_changed kube-proxy "$N/kube-proxy.yaml"
start kube-proxy "$K8S_BIN/kube-proxy" --config "$N/kube-proxy.yaml"
wait_for kube-proxy 60 curl -fsS "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"

# The taint and labels are set at registration only: keep them on a node
# registered before.
"$KUBECTL" taint node "$NODE_NAME" "$NODE_TAINT" --overwrite >/dev/null
IFS=, read -ra labels <<<"$NODE_LABELS"
"$KUBECTL" label node "$NODE_NAME" "${labels[@]}" --overwrite >/dev/null

# In-cluster clients (an operator installed from deploy/) find the API
# server as pods do everywhere: the Service default/kubernetes (10.96.0.1,
# in the serving certificate). The API server runs with
# --endpoint-reconciler-type none and listens on loopback, so its endpoint is
# the node's relay, written here.
"$KUBECTL" apply -f - >"$C/logs/kubernetes-endpoints.log" 2>&1 <<EOF || fail kubernetes-endpoints "writing the EndpointSlice of default/kubernetes failed" "$C/logs/kubernetes-endpoints.log"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-real-node
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: real-node.sh
addressType: IPv4
endpoints: [{ addresses: ["$NODE_IP"], conditions: { ready: true } }]
ports: [{ name: https, port: $APISERVER_PORT, protocol: TCP }]
EOF

# ---------------------------------------------------------------- checkout on the real node
# The example service's release build (up.sh builds it) as an image: the
# binary and the shared libraries ldd names, at their own paths.
CHECKOUT_BIN="$ROOT/target/release/checkout"
if [[ -x "$CHECKOUT_BIN" ]]; then
  # The CA bundle too: its HTTP client loads the system's roots.
  specs=("$CHECKOUT_BIN=/checkout" "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt")
  while read -r lib; do
    specs+=("$(readlink -f "$lib")=$lib")
  done < <(ldd "$CHECKOUT_BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  CHECKOUT_IMAGE="headroom.local/checkout:$(cat "${specs[@]%%=*}" | sha256sum | cut -c1-12)"
  have="$(ctr_ images ls -q 2>/dev/null || true)"
  if ! grep -Fxq "$CHECKOUT_IMAGE" <<<"$have"; then
    log "importing $CHECKOUT_IMAGE"
    python3 "$HERE/node/image.py" "$N/images/checkout.tar" "$CHECKOUT_IMAGE" /checkout "${specs[@]}" \
      >>"$C/logs/containerd-import.log" 2>&1 || fail checkout-real "writing the checkout image failed" "$C/logs/containerd-import.log"
    ctr_ images import --platform linux/amd64 "$N/images/checkout.tar" >>"$C/logs/containerd-import.log" 2>&1 \
      || fail checkout-real "importing $CHECKOUT_IMAGE failed" "$C/logs/containerd-import.log"
    rm -f "$N/images/checkout.tar"
  fi
  # The pods' kubeconfig: the relay, the cluster's CA, their ServiceAccount's token.
  cat >"$N/checkout.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: headroom-local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    tls-server-name: kubernetes
    certificate-authority-data: $(base64 -w0 "$P/ca.crt")
users:
- name: checkout
  user:
    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
contexts:
- name: headroom-local
  context: { cluster: headroom-local, user: checkout }
current-context: headroom-local
EOF
  # Their database: up.sh's role checkout_real (capped at CHECKOUT_REAL_DB_LIMIT
  # sessions) through the relay.
  db_user="$(. "$C/env" && echo "${CHECKOUT_REAL_DB_USER:-}")"
  db_password="$(. "$C/env" && echo "${CHECKOUT_REAL_DB_PASSWORD:-}")"
  [[ -n "$db_user" && -n "$db_password" ]] || fail checkout-real "no CHECKOUT_REAL_DB_USER/PASSWORD in ${C#"$ROOT"/}/env: run tests/cluster/up.sh"
  # A ClusterIP cannot change: a Service from before it was fixed goes.
  ip="$("$KUBECTL" -n checkout-real get service checkout -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)"
  if [[ -n "$ip" && "$ip" != "$CHECKOUT_REAL_CLUSTER_IP" ]]; then
    "$KUBECTL" -n checkout-real delete service checkout --wait >/dev/null
  fi
  {
    sed "s|__IMAGE__|$CHECKOUT_IMAGE|" "$HERE/manifests/checkout-real.yaml"
    echo "---"
    "$KUBECTL" -n checkout-real create secret generic checkout-kubeconfig \
      --from-file=kubeconfig="$N/checkout.kubeconfig" --dry-run=client -o yaml
    echo "---"
    "$KUBECTL" -n checkout-real create secret generic checkout-db \
      --from-literal=url="postgres://$db_user:$db_password@$NODE_IP:$POSTGRES_PORT/checkout" --dry-run=client -o yaml
  } | "$KUBECTL" apply -f - >"$C/logs/checkout-real.log" 2>&1 \
    || fail checkout-real "applying checkout-real failed" "$C/logs/checkout-real.log"
  wait_for kubelet 120 "$KUBECTL" -n checkout-real rollout status deployment/checkout --timeout=2s
  # Callers of the real pods: steady load through the Service's ClusterIP
  # (kube-proxy's rules on this host), counted on the client side.
  LOAD_ARGS="--url http://$CHECKOUT_REAL_CLUSTER_IP/checkout --rps $CHECKOUT_REAL_LOAD_RPS --listen 127.0.0.1:$CHECKOUT_REAL_LOAD_PORT"
  echo "$LOAD_ARGS" >"$N/checkout-load.args.new"
  restart_if_changed checkout-real-load "$N/checkout-load.args"
  # shellcheck disable=SC2086 # one argument per word
  start checkout-real-load "$ROOT/target/release/checkout-load" $LOAD_ARGS
  wait_for checkout-real-load 10 curl -fsS "http://127.0.0.1:$CHECKOUT_REAL_LOAD_PORT/metrics" -o /dev/null
else
  log "no release build of checkout (${CHECKOUT_BIN#"$ROOT"/}): not running it on $NODE_NAME"
fi

log "$NODE_NAME ready in $((SECONDS - T0))s: $("$KUBECTL" get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}, kubelet {.status.nodeInfo.kubeletVersion}')"
