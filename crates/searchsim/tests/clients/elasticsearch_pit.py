"""Drives searchsim's Elasticsearch flavor with the real Elasticsearch 8.x Python client.

It opens a point in time (open_point_in_time), pages over the whole index with
`pit` + `search_after` (the client's own request shape, with the ES 8 compatibility
headers), then closes the PIT (close_point_in_time) and checks that a search on the closed
PIT fails. Every id seen is printed as one JSON object on stdout for the Rust test to check.
Any unexpected client error ends the script with a non-zero status.

Usage: python elasticsearch_pit.py --url http://127.0.0.1:PORT --index NAME [--page-size 333]
"""

import argparse
import json
import sys

try:
    import elasticsearch
    from elasticsearch import Elasticsearch
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"missing client library ({e}); install it with: bash scripts/deps/python.sh")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--page-size", type=int, default=333)
    args = parser.parse_args()

    client = Elasticsearch(args.url, request_timeout=60, max_retries=0)
    info = client.info()

    opened = client.open_point_in_time(index=args.index, keep_alive="5m")
    pit_id = opened["id"]
    first_id = pit_id
    ids = []
    pages = 0
    sort_lengths = set()
    after = None
    while True:
        kwargs = {}
        if after is not None:
            kwargs["search_after"] = after
        resp = client.search(
            pit={"id": pit_id, "keep_alive": "5m"},
            size=args.page_size,
            sort=[{"seq": {"order": "asc"}}],
            track_total_hits=False,
            **kwargs,
        )
        pages += 1
        # Elasticsearch may hand back a different id; always continue with the latest.
        pit_id = resp.get("pit_id", pit_id)
        hits = resp["hits"]["hits"]
        if not hits:
            break
        ids.extend(hit["_id"] for hit in hits)
        sort_lengths.update(len(hit["sort"]) for hit in hits)
        after = hits[-1]["sort"]
        if pages > 100000:
            raise RuntimeError("paging never ends")

    closed = client.close_point_in_time(id=pit_id)
    try:
        client.search(pit={"id": pit_id}, size=1, sort=[{"seq": "asc"}])
        search_after_close = "succeeded"
    except elasticsearch.NotFoundError:
        search_after_close = "not_found"
    except elasticsearch.ApiError as e:
        search_after_close = f"error {e.meta.status}"

    json.dump(
        {
            "client": f"elasticsearch-py {elasticsearch.__versionstr__}",
            "server_version": info["version"]["number"],
            "tagline": info.get("tagline"),
            "open_shards": opened.get("_shards"),
            "first_pit_id": first_id,
            "ids": ids,
            "pages": pages,
            "sort_lengths": sorted(sort_lengths),
            "close": closed.body,
            "search_after_close": search_after_close,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
