#!/usr/bin/env python3
"""Peer exporter for the benchmark: a hand-written threaded PIT exporter with pandas.

This is the exporter users write themselves when ``helpers.scan`` is too slow: open one
OpenSearch point in time over the index, run a ``ThreadPoolExecutor`` over N PIT slices, page
each slice with ``search_after`` (1000 hits per page), turn every slice's hits into a DataFrame
(``_index``, ``_id`` and the ``_source`` flattened by ``pandas.json_normalize``), concatenate the
slices and write ``OUT_PREFIX.csv`` and ``OUT_PREFIX.parquet``. The PIT is closed at the end,
also on failure. It prints the number of rows written as its last line.

The sort is ``_shard_doc`` (the PIT tiebreaker) on clusters that have it (OpenSearch 3.3+);
older OpenSearch answers "No mapping found for [_shard_doc]", so there the script sorts on
``_id``, the unique tiebreaker available before 3.3.

Usage:
    .work/bench-venv/bin/python bench/peers/threaded_pit.py URL INDEX OUT_PREFIX [--threads 8]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import requests

PAGE_SIZE = 1000
KEEP_ALIVE = "5m"
TIMEOUT_S = 120


class ExportError(Exception):
    """A request to the cluster failed; the message names the request and the answer."""


def check(resp: requests.Response, what: str) -> dict[str, Any]:
    """Returns the JSON body of a 2xx response; raises ExportError with an excerpt otherwise."""
    if not resp.ok:
        raise ExportError(
            f"{what}: {resp.request.method} {resp.url} answered HTTP {resp.status_code}: {resp.text[:500]}"
        )
    return resp.json()


def version_tuple(number: str) -> tuple[int, ...]:
    parts = []
    for p in number.split("-")[0].split("."):
        parts.append(int(p) if p.isdigit() else 0)
    return tuple(parts)


def pick_sort(url: str) -> list[Any]:
    """``_shard_doc`` where the cluster supports it (OpenSearch 3.3+), otherwise ``_id``."""
    info = check(requests.get(url, timeout=TIMEOUT_S), "reading the cluster version")
    version = info.get("version", {})
    if version.get("distribution") != "opensearch":
        raise ExportError(
            f"{url} is not OpenSearch (version {version.get('number')!r}); this exporter uses the "
            "OpenSearch point-in-time API"
        )
    if version_tuple(str(version.get("number", "0"))) >= (3, 3):
        return ["_shard_doc"]
    return [{"_id": "asc"}]


def open_pit(url: str, index: str) -> str:
    resp = requests.post(f"{url}/{index}/_search/point_in_time", params={"keep_alive": KEEP_ALIVE}, timeout=TIMEOUT_S)
    return check(resp, f"opening a point in time on {index}")["pit_id"]


def close_pit(url: str, pit_id: str) -> None:
    resp = requests.delete(f"{url}/_search/point_in_time", json={"pit_id": [pit_id]}, timeout=TIMEOUT_S)
    check(resp, "closing the point in time")


def export_slice(url: str, pit_id: str, slice_id: int, slices: int, sort: list[Any]) -> pd.DataFrame:
    """Pages through one PIT slice with search_after and returns its hits as a DataFrame."""
    rows: list[dict[str, Any]] = []
    search_after: list[Any] | None = None
    with requests.Session() as session:
        while True:
            body: dict[str, Any] = {
                "size": PAGE_SIZE,
                "query": {"match_all": {}},
                "pit": {"id": pit_id, "keep_alive": KEEP_ALIVE},
                "slice": {"id": slice_id, "max": slices},
                "sort": sort,
            }
            if search_after is not None:
                body["search_after"] = search_after
            resp = session.post(f"{url}/_search", json=body, timeout=TIMEOUT_S)
            hits = check(resp, f"searching slice {slice_id}/{slices}")["hits"]["hits"]
            if not hits:
                break
            for hit in hits:
                rows.append({"_index": hit["_index"], "_id": hit["_id"], **hit["_source"]})
            search_after = hits[-1]["sort"]
    return pd.json_normalize(rows)


def export(url: str, index: str, out_prefix: str, threads: int) -> int:
    url = url.rstrip("/")
    sort = pick_sort(url)
    pit_id = open_pit(url, index)
    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(export_slice, url, pit_id, i, threads, sort) for i in range(threads)]
            frames = [f.result() for f in futures]
    finally:
        close_pit(url, pit_id)
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(f"{out_prefix}.csv", index=False)
    df.to_parquet(f"{out_prefix}.parquet", engine="pyarrow", index=False)
    return len(df)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export an index over PIT slices in threads to OUT_PREFIX.csv and OUT_PREFIX.parquet."
    )
    parser.add_argument("url", help="cluster URL, e.g. http://127.0.0.1:9200")
    parser.add_argument("index", help="index name or pattern, e.g. logs-*")
    parser.add_argument("out_prefix", help="output path without extension")
    parser.add_argument("--threads", type=int, default=8, help="threads and PIT slices (default 8, at least 2)")
    args = parser.parse_args(argv)
    if args.threads < 2:
        parser.error("--threads must be at least 2 (a PIT slice needs max > 1)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        count = export(args.url, args.index, args.out_prefix, args.threads)
    except ExportError as e:
        print(f"threaded_pit: {e}", file=sys.stderr)
        return 1
    except requests.RequestException as e:
        print(f"threaded_pit: request to {args.url} failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"threaded_pit: writing {args.out_prefix}.csv/.parquet failed: {e}", file=sys.stderr)
        return 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
