#!/usr/bin/env bash
# The real KubeRay operator for the tests, built once per machine from the Go module
# github.com/ray-project/kuberay/ray-operator (served by the Go module proxy; its main package
# is the module root, and its go.mod has no replace directives, so `go install mod@version`
# builds it as published). Cached under ${XDG_CACHE_HOME:-~/.cache}/corral/kuberay/v<version>/
# with the module's own CRDs (config/crd/bases), linked into .tools/kuberay/bin/.
# Idempotent; prints the binary's path.
#
#   scripts/install_kuberay.sh                          # v1.5.0
#   CORRAL_KUBERAY_VERSION=1.4.0 scripts/install_kuberay.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version="${CORRAL_KUBERAY_VERSION:-1.5.0}"
module="github.com/ray-project/kuberay/ray-operator"
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/corral/kuberay/v${version}"
bin="${root}/.tools/kuberay/bin"
mkdir -p "${cache}" "${bin}"

log() { echo "install_kuberay: $*" >&2; }

build_kuberay() {
  if [[ -x "${cache}/ray-operator" && -d "${cache}/crd" ]]; then
    return 0
  fi
  local work start=$SECONDS
  work="$(mktemp -d)"
  log "building KubeRay's ray-operator v${version} from ${module} (once per machine)"
  (
    cd "${work}"
    export GOBIN="${work}/bin" GOFLAGS=-mod=mod CGO_ENABLED=0
    go install -trimpath -ldflags "-s -w" "${module}@v${version}"
    src="$(go mod download -json "${module}@v${version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    rm -rf "${cache}/crd.tmp" && mkdir -p "${cache}/crd.tmp"
    cp "${src}"/config/crd/bases/*.yaml "${cache}/crd.tmp/"
    chmod -R u+w "${cache}/crd.tmp"
  )
  mv "${work}/bin/ray-operator" "${cache}/ray-operator"
  rm -rf "${cache}/crd" && mv "${cache}/crd.tmp" "${cache}/crd"
  echo "$((SECONDS - start))" >"${cache}/build-seconds"
  log "built in $((SECONDS - start)) s"
  rm -rf "${work}"
}

build_kuberay
ln -sfn "${cache}/ray-operator" "${bin}/ray-operator"
ln -sfn "${cache}/crd" "${root}/.tools/kuberay/crd"
echo "${bin}/ray-operator"
