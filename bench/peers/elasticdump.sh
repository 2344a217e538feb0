#!/usr/bin/env bash
# Peer exporter for the benchmark: elasticdump (installed by scripts/deps/node.sh into
# <repo>/.work/node) exporting the documents of INDEX to one plain NDJSON file, one
# {"_index","_id","_score","_source"} object per line, with its fastest documented settings.
# The node process replaces this shell (exec), so a parent measuring its child with wait4(2)
# sees elasticdump itself.
#
# Usage: bench/peers/elasticdump.sh URL INDEX OUT     (e.g. http://127.0.0.1:9200 'logs-*' out.ndjson)
#
# Settings: scroll (elasticdump's default reader) with --limit=10000, the largest page
# index.max_result_window allows; --type=data; no --fsCompress (plain file); no
# --support-big-int (the data has no integers beyond 2^53); --quiet (no log line per batch);
# --overwrite so a rerun replaces OUT. elasticdump reads one page at a time (there is no
# concurrency option for one index), so the page size and the search body are what there is to tune.
#
# Tried on 100k searchsim documents (580-byte messages, 30 indices x 3 shards; the 2-core machine
# was shared with other builds, load 4-6, so wall times are noisy; 5 runs each, wall seconds,
# median first; client CPU was 3.3-4.1 s for every variant):
#   --limit=10000                                     median 5.34 (4.53 4.71 5.34 5.52 7.47), RSS 460 MB
#   --limit=5000                                      median 5.85 (4.66 .. 6.62), RSS 410 MB
#   --limit=1000                                      median 5.66 (3.93 .. 10.90), RSS 290 MB
#   --limit=500                                       median 5.88 (4.17 .. 11.84), RSS 280 MB
#   --limit=1000 --searchBody '{"query":{"match_all":{}}}' (no stored_fields)  median 5.20 (4.24 .. 8.09)
#   --limit=10000 --scroll-with-post                  4.29 / 6.43 (2 runs): no gain over GET
#   --searchAfter --pit (all 100k exported only with --input=URL without an index, i.e. every
#     index "*", and --searchBody sorting on _id, because searchsim as OpenSearch 2.19 has no
#     _shard_doc): 4.30 4.84 5.81, no gain, and it cannot be limited to INDEX (see below)
# The variants are within noise of each other on CPU; --limit=10000 is kept because it is the
# documented maximum, its median was the best of the plain scroll runs, and it makes the fewest
# round trips, which is what counts once the cluster is not on the same machine.
#
# elasticdump 6.125.1's search_after modes do not work with an index in the URL, against any
# OpenSearch (the requests are wrong, not the server):
#   --searchAfter --pit with --input=URL/INDEX (or --input-index=INDEX) sends
#     POST /INDEX/INDEX/_search/point_in_time?keep_alive=5m  -> 400 "no handler found for uri"
#   --searchAfter without --pit sends POST /_search with
#     {"size":..,"query":..,"sort":..,"pit":{"keep_alive":"5m"}} -> 400 parsing_exception "[pit] requires [id]"
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 URL INDEX OUT" >&2
  exit 2
fi
url="${1%/}"
index="$2"
out="$3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${repo_root}/.work/node/node_modules/.bin/elasticdump"
if [[ ! -x "${bin}" ]]; then
  echo "elasticdump.sh: ${bin} is missing; run scripts/deps/bench.sh (or scripts/deps/node.sh)" >&2
  exit 1
fi

exec "${bin}" \
  --input="${url}/${index}" \
  --output="${out}" \
  --type=data \
  --limit=10000 \
  --overwrite \
  --quiet
