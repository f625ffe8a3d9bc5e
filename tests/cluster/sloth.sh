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
exec "$(dirname "$0")/go-tool.sh" sloth github.com/slok/sloth/cmd/sloth "${SLOTH_VERSION:-v0.16.0}"
