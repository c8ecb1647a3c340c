#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first (moto, into .venv), so it works
# on a fresh machine with only the Rust toolchain and Python.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c 'import moto.server' 2>/dev/null; then
  echo "--- installing test tools into .venv (tests/requirements.txt)"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
export ECR_TOKEN_WEBHOOK_TEST_PYTHON="$PWD/.venv/bin/python"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
