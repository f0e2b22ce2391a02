#!/usr/bin/env bash
# System packages the build and tests need beyond Rust and Go: git (the
# loopback Git server in tests), pkg-config and OpenSSL headers (libgit2's
# HTTPS), iproute2 (`ip`: the tests find this machine's non-loopback address
# for EndpointSlices). Installs them from Debian's packages when missing
# (needs root).
set -euo pipefail
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ! pkg-config --exists openssl 2>/dev/null; then missing+=(libssl-dev); fi
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
