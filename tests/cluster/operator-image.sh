#!/usr/bin/env bash
# operator-image.sh: the operator's build (target/debug/headroom, or
# $HEADROOM_BIN) as the image headroom.local/headroom:e2e on the real node,
# for tests/cluster/manifests/operator (deploy/ with that image). No registry
# and no Docker here: the binary, stripped of its debug sections, and the
# shared libraries ldd names are written as a docker archive by
# node/image.py and imported with containerd's ctr. Prints the image name.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
IMAGE="headroom.local/headroom:e2e"
BIN="${HEADROOM_BIN:-$ROOT/target/debug/headroom}"
N="$(cd -P "$C" && pwd)/real-node"
CONTAINERD_BIN="$(ls -d "$CACHE"/containerd-* 2>/dev/null | sort -V | tail -n 1)"

fail() { echo "[operator-image] FAILED: $*" >&2; exit 1; }
[[ -x "$BIN" ]] || fail "$BIN is missing: cargo build -p headroom"
[[ -S "$N/containerd/containerd.sock" ]] || fail "the real node's containerd is not running (tests/cluster/real-node.sh)"
[[ -x "$CONTAINERD_BIN/ctr" ]] || fail "no ctr under $CACHE/containerd-*"
mkdir -p "$N/images"
stripped="$N/images/headroom"
strip --strip-debug -o "$stripped" "$BIN"
# The CA bundle too: its HTTP clients load the system roots at start.
specs=("$stripped=/headroom" "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt")
while read -r lib; do
  specs+=("$(readlink -f "$lib")=$lib")
done < <(ldd "$stripped" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
python3 "$HERE/node/image.py" "$N/images/headroom.tar" "$IMAGE" /headroom "${specs[@]}" >&2
"$CONTAINERD_BIN/ctr" --address "$N/containerd/containerd.sock" -n k8s.io \
  images import --platform linux/amd64 "$N/images/headroom.tar" >&2
rm -f "$N/images/headroom.tar" "$stripped"
echo "$IMAGE"
