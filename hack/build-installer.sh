#!/usr/bin/env bash
# Usage: hack/build-installer.sh KUSTOMIZE IMG OUT
# Renders config/default with the manager image IMG into OUT, the single-file
# install (`make build-installer` runs it after regenerating the CRD and RBAC).
# kustomize edits a copy of config/, so a custom IMG leaves the committed
# kustomization alone.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 KUSTOMIZE IMG OUT" >&2; exit 2; }
kustomize=$1 img=$2 out=$3
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/config" "$tmp/"
(cd "$tmp/config/manager" && "$kustomize" edit set image "controller=$img")
mkdir -p "$(dirname "$out")"
{
  echo "# cacheplane installer, manager image $img: CRDs, RBAC, the manager and its"
  echo "# metrics Service in namespace cacheplane-system. Generated from config/default by"
  echo "# make build-installer; do not edit. Install: kubectl apply -f <this file>"
  "$kustomize" build "$tmp/config/default"
} > "$out.tmp"
mv "$out.tmp" "$out"
