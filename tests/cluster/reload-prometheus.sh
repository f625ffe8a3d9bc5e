#!/usr/bin/env bash
# Make the local Prometheus re-read its configuration and the rule files in
# .cluster/rules/*.yml. Call it after writing or removing a rule file.
# Exits non-zero (with Prometheus's reason) when the reload is refused, e.g.
# for a rule file that does not parse.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
url="$(sed -n 's/^PROMETHEUS_URL=//p' "$ROOT/.cluster/env" 2>/dev/null || true)"
url="${url:-http://127.0.0.1:29090}"
out="$(curl -sS -X POST -w '\n%{http_code}' "$url/-/reload")" || {
  echo "reload-prometheus: Prometheus at $url does not answer" >&2; exit 1; }
code="${out##*$'\n'}"
if [[ "$code" != 200 ]]; then
  echo "reload-prometheus: reload refused (HTTP $code): ${out%$'\n'*}" >&2
  exit 1
fi
