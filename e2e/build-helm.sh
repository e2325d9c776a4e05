#!/usr/bin/env bash
# build-helm.sh builds the helm CLI that the chart tests use (helm lint,
# helm template), from the Go module proxy like the other e2e binaries.
# It goes into a cache directory outside the repository, keyed by version:
#
#   ${NODEXDS_BIN_CACHE:-$HOME/.cache/nodexds/bin}/helm-<v>/helm
#
# A binary already present there is not rebuilt (cold: about 3 min on 2
# cores; nothing to do: well under a second). The last line on stdout is the
# binary's path.
#
# Usage: e2e/build-helm.sh [--print-path]
set -euo pipefail

# shellcheck source=bincache.sh
source "$(dirname "${BASH_SOURCE[0]}")/bincache.sh"

# Bump here; the cache key follows.
helm_version="v3.22.0"

dir="${bin_cache}/helm-${helm_version}"
out="${dir}/helm"

if [[ "${1:-}" == "--print-path" ]]; then
	echo "${out}"
	exit 0
fi

lock_build_dir "${dir}" build-helm

if [[ ! -x "${out}" ]]; then
	echo "build-helm: building helm ${helm_version}" >&2
	start=${SECONDS}
	tmp="$(mktemp -d "${dir}/.tmp.XXXXXX")"
	trap 'rm -rf "${tmp}"' EXIT
	# go install verifies the module against the checksum database; the
	# binary lands in tmp and is renamed into place, so an interrupted
	# build never leaves a truncated one behind.
	CGO_ENABLED=0 GOBIN="${tmp}" GOFLAGS=-trimpath go install -ldflags="-s -w" "helm.sh/helm/v3/cmd/helm@${helm_version}"
	mv -f "${tmp}/helm" "${out}"
	echo "build-helm: built in $((SECONDS - start))s" >&2
fi
echo "${out}"
