#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the
# official Go modules pinned in go.mod/go.sum, once per pinned version set.
#
# Prints the directory that holds the binaries. The cache lives under
# ${FLUXGATE_CACHE:-~/.cache/fluxgate}/envtest/<key>, where the key hashes
# go.mod, go.sum and the Go version, so a version bump rebuilds and nothing
# else does. A cold build takes ~15 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${FLUXGATE_CACHE:-$HOME/.cache/fluxgate}/envtest"
key="$(cat "$here/go.mod" "$here/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-16)"
out="$cache_root/$key"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

complete=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# One builder at a time: tests and scripts may race to build on a cold machine.
exec 9>"$cache_root/.lock"
flock 9
complete=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
if [[ $complete == 1 ]]; then
  echo "$out"
  exit 0
fi

tmp="$out.tmp.$$"
mkdir -p "$tmp"
cd "$here"
# Go 1.27 turns on encoding/json/v2, which breaks the apiserver's OpenAPI
# output ("failed to download openapi" in kubectl).
goexp="${GOEXPERIMENT:-}"
minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ "$minor" -ge 27 ]]; then goexp="${goexp:+$goexp,}nojsonv2"; fi
export GOEXPERIMENT="$goexp" CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"
ldflags="-s -w"
version_ldflags() {
  local v="$1" pkg="k8s.io/component-base/version"
  echo "$ldflags -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v"
}
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
kl="$(version_ldflags "$k8s_version")"
echo "building Kubernetes $k8s_version control plane into $out (one-time, ~15 min on 2 cores)" >&2
go build -ldflags "$kl" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -ldflags "$kl" -o "$tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager >&2
go build -ldflags "$kl" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl >&2
go build -ldflags "$ldflags" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
