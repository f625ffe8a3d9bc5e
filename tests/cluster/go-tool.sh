#!/usr/bin/env bash
# go-tool.sh NAME PACKAGE VERSION [LDFLAGS]: build a command from its Go
# module (`go install PACKAGE@VERSION`), cached by version under
# ${HEADROOM_CACHE:-~/.cache/headroom}/NAME-VERSION/NAME, check that it runs
# (`NAME --help`), and print its path. tests/cluster/helm.sh and sloth.sh
# call it.
#
# Environment:
#   HEADROOM_CACHE  where built binaries are cached
set -euo pipefail

NAME="$1" PACKAGE="$2" VERSION="$3" LDFLAGS="${4:-}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
C="$ROOT/.cluster"
CACHE="${HEADROOM_CACHE:-$HOME/.cache/headroom}"
BIN="$CACHE/$NAME-$VERSION"

log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }
fail() {
  echo "[$NAME] FAILED: $1" >&2
  [[ -n "${2:-}" && -f "$2" ]] && tail -n 25 "$2" | cut -c1-400 >&2
  exit 1
}

if [[ ! -x "$BIN/$NAME" ]]; then
  [[ -d /usr/local/go/bin ]] && PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || fail "go is not installed (tests/cluster/up.sh installs it)"
  export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  mkdir -p "$C/logs" "$CACHE"
  logfile="$C/logs/build-$NAME.log"
  log "building $NAME $VERSION ... this takes ~4-10 minutes on a 2-core machine on first run (log: ${logfile#"$ROOT"/})"
  t0=$SECONDS
  # Into a temporary directory first, so a failed build leaves no binary.
  (cd /tmp && env GOBIN="$BIN.tmp" go install -trimpath -ldflags="-s -w $LDFLAGS" \
    "$PACKAGE@$VERSION") >"$logfile" 2>&1 \
    || fail "go install $PACKAGE@$VERSION failed" "$logfile"
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  log "built $NAME $VERSION in $((SECONDS - t0))s"
fi
"$BIN/$NAME" --help >/dev/null 2>&1 || fail "$BIN/$NAME does not run"
echo "$BIN/$NAME"
