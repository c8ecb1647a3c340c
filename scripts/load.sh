#!/usr/bin/env bash
# Load run: the release binary on 127.0.0.1 over TLS with keep-alive, driven by wrk with every
# captured AdmissionReview in tests/fixtures in turn, in front of a local ECR endpoint.
# Prints binary size, idle RSS, throughput, latency percentiles and RSS after the run.
# Usage: bash scripts/load.sh [DURATION] [CONNECTIONS]   (defaults: 20s 32)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20s}
connections=${2:-32}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
bin=target/release/ecr-token-webhook
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ecr_port=$(free_port); port=$(free_port); mport=$(free_port)
python3 tests/kube/fake_ecr.py "$ecr_port" & pids+=($!)

AWS_ENDPOINT_URL_ECR="http://127.0.0.1:$ecr_port" AWS_ACCESS_KEY_ID=AKIDLOAD AWS_SECRET_ACCESS_KEY=load \
AWS_EC2_METADATA_DISABLED=true ECR_TOKEN_WEBHOOK_LOG_LEVEL=warn ECR_TOKEN_WEBHOOK_REFRESHER=false \
  "$bin" serve --tls-self-signed --tls-self-signed-dir "$work/tls" \
  --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" 2>"$work/log" & pids+=($!)
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null || { cat "$work/log"; exit 1; }
sleep 2

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$server/status"; }
echo "binary_size_bytes=$(stat -c %s "$bin")"
echo "idle_rss=$(rss)"
# Warm the token cache (one ECR call per region), then measure.
for f in tests/fixtures/*.json; do
  curl -sf --cacert "$work/tls/ca.crt" -H 'Content-Type: application/json' --data-binary "@$f" \
    "https://127.0.0.1:$port/mutate?timeout=10s" >/dev/null
done
echo "mix: $(ls tests/fixtures/*.json | wc -l) fixtures in turn; wrk -t2 -c$connections -d$duration, keep-alive, TLS"
wrk -t2 -c"$connections" -d"$duration" --latency -s scripts/load/mix.lua "https://127.0.0.1:$port" -- tests/fixtures/*.json \
  | grep -E '^(requests=|Requests/sec|  Latency|Non-2xx)'
echo "rss_after_load=$(rss)"
curl -s "http://127.0.0.1:$mport/metrics" | grep -E '^ecr_token_webhook_(ecr_requests_total|admission_requests_total)' | sort
