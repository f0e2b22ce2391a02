#!/usr/bin/env bash
# Runs a local fluxgate control plane (etcd + kube-apiserver +
# kube-controller-manager on loopback, CRDs from deploy/crds installed) until
# Ctrl-C, and prints the KUBECONFIG and PATH exports that make kubectl use it.
# Files live in .dev-cluster/ (recreated on every start, kept after stop).
#
# The first run builds the Kubernetes binaries from their Go modules, which
# takes ~15 minutes on 2 cores; later runs start in seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run -q -p fluxgate-e2e --bin fluxgate-dev-cluster -- "$@"
