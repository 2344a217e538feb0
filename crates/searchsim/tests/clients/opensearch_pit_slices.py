"""Drives searchsim with the real opensearch-py client, the way export scripts built on it do.

For every slice count given, it creates a point in time (create_pit), pages every slice
with search_after until a page comes back empty, deletes the PIT (delete_pit) and lists
the PITs left (get_all_pits). It then reads the whole index once more with helpers.scan
(scroll). Every id it saw is printed as one JSON object on stdout; the Rust test decides
whether they are right. Any client error ends the script with a non-zero status.

Usage: python opensearch_pit_slices.py --url http://127.0.0.1:PORT --index NAME
           [--slices 2,5,7] [--page-size 333] [--sort seq|_shard_doc]
"""

import argparse
import json
import sys

try:
    import opensearchpy
    from opensearchpy import OpenSearch, helpers
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"missing client library ({e}); install it with: bash scripts/deps/python.sh")


def page_slice(client, pit_id, slice_id, slice_max, page_size, sort):
    """Returns (ids, pages, last pit id) for one slice, paging with search_after."""
    ids = []
    pages = 0
    after = None
    while True:
        body = {
            "size": page_size,
            "pit": {"id": pit_id, "keep_alive": "5m"},
            "slice": {"id": slice_id, "max": slice_max},
            "sort": [sort],
            "track_total_hits": False,
        }
        if after is not None:
            body["search_after"] = after
        resp = client.search(body=body)
        pages += 1
        shards = resp.get("_shards", {})
        if shards.get("failed", 0):
            raise RuntimeError(f"slice {slice_id}/{slice_max}: shard failures {shards}")
        # The id may change between pages; always continue with the latest one.
        pit_id = resp.get("pit_id", pit_id)
        hits = resp["hits"]["hits"]
        if not hits:
            return ids, pages, pit_id
        ids.extend(hit["_id"] for hit in hits)
        after = hits[-1]["sort"]
        if pages > 100000:
            raise RuntimeError(f"slice {slice_id}/{slice_max} never ends")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--slices", default="2,5,7")
    parser.add_argument("--page-size", type=int, default=333)
    parser.add_argument("--sort", default="seq", help="sort field: a unique numeric field or _shard_doc")
    args = parser.parse_args()

    client = OpenSearch(hosts=[args.url], timeout=60, max_retries=0)
    info = client.info()
    sort = {"_shard_doc": {"order": "asc"}} if args.sort == "_shard_doc" else {args.sort: {"order": "asc"}}

    out = {
        "client": f"opensearch-py {opensearchpy.__versionstr__}",
        "server_version": info["version"]["number"],
        "distribution": info["version"].get("distribution"),
        "slicings": {},
    }
    for slice_max in [int(s) for s in args.slices.split(",") if s]:
        created = client.create_pit(index=args.index, keep_alive="5m")
        pit_id = created["pit_id"]
        slices = []
        pages = []
        for slice_id in range(slice_max):
            ids, n_pages, pit_id = page_slice(client, pit_id, slice_id, slice_max, args.page_size, sort)
            slices.append(ids)
            pages.append(n_pages)
        deleted = client.delete_pit(body={"pit_id": [pit_id]})
        left = client.get_all_pits()
        out["slicings"][str(slice_max)] = {
            "create_shards": created.get("_shards"),
            "slices": slices,
            "pages": pages,
            "delete": deleted,
            "pits_left": len(left.get("pits", [])),
        }

    scanned = [
        hit["_id"]
        for hit in helpers.scan(
            client, index=args.index, query={"query": {"match_all": {}}}, size=500, scroll="2m"
        )
    ]
    out["scan"] = scanned
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
