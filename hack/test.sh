#!/usr/bin/env bash
# The test command: builds the Kubernetes control-plane binaries the
# end-to-end tests need (once; cached in ~/.cache/fluxgate), then runs every
# test in the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> control-plane binaries (first run builds Kubernetes from its Go modules, ~15 min on 2 cores)"
bin_dir="$(tests/envtest/build.sh)"
export FLUXGATE_ENVTEST_BIN="$bin_dir"
"$bin_dir/kube-apiserver" --version

echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
