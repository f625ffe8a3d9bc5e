#!/usr/bin/env bash
# Build Sloth (github.com/slok/sloth, a Go module) for the rule-cost
# benchmark's side-by-side figures, cached by version under
# ${HEADROOM_CACHE:-~/.cache/headroom}/sloth-<version>/sloth. Prints the
# binary's path. Only scripts/bench.sh calls it: make test does not need it.
#
# Environment:
#   SLOTH_VERSION   module version (default below)
#   HEADROOM_CACHE  where built binaries are cached
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
VERSION="${SLOTH_VERSION:-v0.16.0}"
BIN="$CACHE/sloth-$VERSION"

log() { printf '[sloth] %s\n' "$*" >&2; }
fail() {
  echo "[sloth] FAILED: $1" >&2
  [[ -n "${2:-}" && -f "$2" ]] && tail -n 25 "$2" | cut -c1-400 >&2
  exit 1
}

if [[ ! -x "$BIN/sloth" ]]; then
  [[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || fail "go is not installed (tests/cluster/up.sh installs it)"
  export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  mkdir -p "$C/logs" "$CACHE"
  logfile="$C/logs/build-sloth.log"
  log "building sloth $VERSION ... this takes ~5-10 minutes on first run (log: ${logfile#"$ROOT"/})"
  t0=$SECONDS
  # Into a temporary directory first, so a failed build leaves no binary.
  (cd /tmp && env GOBIN="$BIN.tmp" go install -trimpath -ldflags="-s -w" \
    "github.com/slok/sloth/cmd/sloth@$VERSION") >"$logfile" 2>&1 \
    || fail "go install github.com/slok/sloth/cmd/sloth@$VERSION failed" "$logfile"
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  log "built sloth $VERSION in $((SECONDS - t0))s"
fi
"$BIN/sloth" --help >/dev/null 2>&1 || fail "$BIN/sloth does not run"
echo "$BIN/sloth"
