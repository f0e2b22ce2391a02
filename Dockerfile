# syntax=docker/dockerfile:1
# The three fluxgate images, from one build of static binaries:
#
#   docker build --target operator          -t ghcr.io/fluxgate-dev/operator:v0.1.0 .
#   docker build --target admission-webhook -t ghcr.io/fluxgate-dev/admission-webhook:v0.1.0 .
#   docker build --target reconciler        -t ghcr.io/fluxgate-dev/reconciler:v0.1.0 .
#
# Binaries are linked statically against musl (libgit2 and OpenSSL vendored
# through the reconciler's `vendored` feature; everything else is rustls),
# so the runtime image is distroless/static: no shell, no package manager,
# no libc, running as the nonroot user 65532 that the chart's restricted
# securityContext expects. (Not built in fluxgate's CI: that machine has no
# container engine.)

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools perl make \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
      -p fluxgate-operator -p fluxgate-admission-webhook -p fluxgate-reconciler \
      --features fluxgate-reconciler/vendored \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-musl/release/fluxgate-operator \
       target/x86_64-unknown-linux-musl/release/fluxgate-admission-webhook \
       target/x86_64-unknown-linux-musl/release/fluxgate-reconciler /out/

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/fluxgate-operator /fluxgate-operator
USER 65532:65532
ENTRYPOINT ["/fluxgate-operator"]

FROM gcr.io/distroless/static-debian12:nonroot AS admission-webhook
COPY --from=build /out/fluxgate-admission-webhook /fluxgate-admission-webhook
USER 65532:65532
ENTRYPOINT ["/fluxgate-admission-webhook"]

FROM gcr.io/distroless/static-debian12:nonroot AS reconciler
COPY --from=build /out/fluxgate-reconciler /fluxgate-reconciler
USER 65532:65532
ENTRYPOINT ["/fluxgate-reconciler"]
