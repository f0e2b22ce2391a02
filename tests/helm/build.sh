#!/usr/bin/env bash
# Builds helm from Helm's official Go module pinned in go.mod/go.sum, once per
# pinned version set, for the chart tests (helm lint, helm template).
#
# Prints the path of the helm binary. The cache lives under
# ${FLUXGATE_CACHE:-~/.cache/fluxgate}/helm/<key>, where the key hashes go.mod,
# go.sum and the Go version. A cold build takes ~3-5 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${FLUXGATE_CACHE:-$HOME/.cache/fluxgate}/helm"
key="$(cat "$here/go.mod" "$here/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-16)"
out="$cache_root/$key"

if [[ -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi
mkdir -p "$cache_root"
# One builder at a time: test binaries may race to build on a cold machine.
exec 9>"$cache_root/.lock"
flock 9
if [[ -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi

tmp="$out.tmp.$$"
mkdir -p "$tmp"
cd "$here"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"
version="$(go list -m -f '{{.Version}}' helm.sh/helm/v4)"
echo "building helm $version into $out (one-time, a few minutes on 2 cores)" >&2
go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  -o "$tmp/helm" helm.sh/helm/v4/cmd/helm >&2
rm -rf "$out"
mv "$tmp" "$out"
echo "$out/helm"
