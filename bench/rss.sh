#!/usr/bin/env bash
# Peak RSS and throughput of `spillway run --workers 4` exporting N generated documents to
# zstd Parquet on S3 (SeaweedFS on 127.0.0.1), for each N given (default: 1M and 5M).
# Shards have the same size at every N (SHARD_DOCS, default 100000), so a larger job means more
# shards, not larger ones: memory must stay flat as the job grows (guarantee 5). ROW_GROUP_BYTES
# and PART_SIZE_BYTES override the job's output settings (default: the job's defaults). Prints a Markdown table.
# The S3 server is the local SeaweedFS (scripts/services/seaweedfs.sh), or the one named by
# SPILLWAY_S3_ENDPOINT, SPILLWAY_S3_ACCESS_KEY and SPILLWAY_S3_SECRET_KEY when all three are
# set. The bucket is deleted after every run (on SeaweedFS that also frees its volumes).
#
# Documents are about 1 KiB (AVG_MESSAGE_BYTES, default 600, is the generated message size).
#
# Usage: bench/rss.sh [DOCS ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 5000000)

echo "==> building release binaries" >&2
cargo build --release --locked -q -p spillway -p searchsim
if [ -z "${SPILLWAY_S3_ENDPOINT:-}" ] || [ -z "${SPILLWAY_S3_ACCESS_KEY:-}" ] || [ -z "${SPILLWAY_S3_SECRET_KEY:-}" ]; then
  scripts/services/seaweedfs.sh start >&2
  eval "$(scripts/services/seaweedfs.sh env)"
fi
s3() { curl -s -o /dev/null -X "$1" "$SPILLWAY_S3_ENDPOINT/bench-rss" --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$SPILLWAY_S3_ACCESS_KEY:$SPILLWAY_S3_SECRET_KEY" || true; }
work=$(mktemp -d)
trap 'kill "${sim_pid:-}" 2>/dev/null || true; s3 DELETE; rm -rf "$work"' EXIT

export SPILLWAY_SECRET_S3_ACCESSKEYID=$SPILLWAY_S3_ACCESS_KEY
export SPILLWAY_SECRET_S3_SECRETACCESSKEY=$SPILLWAY_S3_SECRET_KEY
# The job's defaults unless ROW_GROUP_BYTES / PART_SIZE_BYTES are given.
row_group_line=""
part_size_line=""
[ -z "${ROW_GROUP_BYTES:-}" ] || row_group_line="    rowGroupBytes: $ROW_GROUP_BYTES"$'\n'
[ -z "${PART_SIZE_BYTES:-}" ] || part_size_line="    partSizeBytes: $PART_SIZE_BYTES"$'\n'
rows=()
for n in "${sizes[@]}"; do
  echo "==> searchsim with $n documents" >&2
  fifo="$work/sim.out"
  target/release/searchsim --port 0 --generate "$n" --days 30 --shards 3 --seed 1 \
    --avg-message-bytes "${AVG_MESSAGE_BYTES:-600}" >"$fifo" 2>"$work/sim.err" &
  sim_pid=$!
  for _ in $(seq 1 1200); do
    url=$(sed -n 's/^searchsim listening on //p' "$fifo" | head -n1)
    [ -n "$url" ] && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
    sleep 0.5
  done
  [ -n "$url" ] || { echo "searchsim did not start" >&2; exit 1; }
  cat >"$work/job.yaml" <<YAML
apiVersion: spillway.dev/v1alpha1
kind: ExportJob
metadata:
  name: rss-$n
spec:
  source:
    url: $url
    indices: ["logs-*"]
  timeRange:
    field: "@timestamp"
    gte: 2024-03-01T00:00:00Z
    lt: 2024-03-31T00:00:00Z
  sharding:
    targetDocsPerShard: ${SHARD_DOCS:-100000}
  output:
    format: parquet
    compression: zstd
    partitionBy: none
${row_group_line}${part_size_line}    destination:
      s3:
        bucket: bench-rss
        prefix: run-$(date +%s)
        endpoint: $SPILLWAY_S3_ENDPOINT
        forcePathStyle: true
        secretRef: {name: s3}
YAML
  # The bucket must exist; creating it twice is fine.
  s3 PUT
  echo "==> spillway run --workers 4 ($n documents)" >&2
  /usr/bin/time -f "%M %e %U %S" -o "$work/time" \
    target/release/spillway run "$work/job.yaml" --workers 4 --no-progress >"$work/run.out"
  read -r rss_kb wall user sys <"$work/time"
  cat "$work/run.out" >&2
  kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true
  s3 DELETE
  rows+=("$(awk -v n="$n" -v r="$rss_kb" -v w="$wall" -v u="$user" -v s="$sys" 'BEGIN {
    printf "| %d | %.1f | %.0f | %.1f | %.1f | %.2f |", n, w, n / w, r / 1024, u + s, (u + s) / (n / 1e6) }')")
done
echo
echo "| documents | wall s | docs/s | peak RSS MiB | client CPU s | CPU s per 1M docs |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
