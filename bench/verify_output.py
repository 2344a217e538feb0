#!/usr/bin/env python3
"""Checks that an export holds every expected document exactly once.

Reads the data files of one export (NDJSON, zstd-compressed NDJSON, CSV or Parquet), counts the
rows and the distinct ``_id`` values, and succeeds only when rows == distinct ids == the
expected count. It prints one JSON line ``{"rows": .., "distinct_ids": .., "bytes": ..}``
(``bytes`` is the total size of the data files) and, on failure, a one-line reason on stderr
(``missing K``, ``duplicated K``, ...) with exit status 1.

Where the ``_id`` is: NDJSON lines carry a top-level ``_id`` (spillway with
``includeMetadata: true``, elasticdump, opensearch-py scan); CSV and Parquet files have an
``_id`` column. Files are streamed (NDJSON and CSV in blocks by pyarrow, zstd through
Arrow's zstd input stream, Parquet one row group at a time reading only ``_id``); the ids are
kept in one Arrow array and counted after sorting it, so 5M ids need about 500 MB.

A PATH may be a file or a directory; in a directory every file under it whose name ends in the
format's suffix (``.ndjson``, ``.ndjson.zst``, ``.csv``, ``.parquet``) is read; files and
folders whose name starts with ``_`` or ``.`` (``_manifest.json``, ``_SUCCESS``, ``_spillway/``,
temporary files) are skipped. With ``--s3-bucket`` the objects in the folder ``--s3-prefix``
are first downloaded with boto3 into a temporary directory (path-style addressing, region
us-east-1; the keys come from ``SPILLWAY_S3_ACCESS_KEY`` and ``SPILLWAY_S3_SECRET_KEY``).

Usage:
    .work/bench-venv/bin/python bench/verify_output.py --expect N --format FORMAT PATH...
    .work/bench-venv/bin/python bench/verify_output.py --expect N --format parquet \\
        --s3-endpoint http://127.0.0.1:8333 --s3-bucket BUCKET --s3-prefix PREFIX
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

SUFFIXES = {
    "ndjson": ".ndjson",
    "ndjson-zst": ".ndjson.zst",
    "csv": ".csv",
    "parquet": ".parquet",
}


class VerifyError(Exception):
    """The export could not be read; the message says which file or request and why."""


def is_data_name(name: str) -> bool:
    return not name.startswith(("_", "."))


def data_files(paths: list[Path], fmt: str) -> list[Path]:
    """Expands directories into their data files of the given format, sorted by path."""
    suffix = SUFFIXES[fmt]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob(f"*{suffix}")
                    if f.is_file() and all(is_data_name(part) for part in f.relative_to(p).parts)
                )
            )
        elif p.is_file():
            files.append(p)
        else:
            raise VerifyError(f"{p} does not exist")
    return files


def as_ids(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One chunk of ``_id`` values as a plain large_string array (also from dictionary columns)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type != pa.large_string():
        column = column.cast(pa.large_string())
    return column


def ndjson_ids(path: Path, compressed: bool) -> Iterator[pa.Array]:
    """Yields the top-level ``_id`` of every line, one block of lines at a time.

    The lines are parsed by pyarrow's streaming JSON reader with a schema of ``_id`` alone, so
    ``_source`` is tokenized but never turned into Python objects; zstd files are decompressed
    by Arrow's zstd input stream (across frames) on the way in.
    """
    parse = pajson.ParseOptions(
        explicit_schema=pa.schema([("_id", pa.string())]), unexpected_field_behavior="ignore"
    )
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(pa.OSFile(str(path)))
        if compressed:
            # Arrow's own zstd stream (concatenated frames included): no Python file object
            # is called back from Arrow's reader threads.
            source = stack.enter_context(pa.CompressedInputStream(source, "zstd"))
        rows = 0
        try:
            reader = pajson.open_json(
                source, read_options=pajson.ReadOptions(block_size=4 << 20), parse_options=parse
            )
            for batch in reader:
                column = batch.column(0)
                if column.null_count:
                    raise VerifyError(
                        f"{path}: {column.null_count} of the lines after line {rows} have no "
                        "top-level _id (spillway needs includeMetadata: true)"
                    )
                rows += len(column)
                yield as_ids(column)
        except pa.ArrowInvalid as e:
            if rows == 0 and "Empty JSON stream" in str(e):
                return  # an empty file (or one of blank lines) holds no documents
            raise VerifyError(f"{path} is not valid NDJSON (after line {rows}): {e}") from None
        except OSError as e:
            what = "zstd" if compressed else "readable"
            raise VerifyError(f"{path} is not valid {what} (after line {rows}): {e}") from None


def csv_ids(path: Path) -> Iterator[pa.Array]:
    """Yields the ``_id`` column, read in blocks with pyarrow's streaming CSV reader."""
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    if header is None:
        return
    if "_id" not in header:
        raise VerifyError(f"{path} has no _id column (columns: {', '.join(header[:20])})")
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=4 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=["_id"], column_types={"_id": pa.string()}, strings_can_be_null=False
            ),
        )
        for batch in reader:
            yield as_ids(batch.column(0))
    except pa.ArrowInvalid as e:
        raise VerifyError(f"{path} could not be parsed as CSV: {e}") from None


def parquet_ids(path: Path) -> Iterator[pa.Array]:
    """Yields the ``_id`` column one row group at a time."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise VerifyError(f"{path} is not a readable Parquet file: {e}") from None
    if "_id" not in pf.schema_arrow.names:
        raise VerifyError(f"{path} has no _id column (columns: {', '.join(pf.schema_arrow.names[:20])})")
    rows = 0
    for batch in pf.iter_batches(columns=["_id"], batch_size=65536):
        column = batch.column(0)
        if column.null_count:
            raise VerifyError(f"{path}: {column.null_count} rows after row {rows} have a null _id")
        rows += len(column)
        yield as_ids(column)


def ids_of(path: Path, fmt: str) -> Iterator[pa.Array]:
    if fmt == "ndjson":
        return ndjson_ids(path, compressed=False)
    if fmt == "ndjson-zst":
        return ndjson_ids(path, compressed=True)
    if fmt == "csv":
        return csv_ids(path)
    return parquet_ids(path)


def download_s3(endpoint: str, bucket: str, prefix: str, dest: Path) -> int:
    """Downloads every data object under ``prefix`` into ``dest``; returns the object count."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    access = os.environ.get("SPILLWAY_S3_ACCESS_KEY")
    secret = os.environ.get("SPILLWAY_S3_SECRET_KEY")
    if not access or not secret:
        raise VerifyError(
            "SPILLWAY_S3_ACCESS_KEY and SPILLWAY_S3_SECRET_KEY must be set to read from S3 "
            '(for SeaweedFS: eval "$(scripts/services/seaweedfs.sh env)")'
        )
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )
    # The prefix names a folder: "run-1" must not also pick up "run-10/...".
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    where = f"s3://{bucket}/{prefix} at {endpoint}"
    count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                rel = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
                parts = [part for part in rel.split("/") if part]
                if not parts or not all(is_data_name(part) for part in parts):
                    continue
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
                count += 1
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise VerifyError(
            f"reading {where} failed: HTTP {status} {err.get('Code')}: {err.get('Message')}"
        ) from None
    except BotoCoreError as e:
        raise VerifyError(f"reading {where} failed: {e}") from None
    if count == 0:
        raise VerifyError(f"no data objects under {where}")
    return count


def verify(files: list[Path], fmt: str) -> tuple[int, int, int]:
    """Returns (rows, distinct ids, bytes) over all files.

    The ids are kept as one Arrow string array (about 20 bytes per 11-character id), sorted,
    and the distinct ones counted as the places where a value differs from its predecessor:
    for 5M ids that peaks at a few hundred MB, about half of what a hash set needs.
    """
    chunks: list[pa.Array] = []
    total_bytes = 0
    for f in files:
        total_bytes += f.stat().st_size
        chunks.extend(ids_of(f, fmt))
    if not chunks:
        return 0, 0, total_bytes
    ids = pa.concat_arrays(chunks)
    del chunks
    rows = len(ids)
    if rows == 0:
        return 0, 0, total_bytes
    ordered = ids.take(pc.sort_indices(ids))
    del ids
    changes = pc.sum(pc.not_equal(ordered.slice(1), ordered.slice(0, rows - 1))).as_py() or 0
    return rows, 1 + changes, total_bytes


def reason(rows: int, distinct: int, expect: int) -> str | None:
    problems = []
    if distinct < expect:
        problems.append(f"missing {expect - distinct} of {expect} documents")
    if distinct > expect:
        problems.append(f"{distinct - expect} more distinct ids than the {expect} expected")
    if rows > distinct:
        problems.append(f"duplicated {rows - distinct} rows")
    return "; ".join(problems) or None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check that an export holds every expected document exactly once."
    )
    parser.add_argument("--expect", type=int, required=True, help="expected number of documents")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIXES), help="format of the data files")
    parser.add_argument("paths", nargs="*", type=Path, help="data files or directories to read")
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("SPILLWAY_S3_ENDPOINT"),
        help="S3 endpoint URL (default: $SPILLWAY_S3_ENDPOINT)",
    )
    parser.add_argument("--s3-bucket", help="bucket to download the export from")
    parser.add_argument(
        "--s3-prefix", default="", help="folder of the export in the bucket (a '/' is appended if missing)"
    )
    args = parser.parse_args(argv)
    if args.s3_bucket and not args.s3_endpoint:
        parser.error("--s3-bucket needs --s3-endpoint (or SPILLWAY_S3_ENDPOINT)")
    if not args.paths and not args.s3_bucket:
        parser.error("give at least one PATH or --s3-bucket")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verify-output-") as tmp:
        try:
            paths: list[Path] = list(args.paths)
            if args.s3_bucket:
                download_s3(args.s3_endpoint, args.s3_bucket, args.s3_prefix, Path(tmp))
                paths.append(Path(tmp))
            files = data_files(paths, args.format)
            if not files:
                raise VerifyError(
                    f"no {SUFFIXES[args.format]} data files in {', '.join(map(str, paths))}"
                )
            rows, distinct, total_bytes = verify(files, args.format)
        except VerifyError as e:
            print(f"verify_output: {e}", file=sys.stderr)
            return 1
    print(json.dumps({"rows": rows, "distinct_ids": distinct, "bytes": total_bytes}))
    problem = reason(rows, distinct, args.expect)
    if problem:
        print(f"verify_output: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
