# syntax=docker/dockerfile:1
#
# ecr-token-webhook: a static (musl) binary on distroless, running as 65532:65532.
#   docker build -t ecr-token-webhook:0.1.0 .
# Builds linux/amd64 (x86_64-unknown-linux-musl). Needs BuildKit (the default builder).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
ARG TARGET=x86_64-unknown-linux-musl
# musl-tools: musl-gcc, which compiles aws-lc-sys and ring's C for the musl target.
# cmake: aws-lc-sys falls back to its CMake build where its cc build cannot run.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
# Only what the release binary is built from (the manifest names the bench target, so its
# source must be present for Cargo to read the manifest).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the registry and compiled dependencies between builds; the binary is
# copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --target "${TARGET}" --bin ecr-token-webhook \
 && install -D -m 0755 "target/${TARGET}/release/ecr-token-webhook" /out/ecr-token-webhook
# Refuse a binary that is not static (it would not start on distroless/static), and one that
# does not run at all.
RUN if readelf -l /out/ecr-token-webhook | grep -q 'program interpreter'; then \
      echo "ecr-token-webhook is dynamically linked" >&2; exit 1; \
    fi \
 && /out/ecr-token-webhook --version

# distroless/static: CA certificates (for the AWS endpoints), /etc/passwd with nonroot (65532),
# tzdata; no shell, no package manager.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="ecr-token-webhook" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that keeps Amazon ECR tokens fresh in Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ecr-token-webhook /usr/local/bin/ecr-token-webhook
USER 65532:65532
# 8443: HTTPS POST /mutate. 9090: plain HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/ecr-token-webhook"]
CMD ["--help"]
