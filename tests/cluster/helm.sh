#!/usr/bin/env bash
# Build Helm (helm.sh/helm/v4, a Go module) for the chart's tests, cached by
# version under ${HEADROOM_CACHE:-~/.cache/headroom}/helm-<version>/helm.
# Prints the binary's path. scripts/helm-check.sh calls it.
#
# Environment:
#   HELM_VERSION    module version (default below)
#   HEADROOM_CACHE  where built binaries are cached
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
VERSION="${HELM_VERSION:-v4.3.1}"
BIN="$CACHE/helm-$VERSION"

log() { printf '[helm] %s\n' "$*" >&2; }
fail() {
  echo "[helm] FAILED: $1" >&2
  [[ -n "${2:-}" && -f "$2" ]] && tail -n 25 "$2" | cut -c1-400 >&2
  exit 1
}

if [[ ! -x "$BIN/helm" ]]; then
  [[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || fail "go is not installed (tests/cluster/up.sh installs it)"
  export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  mkdir -p "$C/logs" "$CACHE"
  logfile="$C/logs/build-helm.log"
  log "building helm $VERSION ... this takes ~4-8 minutes on a 2-core machine on first run (log: ${logfile#"$ROOT"/})"
  t0=$SECONDS
  # Into a temporary directory first, so a failed build leaves no binary.
  # The version is stamped as Helm's release build does (`helm version`).
  (cd /tmp && env GOBIN="$BIN.tmp" go install -trimpath \
    -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$VERSION" \
    "helm.sh/helm/v4/cmd/helm@$VERSION") >"$logfile" 2>&1 \
    || fail "go install helm.sh/helm/v4/cmd/helm@$VERSION failed" "$logfile"
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  log "built helm $VERSION in $((SECONDS - t0))s"
fi
"$BIN/helm" version >/dev/null 2>&1 || fail "$BIN/helm does not run"
echo "$BIN/helm"
