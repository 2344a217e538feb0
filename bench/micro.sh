#!/usr/bin/env bash
# Micro-benchmarks of the export hot path on one 1000-hit search response page (criterion,
# crates/engine/benches/hot_path.rs): decode, decode + NDJSON, decode + Parquet (each with and
# without compression), next to a memcpy, a JSON validation, a UTF-8 validation, a SHA-256 and
# a BLAKE3 digest (what the executor computes of its output) of the same body bytes.
# Prints the machine, the page size and a Markdown table: MB/s of response-body bytes on one
# core (1 MB = 10^6 bytes), docs/s, and the ratio to JSON validation, from criterion's mean,
# plus MB/s and the ratio from each benchmark's fastest sample (less disturbed by a busy
# machine).
#
# Usage: bench/micro.sh [criterion filter]   (extra arguments go to the bench binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/start"

echo "==> cargo bench -p spillway-engine --bench hot_path" >&2
cargo bench -p spillway-engine --bench hot_path -- "$@" | tee "$work/bench.out" >&2

target_dir=${CARGO_TARGET_DIR:-$root/target}
results=${CRITERION_HOME:-$target_dir/criterion}/hot_path

python3 - "$work/bench.out" "$results" "$work/start" <<'PY'
import json, os, re, subprocess, sys

out_path, results, start = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(out_path, encoding="utf-8", errors="replace").read()
m = re.search(r"hot_path page: docs=(\d+) body_bytes=(\d+) mean_source_bytes=(\d+) mean_hit_bytes=(\d+)", text)
if not m:
    sys.exit("the bench output has no 'hot_path page:' line; did the benchmark run?")
docs, body, mean_src, mean_hit = (int(g) for g in m.groups())
outputs = dict(re.findall(r"hot_path output: (\S+) bytes_per_page=(\d+)", text))

cpu = "unknown"
try:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()

print(f"Machine: {nproc} CPUs, {cpu}")
print(f"Page: {docs} hits, {body} bytes of response body "
      f"(mean _source {mean_src} bytes, mean hit {mean_hit} bytes)")
for name, size in outputs.items():
    print(f"Encoded page, {name}: {size} bytes ({int(size) / body:.2f} of the body)")
print("Single-threaded: MB/s is per core (1 MB = 10^6 bytes of response body).")
print()

order = ["memcpy", "json_validate", "utf8_validate", "sha256", "blake3", "decode", "decode_ndjson",
         "decode_ndjson_zstd", "decode_parquet", "decode_parquet_zstd"]
labels = {
    "memcpy": "memcpy of the body (reference)",
    "json_validate": "JSON validation, serde IgnoredAny (reference)",
    "utf8_validate": "UTF-8 validation, std::str::from_utf8 (reference)",
    "sha256": "SHA-256 of the body (reference)",
    "blake3": "BLAKE3 of the body (the executor's output digest)",
    "decode": "decode (Page::parse + docs)",
    "decode_ndjson": "decode + NDJSON, no compression",
    "decode_ndjson_zstd": "decode + NDJSON + zstd 3 (default)",
    "decode_parquet": "decode + Parquet, uncompressed",
    "decode_parquet_zstd": "decode + Parquet + zstd 3 (default)",
}
start_mtime = os.path.getmtime(start)
means, bests = {}, {}
for name in order:
    est = os.path.join(results, name, "new", "estimates.json")
    if not os.path.exists(est) or os.path.getmtime(est) < start_mtime:
        continue  # filtered out of this run: do not report an older result
    with open(est, encoding="utf-8") as f:
        means[name] = json.load(f)["mean"]["point_estimate"] * 1e-9  # seconds per page
    with open(os.path.join(results, name, "new", "sample.json"), encoding="utf-8") as f:
        sample = json.load(f)
    bests[name] = min(t / i for t, i in zip(sample["times"], sample["iters"])) * 1e-9
if not means:
    sys.exit(f"no fresh criterion results under {results}")

ref, best_ref = means.get("json_validate"), bests.get("json_validate")
print("| benchmark | MB/s | docs/s | vs JSON validation | MB/s, fastest sample | vs JSON validation, fastest |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name in order:
    if name not in means:
        continue
    secs, best = means[name], bests[name]
    ratio = f"{(ref / secs):.2f}" if ref else "n/a"
    best_ratio = f"{(best_ref / best):.2f}" if best_ref else "n/a"
    print(f"| {labels[name]} | {body / secs / 1e6:,.0f} | {docs / secs:,.0f} | {ratio} "
          f"| {body / best / 1e6:,.0f} | {best_ratio} |")
if ref and "decode_ndjson" in means:
    r = ref / means["decode_ndjson"]
    rb = best_ref / bests["decode_ndjson"]
    verdict = "meets" if r >= 0.5 else "misses"
    print()
    print(f"NDJSON hot path (decode + NDJSON, no compression) at {r:.2f} of JSON validation "
          f"speed ({rb:.2f} by fastest samples): {verdict} the target of 0.5.")
PY
