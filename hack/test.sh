#!/usr/bin/env bash
# The test command: builds the Kubernetes control-plane binaries the
# end-to-end tests need (once; cached in ~/.cache/fluxgate), then runs every
# test in the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./hack/ensure-deps.sh

echo "==> control-plane binaries (first run builds Kubernetes from its Go modules, ~15 min on 2 cores)"
bin_dir="$(tests/envtest/build.sh)"
export FLUXGATE_ENVTEST_BIN="$bin_dir"
"$bin_dir/kube-apiserver" --version

echo "==> cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary,
# the last of which is often a doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
