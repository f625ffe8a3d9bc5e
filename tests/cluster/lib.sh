# Helpers shared by tests/cluster/up.sh and tests/cluster/real-node.sh
# (sourced, not run). The caller sets ROOT, HERE, C (the .cluster directory),
# CACHE, K8S_VERSION and K8S_BIN first.

LOG_TAG="${LOG_TAG:-cluster-up}"
log() { printf '[%s] %s\n' "$LOG_TAG" "$*"; }

fail() {
  local part="$1" why="$2" logfile="${3:-}"
  echo "[$LOG_TAG] FAILED: $part: $why" >&2
  if [[ -n "$logfile" && -f "$logfile" ]]; then
    echo "[$LOG_TAG] last lines of $logfile:" >&2
    tail -n 25 "$logfile" | cut -c1-400 >&2
  fi
  exit 1
}

# running NAME: its pid file names a live process running the binary recorded
# beside it (so a recycled pid is not mistaken for ours).
running() {
  local pidfile="$C/pids/$1.pid" pid exe
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -f "$C/pids/$1.exe" ]]; then
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [[ "${exe% (deleted)}" == "$(cat "$C/pids/$1.exe")" ]] || return 1
  fi
}

# start NAME CMD...: run in the background, in its own session (so down.sh can
# stop it with its children), with its own log and pid file.
start() {
  local name="$1"; shift
  if running "$name"; then
    log "$name already running (pid $(cat "$C/pids/$name.pid"))"
    return 0
  fi
  log "starting $name"
  # 9>&-: the daemon must not inherit the lock, or the next up.sh waits forever.
  setsid "$@" >"$C/logs/$name.log" 2>&1 </dev/null 9>&- &
  local pid=$! exe
  echo "$pid" >"$C/pids/$name.pid"
  readlink -f "$1" >"$C/pids/$name.exe"
  # Until setsid has exec'd the binary, /proc/PID/exe is still bash or
  # setsid and running() would call the part dead: wait (5 s at most) for
  # the exec, or for the process to be gone.
  for _ in $(seq 1 50); do
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || break
    [[ "${exe% (deleted)}" == "$(cat "$C/pids/$name.exe")" ]] && break
    sleep 0.1
  done
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
      fail "$name" "not ready after ${secs}s (waiting for: $*)" "$C/logs/$name.log"
    fi
    sleep 0.5
  done
}

# build LABEL MINUTES LOG CMD...: run a long build, printing progress.
build() {
  local label="$1" minutes="$2" logfile="$3"; shift 3
  log "building $label ... this takes ~$minutes on first run (log: ${logfile#"$ROOT"/})"
  local t0=$SECONDS
  "$@" >>"$logfile" 2>&1 &
  local pid=$! next=$((t0 + 60))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      log "  ... still building $label ($(((SECONDS - t0) / 60)) min)"
      next=$((next + 60))
    fi
  done
  wait "$pid" || fail build "building $label failed" "$logfile"
  log "built $label in $((SECONDS - t0))s"
}

# Go: the wrapper module needs a recent toolchain. Go >= 1.21 fetches the one
# go.mod asks for by itself (GOTOOLCHAIN=auto). An older go (Debian's
# golang-go) cannot, so fetch that toolchain as a module and use it instead.
# setup_go: sets GO (call after the packages are installed).
setup_go() {
  export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  go_minor() { "$1" env GOVERSION 2>/dev/null | sed -nE 's/^go1\.([0-9]+).*/\1/p'; }
  GO=go
  if (($(go_minor go || echo 0) < 21)); then
    GO_WANT="$(awk '$1 == "go" { print $2; exit }' "$HERE/k8s/go.mod")"
    GO_DIR="$CACHE/go-$GO_WANT"
    if [[ ! -x "$GO_DIR/bin/go" ]]; then
      log "fetching Go $GO_WANT (the installed go is too old for the wrapper module)"
      mod="golang.org/toolchain@v0.0.1-go$GO_WANT.linux-$(dpkg --print-architecture)"
      dir="$(cd /tmp && GOFLAGS=-modcacherw go mod download -json "$mod" | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')" \
        || fail go "go mod download $mod failed"
      mkdir -p "$CACHE" && rm -rf "$GO_DIR" && cp -r "$dir" "$GO_DIR"
      chmod -R u+x "$GO_DIR/bin" "$GO_DIR/pkg/tool"
    fi
    GO="$GO_DIR/bin/go"
  fi
}

# Stamp the Kubernetes version into the binaries (as the Kubernetes release
# build does): kubectl version, /version and client skew checks read it.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  K8S_LDFLAGS+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
k8s_cmd_ok() { [[ -x "$K8S_BIN/$1" ]] && [[ "$("$K8S_BIN/$1" "${@:2}" 2>/dev/null)" == *"$K8S_VERSION"* ]]; }
# gobuild OUT LDFLAGS PACKAGE: build from the wrapper module, replacing OUT only on success.
gobuild() {
  (cd "$HERE/k8s" && "$GO" build -trimpath -ldflags="$2" -o "$1.tmp" "$3") && mv "$1.tmp" "$1"
}
