#!/usr/bin/env bash
# The admission path against its floor, side by side in one run on one machine: ecr-token-webhook
# (release build, warm token cache, a local ECR endpoint) and the null webhooks of
# benches/floor/null_webhook.rs on the same transport (axum over rustls, HTTP/1.1 keep-alive),
# one answering "allowed" and one answering a constant patch of our patch's shape. wrk sends the
# captured touch (tests/fixtures/argocd-repository-update-touch.json) over TLS.
#
# Prints, for 16 connections and for 1: requests/s and p50/p90/p99 of each server, and ours
# against the floor (throughput as a ratio, p90 as a difference); then ours' RSS after the load
# (and its peak), its time from start to ready and its idle RSS. Ratios, never absolute
# targets: the machine is shared and noisy, so compare within one run.
#
# Usage: bash scripts/bench.sh [DURATION] [ROUNDS]   (defaults: 10s 2)
#        ECR_TOKEN_WEBHOOK_BENCH_BIN=path/to/ecr-token-webhook bash scripts/bench.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
rounds=${2:-2}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin ecr-token-webhook --example null-webhook
# Another build of ours (an allocator, a profile) can be measured against the same floor.
bin=${ECR_TOKEN_WEBHOOK_BENCH_BIN:-target/release/ecr-token-webhook}
null=target/release/examples/null-webhook
fixture=tests/fixtures/argocd-repository-update-touch.json
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tls() { # port ca
  for _ in $(seq 100); do
    curl -s --cacert "$2" -o /dev/null "https://127.0.0.1:$1/" && return 0; sleep 0.1
  done
  echo "nothing listening on $1" >&2; return 1
}

ecr_port=$(free_port); ours=$(free_port); mport=$(free_port); allow=$(free_port); patch=$(free_port)
python3 tests/kube/fake_ecr.py "$ecr_port" & pids+=($!)
# Ours' settings, for the load run and the start-up runs below (the other servers ignore them).
export AWS_ENDPOINT_URL_ECR="http://127.0.0.1:$ecr_port" AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench \
  AWS_EC2_METADATA_DISABLED=true ECR_TOKEN_WEBHOOK_LOG_LEVEL=warn ECR_TOKEN_WEBHOOK_REFRESHER=false
"$bin" serve --tls-self-signed --tls-self-signed-dir "$work/ours" \
  --listen "127.0.0.1:$ours" --metrics-listen "127.0.0.1:$mport" 2>"$work/ours.log" & pids+=($!)
"$null" allow "127.0.0.1:$allow" "$work/allow" >/dev/null & pids+=($!)
"$null" patch "127.0.0.1:$patch" "$work/patch" >/dev/null & pids+=($!)
for _ in $(seq 100); do [[ -f $work/ours/ca.crt && -f $work/allow/ca.crt && -f $work/patch/ca.crt ]] && break; sleep 0.1; done
wait_tls "$ours" "$work/ours/ca.crt"; wait_tls "$allow" "$work/allow/ca.crt"; wait_tls "$patch" "$work/patch/ca.crt"
# Warm the token cache: one ECR call, then every request is a cache hit.
curl -sf --cacert "$work/ours/ca.crt" -H 'Content-Type: application/json' --data-binary "@$fixture" \
  "https://127.0.0.1:$ours/mutate?timeout=10s" | grep -q '"patch"' || { echo "no patch from ecr-token-webhook" >&2; cat "$work/ours.log" >&2; exit 1; }

run() { # port connections -> "rps p50 p90 p99" (ms)
  wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"$duration" -s scripts/load/mix.lua "https://127.0.0.1:$1" -- "$fixture" \
    | awk '/^requests=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                          print v["rps"], v["p50_ms"], v["p90_ms"], v["p99_ms"], v["errors"] + v["non2xx"] }'
}

echo "ecr-token-webhook vs the null webhooks, touch review, wrk over TLS keep-alive, $duration per run, $rounds rounds"
printf '%-5s %-6s %-18s %10s %9s %9s %9s %6s\n' conns round server req/s p50_ms p90_ms p99_ms errors
for conns in 16 1; do
  for round in $(seq "$rounds"); do
    # Interleaved, so drift in the machine's load hits all three alike.
    read -r o_rps o_p50 o_p90 o_p99 o_err < <(run "$ours" "$conns")
    read -r a_rps a_p50 a_p90 a_p99 a_err < <(run "$allow" "$conns")
    read -r p_rps p_p50 p_p90 p_p99 p_err < <(run "$patch" "$conns")
    printf '%-5s %-6s %-18s %10s %9s %9s %9s %6s\n' "$conns" "$round" ecr-token-webhook "$o_rps" "$o_p50" "$o_p90" "$o_p99" "$o_err"
    printf '%-5s %-6s %-18s %10s %9s %9s %9s %6s\n' "$conns" "$round" null-allow "$a_rps" "$a_p50" "$a_p90" "$a_p99" "$a_err"
    printf '%-5s %-6s %-18s %10s %9s %9s %9s %6s\n' "$conns" "$round" null-patch "$p_rps" "$p_p50" "$p_p90" "$p_p99" "$p_err"
    awk -v c="$conns" -v o="$o_rps" -v a="$a_rps" -v p="$p_rps" -v op90="$o_p90" -v ap90="$a_p90" -v pp90="$p_p90" 'BEGIN {
      printf "      ratio: throughput %.2f x null-allow, %.2f x null-patch; p90 +%.0f us over null-allow, +%.0f us over null-patch\n",
        o / a, o / p, (op90 - ap90) * 1000, (op90 - pp90) * 1000 }'
  done
done
awk '/VmRSS/ {print "ecr-token-webhook rss_after=" $2 " kB"} /VmHWM/ {print "ecr-token-webhook rss_peak=" $2 " kB"}' "/proc/${pids[1]}/status"

# Start to ready and idle RSS: fresh starts of ours (self-signed TLS, no Kubernetes), /readyz
# polled every millisecond from exec; RSS read once ready and again after a second idle.
python3 - "$bin" "$work" <<'PY'
import socket, statistics, subprocess, sys, time
binary, work = sys.argv[1], sys.argv[2]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as c:
            c.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
took, idle = [], []
for i in range(5):
    port, mport = free(), free()
    started = time.monotonic()
    p = subprocess.Popen([binary, "serve", "--tls-self-signed", "--tls-self-signed-dir", f"{work}/start{i}",
                          "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"],
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(5000):
            if ready(mport):
                took.append((time.monotonic() - started) * 1000)
                break
            if p.poll() is not None:
                sys.exit(f"ecr-token-webhook exited with {p.returncode} before it was ready")
            time.sleep(0.001)
        else:
            sys.exit("ecr-token-webhook not ready within 5 s")
        time.sleep(1)
        idle.append(rss(p.pid))
    finally:
        p.terminate(); p.wait(timeout=10)
print(f"ecr-token-webhook start_to_ready_ms median={statistics.median(took):.1f} max={max(took):.1f} (5 starts)")
print(f"ecr-token-webhook rss_idle={statistics.median(idle)} kB (median of 5, 1 s after ready)")
PY
