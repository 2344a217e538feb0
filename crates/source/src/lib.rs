//! OpenSearch/Elasticsearch client: flavor detection, auth, PIT, paged shard reader, retries.
