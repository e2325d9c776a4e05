#!/usr/bin/env bash
# build-bins.sh builds the real Kubernetes binaries used by the end-to-end
# tests: etcd, kube-apiserver and kube-controller-manager, and kubectl (which
# the tests use to server-side dry-run deploy/, with its built-in kustomize).
#
# Nothing is downloaded except Go modules: the binaries are compiled from the
# pinned modules in e2e/k8sbin (k8s.io/kubernetes) and e2e/etcdbin (etcd).
# They go into a cache directory outside the repository, keyed by the pinned
# versions, so a version bump in either go.mod builds into a fresh directory:
#
#   ${NODEXDS_BIN_CACHE:-$HOME/.cache/nodexds/bin}/kube-<v>_etcd-<v>/
#
# A binary already present there is not rebuilt. Each binary is built into a
# temporary file and renamed into place, so an interrupted build never leaves
# a truncated binary that a later run would take for a finished one.
#
# Progress goes to stderr; the last line on stdout is the binary directory,
# which is what e2e/cluster reads when it calls this script.
#
# Usage: e2e/build-bins.sh [--print-dir]
#   --print-dir  print the binary directory and exit without building.
#
# Timing on 2 cores: cold (empty Go build cache) about 15 minutes, mostly
# kube-apiserver; with a warm Go build cache about a minute; nothing to do:
# well under a second. kubectl shares most packages with the others: about
# 20 s more once they are in the build cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bincache.sh
source "${here}/bincache.sh"
k8smod="${here}/k8sbin"
etcdmod="${here}/etcdbin"

log() { echo "build-bins: $*" >&2; }

# Versions come from the pinned modules themselves, so go.mod is the single
# source of truth. GOFLAGS=-mod=mod is not needed: go.sum is complete.
kube_version="$(cd "${k8smod}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(cd "${etcdmod}" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"

dir="${bin_cache}/kube-${kube_version}_etcd-${etcd_version}"

if [[ "${1:-}" == "--print-dir" ]]; then
	echo "${dir}"
	exit 0
fi

lock_build_dir "${dir}" build-bins

# Version stamps the Kubernetes release scripts (hack/lib/version.sh) would
# set; without them /version reports v0.0.0-master.
kube_minor="${kube_version#v1.}"
kube_minor="${kube_minor%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	kube_ldflags+=" -X ${pkg}.gitVersion=${kube_version}"
	kube_ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${kube_minor}"
	kube_ldflags+=" -X ${pkg}.gitTreeState=clean"
done

# build <module dir> <output name> <package> <ldflags>
build() {
	local mod="$1" name="$2" pkg="$3" ldflags="$4"
	local out="${dir}/${name}"
	if [[ -x "${out}" ]]; then
		log "${name}: present in ${dir}, skipping"
		return
	fi
	log "${name}: building ${pkg} (module ${mod#"${here}/"})"
	local start=${SECONDS}
	local tmp="${out}.tmp.$$"
	trap "rm -f '${tmp}'" EXIT
	# CGO_ENABLED=0: static binaries, no dependency on the host's libc.
	(cd "${mod}" && CGO_ENABLED=0 go build -trimpath -ldflags="${ldflags}" -o "${tmp}" "${pkg}")
	mv -f "${tmp}" "${out}"
	log "${name}: built in $((SECONDS - start))s ($(du -h "${out}" | cut -f1))"
}

# Cheapest first, so a failure in the toolchain setup shows up quickly.
build "${etcdmod}" etcd go.etcd.io/etcd/server/v3 "-s -w"
build "${k8smod}" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${kube_ldflags}"
build "${k8smod}" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "${kube_ldflags}"
build "${k8smod}" kubectl k8s.io/kubernetes/cmd/kubectl "${kube_ldflags}"

log "binaries ready in ${dir}"
echo "${dir}"
