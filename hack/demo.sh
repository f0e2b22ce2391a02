#!/usr/bin/env bash
# The fluxgate demo: builds what it needs (Kubernetes from its Go modules on
# the first run, ~15 minutes on 2 cores; the Rust workspace), starts a local
# control plane in .dev-cluster/, installs fluxgate and walks the journey
# with the examples/ platform and team repositories served over Git on
# loopback. Ends with a table per team and keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./hack/ensure-deps.sh
echo "==> building the demo (cargo)"
cargo build -q -p fluxgate-e2e --bin fluxgate-demo -p fluxgate-reconciler --bin fluxgate-reconciler
exec cargo run -q -p fluxgate-e2e --bin fluxgate-demo -- "$@"
