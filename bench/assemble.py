#!/usr/bin/env python3
"""Writes bench/RESULTS.md from the parts bench/run.sh collected, and checks each target.

The parts are the outputs of bench/compare.py (main.md and results.json; real.md for the real
node), bench/rss.sh
(rss.md), bench/scaling.sh (scaling.md) and bench/micro.sh (micro.md); any may be missing, in
which case its section says it was not run and its target is not checked.
Usage: assemble.py --parts DIR --started TIME [--json results.json] [--png-name results.png]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CPU_TARGET = 10.0
RSS_LIMIT_MIB = 150.0
RSS_FLAT = 0.15
SCALING_TARGET = 3.5
HOT_PATH_TARGET = 0.5


def tables(md: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of a text, as rows keyed by header cell."""
    out: list[list[dict[str, str]]] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|\s*:?-", lines[i + 1]):
            head = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(head, cells)))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def num(cell: str) -> float | None:
    m = re.search(r"-?[0-9][0-9,]*\.?[0-9]*", cell or "")
    return float(m.group(0).replace(",", "")) if m else None


def verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[ok]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=Path, required=True)
    ap.add_argument("--started", required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png-name", default="results.png")
    args = ap.parse_args()

    def part(name: str) -> str | None:
        p = args.parts / name
        return p.read_text() if p.exists() else None

    main_md, rss_md, scaling_md, micro_md = (part(n) for n in ("main.md", "rss.md", "scaling.md", "micro.md"))
    rows = json.loads(args.json.read_text()) if args.json and args.json.exists() and main_md else []
    targets: list[str] = []

    # 1. CPU against elasticdump and helpers.scan. Like for like is the same output (plain
    # NDJSON); the ratios with zstd NDJSON and zstd Parquet are shown beside it.
    def cpu_per_m(r: dict | None) -> float | None:
        if not r or r.get("cpu_s") is None or not r["docs"]:
            return None
        return r["cpu_s"] / (r["docs"] / 1e6)

    def ours(prefix: str) -> dict | None:
        return next((r for r in rows if r["tool"] == "spillway run, 4 workers"
                     and r["output"].startswith(prefix) and r["complete"]), None)

    plain, zstd, pq = ours("NDJSON, uncompressed"), ours("NDJSON zstd"), ours("Parquet zstd")
    for peer in ("elasticdump", "opensearch-py helpers.scan"):
        p = next((r for r in rows if r["tool"] == peer and r["complete"]), None)
        name = f"| ≥ {CPU_TARGET:.0f}× less client CPU per 1M docs than {peer} |"
        if cpu_per_m(plain) and cpu_per_m(p):
            ratio = cpu_per_m(p) / cpu_per_m(plain)
            others = "".join(f"; {label} {cpu_per_m(p) / cpu_per_m(r):.1f}×"
                             for label, r in (("NDJSON zstd", zstd), ("Parquet zstd", pq)) if cpu_per_m(r))
            targets.append(f"{name} {ratio:.1f}× with the same output, plain NDJSON ({peer} "
                           f"{cpu_per_m(p):.2f} s, spillway 4 workers {cpu_per_m(plain):.2f} s){others} | "
                           f"{verdict(ratio >= CPU_TARGET)} |")
        else:
            targets.append(f"{name} — | {verdict(None)} |")

    # 2. RSS: at most 150 MiB with 4 workers, flat from the smallest to the largest size
    rss_rows = [r for t in tables(rss_md or "") for r in t if "peak RSS MiB" in r]
    if rss_rows:
        pts = [(num(r["documents"]), num(r["peak RSS MiB"])) for r in rss_rows]
        pts = [(d, m) for d, m in pts if d and m]
        top = max(m for _, m in pts)
        growth = pts[-1][1] / pts[0][1] - 1 if len(pts) > 1 else 0.0
        desc = ", ".join(f"{d:,.0f} docs: {m:.1f} MiB" for d, m in pts)
        targets.append(f"| peak RSS ≤ {RSS_LIMIT_MIB:.0f} MiB with 4 workers, flat (≤ {RSS_FLAT:.0%} growth) | "
                       f"{desc}; growth {growth:+.1%} | {verdict(top <= RSS_LIMIT_MIB and growth <= RSS_FLAT)} |")
    else:
        targets.append(f"| peak RSS ≤ {RSS_LIMIT_MIB:.0f} MiB with 4 workers, flat | — | {verdict(None)} |")

    # 3. scaling: 4 worker processes at least 3.5 times one, at 20 ms per request
    sc = [r for t in tables(scaling_md or "") for r in t if "speed-up" in r]
    four = next((r for r in sc if num(r.get("workers", "")) == 4), None)
    if four:
        s = num(four["speed-up"]) or 0.0
        targets.append(f"| 4 workers ≥ {SCALING_TARGET}× one worker at 20 ms per request | {s:.2f}× | "
                       f"{verdict(s >= SCALING_TARGET)} |")
    else:
        targets.append(f"| 4 workers ≥ {SCALING_TARGET}× one worker at 20 ms per request | — | {verdict(None)} |")

    # 4. hot path: NDJSON at least half the JSON-validation speed
    mr = [r for t in tables(micro_md or "") for r in t]
    first_col = lambda r: next(iter(r.values()), "")  # noqa: E731
    mbs_col = lambda r: next((v for k, v in r.items() if "MB/s" in k), "")  # noqa: E731
    ndj = next((r for r in mr if first_col(r).startswith("decode + NDJSON, no compression")), None)
    jv = next((r for r in mr if first_col(r).startswith("JSON validation")), None)
    if ndj and jv and num(mbs_col(ndj)) and num(mbs_col(jv)):
        ratio = num(mbs_col(ndj)) / num(mbs_col(jv))
        targets.append(f"| NDJSON hot path ≥ {HOT_PATH_TARGET:.0%} of JSON validation | {ratio:.2f} "
                       f"({num(mbs_col(ndj)):,.0f} vs {num(mbs_col(jv)):,.0f} MB/s) | {verdict(ratio >= HOT_PATH_TARGET)} |")
    else:
        targets.append(f"| NDJSON hot path ≥ {HOT_PATH_TARGET:.0%} of JSON validation | — | {verdict(None)} |")

    out = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.sh`, started {args.started}. Every number below comes from that run on "
        "the machine it names; `bench/README.md` says how each is measured and what the numbers mean.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        *targets,
        "",
        "## Export tools side by side",
        "",
    ]
    if main_md:
        out += [main_md.rstrip(), "", f"![throughput, CPU and memory of each tool]({args.png_name})", ""]
    else:
        out += ["Not run in this invocation.", ""]
    real_md = part("real.md")
    out += ["## Against a real OpenSearch node (`--sections real`)", "",
            "The same data set loaded into a real OpenSearch 3.x node (`searchsim --load-into`) and "
            "exported with every tool. The node runs on the same cores, so wall times include its "
            "work; client CPU per 1M documents is the figure to compare with the searchsim rows.", ""]
    out += [real_md.rstrip() if real_md else "Not run in this invocation.", ""]
    out += ["## Peak memory as the job grows (`bench/rss.sh`)", "",
            "`spillway run --workers 4`, zstd Parquet to S3 (SeaweedFS), 100k-document shards.", ""]
    out += [rss_md.strip() if rss_md else "Not run in this invocation.", ""]
    out += ["## Scaling out over RabbitMQ (`bench/scaling.sh`)", ""]
    out += [scaling_md.strip() if scaling_md else "Not run in this invocation.", ""]
    out += ["## Hot path micro-benchmarks (`bench/micro.sh`)", ""]
    out += [micro_md.strip() if micro_md else "Not run in this invocation.", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
