//! Encoders (NDJSON, CSV, Parquet) and storage (S3 multipart, shared volume), shard markers and the job manifest.
