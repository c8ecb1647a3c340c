# syntax=docker/dockerfile:1
#
# ecr-token-webhook: a static (musl) binary on distroless, running as 65532:65532, for
# linux/amd64 and linux/arm64.
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/ecr-token-webhook:0.1.0 --push .
#   docker build -t ecr-token-webhook:0.1.0 .        # the build machine's platform only
# Needs BuildKit (the default builder). The builder stage runs natively on the build machine
# ($BUILDPLATFORM) and cross-compiles for $TARGETPLATFORM, so no emulation is needed to build:
# cargo-zigbuild uses zig as the C compiler and linker, and zig brings musl's headers and libc for
# both targets, which aws-lc-sys and ring compile their C and assembly against.

# The Rust release is the one CI tests with (.github/workflows/ci.yml; the release tests check
# that they agree). The runtime is pinned by the digest of the multi-arch index of
# gcr.io/distroless/static-debian12:nonroot; to move it, take the new digest from
# `crane digest gcr.io/distroless/static-debian12:nonroot`.
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
# zig (PyPI ziglang) and cargo-zigbuild at versions that cargo-zigbuild's own CI tests together,
# aarch64-unknown-linux-musl included. cargo-auditable (0.7.3 or later works with zigbuild)
# embeds the crate list in the binary, so SBOM scanners (syft, BuildKit's SBOM attestation) see
# the crates inside it and not only the base image's packages.
ARG ZIGLANG_VERSION=0.16.0
ARG CARGO_ZIGBUILD_VERSION=0.22.3
ARG CARGO_AUDITABLE_VERSION=0.7.5
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# python3-venv: bookworm's pip refuses to install into the system Python, so the two PyPI
# packages go into a venv. Its Debian version is whatever bookworm (pinned by the image tag)
# carries: apt cannot pin a version the archive has already replaced.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/zig \
 && /opt/zig/bin/pip install --no-cache-dir \
      "ziglang==${ZIGLANG_VERSION}" "cargo-zigbuild==${CARGO_ZIGBUILD_VERSION}" \
 && cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}" \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# The venv first: cargo-zigbuild runs `python3 -m ziglang`.
ENV PATH="/opt/zig/bin:${PATH}" \
    CARGO_TERM_COLOR=never
WORKDIR /src
# Only what the release binary is built from (the manifest names the bench target, so its
# source must be present for Cargo to read the manifest).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Declared here, not above, so the toolchain layers are shared by both platforms' builds.
ARG TARGETARCH
# Cache mounts keep the registry, compiled dependencies and zig's cache between builds; the
# binary is copied out of the cached target directory. Then: refuse a binary for the wrong
# machine, one that is not static (it would not start on distroless/static), and, when it can
# run here, one that does not run at all.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    --mount=type=cache,target=/root/.cache,sharing=locked \
    case "${TARGETARCH}" in \
      amd64) target=x86_64-unknown-linux-musl; machine="X86-64" ;; \
      arm64) target=aarch64-unknown-linux-musl; machine="AArch64" ;; \
      *) echo "TARGETARCH=${TARGETARCH}: only linux/amd64 and linux/arm64 are built" >&2; exit 1 ;; \
    esac \
 && cargo auditable zigbuild --release --locked --target "${target}" --bin ecr-token-webhook \
 && install -D -m 0755 "target/${target}/release/ecr-token-webhook" /out/ecr-token-webhook \
 && if ! readelf -h /out/ecr-token-webhook | grep -q "Machine:.*${machine}"; then \
      echo "ecr-token-webhook is not a ${machine} binary" >&2; exit 1; \
    fi \
 && if readelf -l /out/ecr-token-webhook | grep -q 'program interpreter'; then \
      echo "ecr-token-webhook is dynamically linked" >&2; exit 1; \
    fi \
 && if [ "$(dpkg --print-architecture)" = "${TARGETARCH}" ]; then \
      /out/ecr-token-webhook --version; \
    fi

# distroless/static: CA certificates (for the AWS endpoints), /etc/passwd with nonroot (65532),
# tzdata; no shell, no package manager. Built for $TARGETPLATFORM.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="ecr-token-webhook" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that keeps Amazon ECR tokens fresh in Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ecr-token-webhook /usr/local/bin/ecr-token-webhook
# OpenShift's restricted-v2 SCC replaces this user with an arbitrary UID of the namespace's range
# and group 0 (docs/openshift.md). Nothing here depends on the user: the binary is root-owned,
# mode 0755, and writes no file in a cluster; only `serve --tls-self-signed` (local runs) writes,
# under $TMPDIR, /tmp, which distroless makes writable by everyone (1777).
USER 65532:65532
# 8443: HTTPS POST /mutate. 9090: plain HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/ecr-token-webhook"]
CMD ["--help"]
