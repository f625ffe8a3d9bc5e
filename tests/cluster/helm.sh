#!/usr/bin/env bash
# Build Helm (helm.sh/helm/v4, a Go module) for the chart's tests, cached by
# version under ${HEADROOM_CACHE:-~/.cache/headroom}/helm-<version>/helm.
# Prints the binary's path. scripts/test.sh calls it for tests/e2e/helm.rs.
#
# Environment:
#   HELM_VERSION    module version (default below)
#   HEADROOM_CACHE  where built binaries are cached
set -euo pipefail
VERSION="${HELM_VERSION:-v4.3.1}"
# The version is stamped as Helm's release build does (`helm version`).
exec "$(dirname "$0")/go-tool.sh" helm helm.sh/helm/v4/cmd/helm "$VERSION" \
  "-X helm.sh/helm/v4/internal/version.version=$VERSION"
