#!/usr/bin/env bash
# Distributed scaling: one `spillway run --broker` coordinator and 1, 2, 4 and 8
# `spillway worker` processes (one shard slot each) over a real RabbitMQ node, exporting N
# generated documents from a searchsim that adds LATENCY_MS (default 20) to every search
# request, to zstd NDJSON on a local directory. Prints a Markdown table: wall time, docs/s,
# speed-up over one worker, and the CPU seconds of the workers and of searchsim.
#
# Usage: bench/scaling.sh [DOCS]   (default 500000; PAGE_SIZE default 250, WORKERS "1 2 4 8",
# AVG_MESSAGE_BYTES default 600: documents of about 1 KiB)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
docs=${1:-500000}
latency=${LATENCY_MS:-20}
page=${PAGE_SIZE:-250}
counts=(${WORKERS:-1 2 4 8})

echo "==> building release binaries" >&2
cargo build --release --locked -q -p spillway -p searchsim
scripts/services/rabbitmq.sh start >&2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}" "${sim_pid:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> searchsim with $docs documents, ${latency} ms per search request" >&2
target/release/searchsim --port 0 --generate "$docs" --days 30 --shards 3 --seed 7 \
  --avg-message-bytes "${AVG_MESSAGE_BYTES:-600}" \
  --latency-ms "$latency" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
url=""
for _ in $(seq 1 1200); do
  url=$(sed -n 's/^searchsim listening on //p' "$work/sim.out" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
  sleep 0.5
done
[ -n "$url" ] || { echo "searchsim did not start" >&2; exit 1; }

cpu_of() { # user+sys seconds of a pid from /proc (clock ticks)
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

rows=()
base=""
for n in "${counts[@]}"; do
  vhost="scaling-$n-$(date +%s)"
  broker=$(scripts/services/rabbitmq.sh vhost "$vhost")
  out="$work/out-$n"
  cat >"$work/job-$n.yaml" <<YAML
apiVersion: spillway.dev/v1alpha1
kind: ExportJob
metadata:
  name: scaling-$n
spec:
  source:
    url: $url
    indices: ["logs-*"]
  timeRange:
    field: "@timestamp"
    gte: 2024-03-01T00:00:00Z
    lt: 2024-03-31T00:00:00Z
  sharding:
    targetDocsPerShard: 10000
    pageSize: $page
  parallelism:
    maxConcurrentShards: 16
  output:
    format: ndjson
    compression: zstd
    destination:
      volume:
        path: $out
YAML
  pids=()
  for i in $(seq 1 "$n"); do
    target/release/spillway worker --broker "$broker" --concurrency 1 --listen 127.0.0.1:0 \
      2>"$work/worker-$n-$i.log" &
    pids+=($!)
  done
  sim_cpu0=$(cpu_of "$sim_pid")
  echo "==> $n worker(s)" >&2
  start=$(date +%s.%N)
  target/release/spillway run --broker "$broker" --no-progress "$work/job-$n.yaml" >"$work/run-$n.out"
  end=$(date +%s.%N)
  sim_cpu1=$(cpu_of "$sim_pid")
  wcpu=0
  for p in "${pids[@]}"; do wcpu=$(awk -v a="$wcpu" -v b="$(cpu_of "$p")" 'BEGIN { printf "%.2f", a + b }'); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
  grep -q "^exported $docs documents" "$work/run-$n.out" || { cat "$work/run-$n.out" >&2; echo "run with $n workers did not export every document" >&2; exit 1; }
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
  rate=$(awk -v d="$docs" -v w="$wall" 'BEGIN { printf "%.0f", d / w }')
  [ -n "$base" ] || base=$rate
  rows+=("$(awk -v n="$n" -v w="$wall" -v r="$rate" -v b="$base" -v wc="$wcpu" -v s0="$sim_cpu0" -v s1="$sim_cpu1" 'BEGIN {
    printf "| %d | %.1f | %d | %.2f× | %.1f | %.1f |", n, w, r, r / b, wc, s1 - s0 }')")
  rm -rf "$out"
done
echo
echo "$docs documents, ${latency} ms added per search request, page size $page, 10k-document shards, $(nproc) cores"
echo
echo "| workers | wall s | docs/s | speed-up | workers' CPU s | searchsim CPU s |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
