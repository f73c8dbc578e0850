#!/usr/bin/env bash
# Prints the directory holding envtest's binaries (kube-apiserver, etcd, kubectl)
# for the Kubernetes version this module builds against, obtaining them first when
# needed. Progress goes to stderr; stdout carries only the directory, so callers can
# do: export KUBEBUILDER_ASSETS="$(hack/envtest.sh)".
#
# Order: $KUBEBUILDER_ASSETS; setup-envtest's store; setup-envtest's download (short
# timeout); a build from the Go module proxy into that store. The build takes
# minutes once and is reused by every clone on this machine afterwards.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "envtest: $*" >&2; }

# The Kubernetes version follows go.mod's k8s.io/api (v0.37.2 -> 1.37.2), as
# kubebuilder's Makefile derives ENVTEST_K8S_VERSION.
k8s_version=${ENVTEST_K8S_VERSION:-$(cd "$root" && go list -m -f '{{.Version}}' k8s.io/api 2>/dev/null | sed 's/^v0\./1./')}
etcd_version=${ENVTEST_ETCD_VERSION:-3.6.16}
store=${ENVTEST_STORE:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest}
[ -n "$k8s_version" ] || { say "cannot tell the Kubernetes version: go.mod has no k8s.io/api"; exit 1; }
os=$(go env GOOS) arch=$(go env GOARCH)
dir="$store/k8s/$k8s_version-$os-$arch"

complete() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ] && [ -x "$1/kubectl" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    echo "$KUBEBUILDER_ASSETS"; exit 0
  fi
  say "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; looking elsewhere"
fi

if complete "$dir"; then echo "$dir"; exit 0; fi

mkdir -p "$store"
exec 9>"$store/.cacheplane-build.lock"
say "waiting for other builds into $store (lock)"; flock 9
if complete "$dir"; then echo "$dir"; exit 0; fi

say "Kubernetes $k8s_version binaries not in $dir; trying setup-envtest's download (60s limit)"
if timeout 60 go run sigs.k8s.io/controller-runtime/tools/setup-envtest@latest \
     use "$k8s_version" --bin-dir "$store" -p path >/dev/null 2>&1 && complete "$dir"; then
  say "downloaded"; echo "$dir"; exit 0
fi
say "download unavailable; building from the Go module proxy instead (minutes, once per machine)"

work="$store/.build"
mkdir -p "$work/kubernetes-$k8s_version" "$work/etcd-$etcd_version" "$dir.partial"

# kube-apiserver and kubectl: k8s.io/kubernetes replaces its staging modules with
# ./staging paths that a module download lacks, so pin each to its v0.x release.
(
  cd "$work/kubernetes-$k8s_version"
  minor=${k8s_version#1.}
  staging_version="v0.$minor"
  if [ ! -f go.mod ]; then
    say "resolving k8s.io/kubernetes v$k8s_version and its staging modules"
    go mod download -json "k8s.io/kubernetes@v$k8s_version" >/dev/null
    modfile=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$k8s_version.mod
    {
      echo "module cacheplane.local/envtest-kubernetes"
      echo
      echo "go $(awk '$1=="go"{print $2; exit}' "$modfile")"
      echo
      echo "require k8s.io/kubernetes v$k8s_version"
      echo
      awk -v v="$staging_version" '$2=="=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " " v}' "$modfile"
    } > go.mod
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > tools.go
    GOFLAGS=-mod=mod go mod tidy >&2
  fi
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*} -X k8s.io/component-base/version.gitTreeState=clean"
  say "building kube-apiserver v$k8s_version (about 5 min cold on 2 cores)"
  go build -trimpath -ldflags "$ldflags" -o "$dir.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  say "building kubectl v$k8s_version"
  mkdir -p kubectl
  printf 'package main\n\nimport (\n\t"os"\n\n\t"k8s.io/component-base/cli"\n\t"k8s.io/kubectl/pkg/cmd"\n)\n\nfunc main() { os.Exit(cli.Run(cmd.NewDefaultKubectlCommand())) }\n' > kubectl/main.go
  go build -trimpath -ldflags "$ldflags" -o "$dir.partial/kubectl" ./kubectl >&2
)

(
  cd "$work/etcd-$etcd_version"
  if [ ! -f go.mod ]; then
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    printf 'module cacheplane.local/envtest-etcd\n\ngo 1.26\n' > go.mod
    go get "go.etcd.io/etcd/server/v3@v$etcd_version" >&2
    GOFLAGS=-mod=mod go mod tidy >&2
  fi
  say "building etcd v$etcd_version (about 1 min)"
  go build -trimpath -ldflags "-s -w" -o "$dir.partial/etcd" . >&2
)

rm -rf "$dir"; mv "$dir.partial" "$dir"
say "binaries ready in $dir"
echo "$dir"
