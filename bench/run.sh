#!/usr/bin/env bash
# The benchmark suite's one entry point. On this machine, it:
#   1. builds the release binaries and installs the peers (elasticdump, opensearch-py, pandas,
#      pyarrow, matplotlib) with scripts/deps/bench.sh;
#   2. starts RabbitMQ and SeaweedFS (scripts/services/);
#   3. main: exports one generated data set with spillway and its peers, side by side
#      (bench/compare.py): wall time, docs/s, client CPU per 1M docs, peak RSS, output bytes,
#      completeness; writes a PNG chart;
#   4. rss: peak RSS of `spillway run --workers 4` at each size in RSS_SIZES (bench/rss.sh);
#   5. scaling: 1, 2, 4, 8 worker processes at 20 ms per search request (bench/scaling.sh);
#   6. micro: criterion benchmarks of the hot path next to memcpy and JSON validation
#      (bench/micro.sh);
#   7. real: the main comparison again, exporting from a real OpenSearch 3.x node
#      (scripts/services/opensearch.sh, heap REAL_HEAP, default 2g) loaded with the same data
#      (REAL_DOCS documents, default --docs);
# then writes bench/RESULTS.md (machine, data set, every table, and each target checked).
#
# Usage: bench/run.sh [--docs N] [--sections main,rss,scaling,micro,real] [--out DIR]
#   --docs N        documents in the main comparison (default 1000000)
#   --sections      which parts to run (default: all five)
#   --out DIR       where RESULTS.md, results.png and results.json go (default: bench/)
#   --quick         small sizes for a fast check of the whole pipeline (20k docs; RSS at 20k
#                   and 40k; scaling with 20k docs and 1 and 4 workers; real node with 20k
#                   docs; micro skipped)
# Environment: AVG_MESSAGE_BYTES (default 600, about 1 KiB documents), RSS_SIZES (default
# "1000000 5000000"), SCALING_DOCS (default 500000), TIMEOUT (seconds per tool, default 3600).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

docs=1000000
sections="main,rss,scaling,micro,real"
out="$root/bench"
rss_sizes=${RSS_SIZES:-1000000 5000000}
scaling_docs=${SCALING_DOCS:-500000}
scaling_workers=${WORKERS:-1 2 4 8}
while [ $# -gt 0 ]; do
  case "$1" in
    --docs) docs=$2; shift 2 ;;
    --sections) sections=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick)
      docs=20000; rss_sizes="20000 40000"; scaling_docs=20000; scaling_workers="1 4"
      sections="main,rss,scaling,real"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
has() { [[ ",$sections," == *",$1,"* ]]; }
log() { echo "[bench] $*" >&2; }
mkdir -p "$out"
export AVG_MESSAGE_BYTES=${AVG_MESSAGE_BYTES:-600}

log "building release binaries"
cargo build --release --locked -q -p spillway -p searchsim
scripts/deps/bench.sh >&2
scripts/services/rabbitmq.sh start >&2
scripts/services/seaweedfs.sh start >&2
eval "$(scripts/services/seaweedfs.sh env)"
py="$root/.work/bench-venv/bin/python"

parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
started=$(date -u +%Y-%m-%dT%H:%MZ)

if has main; then
  log "main comparison: $docs documents"
  "$py" bench/compare.py --docs "$docs" --avg-message-bytes "$AVG_MESSAGE_BYTES" \
    --timeout "${TIMEOUT:-3600}" --markdown "$parts/main.md" --png "$out/results.png" \
    --json "$out/results.json" || log "some spillway export in the comparison was incomplete (see above)"
fi
if has rss; then
  log "peak RSS at $rss_sizes documents"
  # shellcheck disable=SC2086
  bench/rss.sh $rss_sizes >"$parts/rss.md"
fi
if has scaling; then
  log "scaling with $scaling_docs documents"
  WORKERS="$scaling_workers" bench/scaling.sh "$scaling_docs" >"$parts/scaling.md"
fi
if has real; then
  real_docs=${REAL_DOCS:-$docs}
  heap=${REAL_HEAP:-2g}
  log "real node: $real_docs documents in a real OpenSearch 3.x node ($heap heap)"
  scripts/services/opensearch.sh stop 3 >&2 || true
  SPILLWAY_OPENSEARCH_HEAP=$heap scripts/services/opensearch.sh start 3 >&2
  eval "$(scripts/services/opensearch.sh env 3)"
  node_version=$(curl -fsS "$SPILLWAY_OPENSEARCH3_URL/" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["version"]["number"])')
  "$py" bench/compare.py --docs "$real_docs" --avg-message-bytes "$AVG_MESSAGE_BYTES" \
    --timeout "${TIMEOUT:-3600}" --real-url "$SPILLWAY_OPENSEARCH3_URL" \
    --server-label "a real OpenSearch $node_version node (one JVM, $heap heap, on the same machine)" \
    --markdown "$parts/real.md" --png "$out/results-real.png" --json "$out/results-real.json" \
    || log "some spillway export from the real node was incomplete (see above)"
  scripts/services/opensearch.sh stop 3 >&2 || true
fi
if has micro; then
  log "micro-benchmarks"
  bench/micro.sh >"$parts/micro.md"
fi

"$py" bench/assemble.py --parts "$parts" --started "$started" --json "$out/results.json" \
  --png-name results.png >"$out/RESULTS.md"
log "wrote $out/RESULTS.md"
cat "$out/RESULTS.md"
