//! S3 client against a real S3 server (SeaweedFS with signature checking on).
//! Start it with `scripts/services/seaweedfs.sh start` and export what
//! `scripts/services/seaweedfs.sh env` prints; without those variables these tests fail.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use spillway_sigv4::Credentials;
use spillway_sink::storage::HashingUpload;
use spillway_sink::storage::s3::{S3Config, S3Storage};
use spillway_sink::{SinkError, Storage};

const MIB: usize = 1 << 20;

fn env() -> (String, String, String) {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: start it with scripts/services/seaweedfs.sh start, then \
                 eval \"$(scripts/services/seaweedfs.sh env)\""
            )
        })
    };
    (
        get("SPILLWAY_S3_ENDPOINT"),
        get("SPILLWAY_S3_ACCESS_KEY"),
        get("SPILLWAY_S3_SECRET_KEY"),
    )
}

fn bucket_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sw-{test}-{:x}", nanos % (1u128 << 48))
}

async fn storage_with(test: &str, tweak: impl FnOnce(&mut S3Config)) -> S3Storage {
    let (endpoint, ak, sk) = env();
    let mut cfg = S3Config::new(endpoint, bucket_name(test));
    cfg.part_size = 5 * MIB;
    tweak(&mut cfg);
    let s = S3Storage::new(cfg, Credentials::new(ak, sk, None)).unwrap();
    s.create_bucket().await.unwrap();
    s
}

async fn storage(test: &str) -> S3Storage {
    storage_with(test, |_| {}).await
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_of_several_parts_reads_back_byte_equal() {
    let s = storage("multipart").await;
    let data = pattern(3 * 5 * MIB + 12_345, 1);
    let key = "run/data/part-000001.parquet";
    let mut up = HashingUpload::new(s.begin_upload(key).await.unwrap());
    for chunk in data.chunks(MIB - 7) {
        up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let done = up.complete().await.unwrap();
    assert_eq!(done.info.key, key);
    assert_eq!(done.info.size, data.len() as u64);
    assert_eq!(done.bytes, data.len() as u64);
    assert_eq!(
        done.digest,
        format!("blake3:{}", blake3::hash(&data).to_hex())
    );

    let back = s.get(key).await.unwrap().expect("object exists");
    assert!(back[..] == data[..], "read-back differs");
    let head = s.head_object(key).await.unwrap().unwrap();
    assert_eq!(head.size, data.len() as u64);
    assert!(
        head.etag.trim_matches('"').ends_with("-4"),
        "etag {}",
        head.etag
    );
    assert!(s.list_multipart_uploads("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_upload_is_one_put_object() {
    let s = storage("tiny").await;
    let key = "a/b/tiny.ndjson";
    let mut up = s.begin_upload(key).await.unwrap();
    up.write(Bytes::from_static(b"{\"a\":1}\n")).await.unwrap();
    up.write(Bytes::from_static(b"{\"a\":2}\n")).await.unwrap();
    let info = up.complete().await.unwrap();
    assert_eq!(info.size, 16);
    assert_eq!(
        s.get(key).await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n")
    );
    let head = s.head_object(key).await.unwrap().unwrap();
    assert!(
        !head.etag.contains('-'),
        "a single PutObject has a plain MD5 ETag, got {}",
        head.etag
    );

    // An empty file is a valid object too.
    let up = s.begin_upload("a/empty").await.unwrap();
    assert_eq!(up.complete().await.unwrap().size, 0);
    assert_eq!(s.get("a/empty").await.unwrap().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_leaves_no_multipart_upload() {
    let s = storage("abort").await;
    let key = "x/part-1.csv";
    let mut up = s.begin_upload(key).await.unwrap();
    up.write(Bytes::from(pattern(6 * MIB, 2))).await.unwrap();
    let pending = s.list_multipart_uploads("x/").await.unwrap();
    assert_eq!(
        pending.len(),
        1,
        "one part was sent, so a multipart upload exists"
    );
    assert_eq!(pending[0].key, key);
    up.abort().await.unwrap();
    assert!(s.list_multipart_uploads("x/").await.unwrap().is_empty());
    assert_eq!(s.get(key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_upload_is_aborted_and_cleanup_removes_leftovers() {
    let s = storage("dropped").await;
    // Dropped mid-way: the upload aborts itself in the background.
    let mut up = s.begin_upload("d/dropped.bin").await.unwrap();
    up.write(Bytes::from(pattern(6 * MIB, 3))).await.unwrap();
    assert_eq!(s.list_multipart_uploads("d/").await.unwrap().len(), 1);
    drop(up);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.list_multipart_uploads("d/").await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dropped upload was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.get("d/dropped.bin").await.unwrap(), None);

    // A process that died mid-upload (no drop runs): cleanup finds and aborts it.
    let mut up = s.begin_upload("d/crashed.bin").await.unwrap();
    up.write(Bytes::from(pattern(5 * MIB + 1, 4)))
        .await
        .unwrap();
    std::mem::forget(up);
    assert_eq!(s.list_multipart_uploads("d/").await.unwrap().len(), 1);
    assert_eq!(s.abort_incomplete_uploads("d/").await.unwrap(), 1);
    assert!(s.list_multipart_uploads("d/").await.unwrap().is_empty());
    assert_eq!(s.get("d/crashed.bin").await.unwrap(), None);
    assert!(s.list("d/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_only_writes_once() {
    let s = storage("ifabsent").await;
    assert!(
        s.put_if_absent("m/plan.json", Bytes::from_static(b"first"))
            .await
            .unwrap()
    );
    assert!(
        !s.put_if_absent("m/plan.json", Bytes::from_static(b"second"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get("m/plan.json").await.unwrap().unwrap(),
        Bytes::from_static(b"first")
    );
    s.put("m/plan.json", Bytes::from_static(b"third"))
        .await
        .unwrap();
    assert_eq!(
        s.get("m/plan.json").await.unwrap().unwrap(),
        Bytes::from_static(b"third")
    );
    s.delete("m/plan.json").await.unwrap();
    assert_eq!(s.get("m/plan.json").await.unwrap(), None);
    s.delete("m/plan.json").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_continuation_tokens() {
    let s = storage_with("paging", |c| c.list_page_size = Some(2)).await;
    let mut keys: Vec<String> = (0..7)
        .map(|i| format!("p/_spillway/shards/{i:06}.json"))
        .collect();
    keys.push("p/data/dt=2024-03-15/part-000001.parquet".into());
    keys.push("p/data/key with spaces+plus é.csv".into());
    for k in &keys {
        s.put(k, Bytes::from(k.clone())).await.unwrap();
    }
    s.put("q/other", Bytes::from_static(b"x")).await.unwrap();
    let listed = s.list("p/").await.unwrap();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(
        listed.iter().map(|o| o.key.clone()).collect::<Vec<_>>(),
        want
    );
    for o in &listed {
        assert_eq!(o.size, o.key.len() as u64);
        assert_eq!(
            s.get(&o.key).await.unwrap().unwrap(),
            Bytes::from(o.key.clone())
        );
    }
    assert_eq!(s.list("p/_spillway/shards/").await.unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_signature_does_not_match_without_the_secret() {
    let good = storage("badsecret").await;
    let (endpoint, ak, _) = env();
    let mut cfg = S3Config::new(endpoint, good.config().bucket.clone());
    cfg.max_attempts = 2;
    let secret = "NOT-THE-SECRET-7f3a9c";
    let bad = S3Storage::new(cfg, Credentials::new(ak, secret, None)).unwrap();
    let err = bad
        .put("k", Bytes::from_static(b"v"))
        .await
        .expect_err("a wrong secret must be refused");
    let text = err.to_string();
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{err:?}").contains(secret));
    assert!(!format!("{bad:?}").contains(secret));
    assert!(matches!(err, SinkError::S3 { status: 403, .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_file_and_markers_through_open_output() {
    use spillway_api::{
        Compression, Destination, DocRef, Format, OutputSpec, PartitionBy, S3Destination,
        ShardMarker,
    };
    use spillway_sink::{DocSchema, FileWriter, commit, encoder_for, open_output};

    let created = storage("openoutput").await;
    let (endpoint, ak, sk) = env();
    let output = OutputSpec {
        format: Format::Parquet,
        compression: Compression::Zstd,
        destination: Destination {
            s3: Some(S3Destination {
                bucket: created.config().bucket.clone(),
                prefix: "exports".into(),
                endpoint: Some(endpoint),
                region: "us-east-1".into(),
                force_path_style: true,
                secret_ref: None,
            }),
            volume: None,
        },
        partition_by: PartitionBy::None,
        include_metadata: false,
        row_group_bytes: 1 << 20,
        part_size_bytes: 5 << 20,
    };
    let storage = open_output(&output, Some(Credentials::new(ak, sk, None)))
        .await
        .unwrap();
    let s = storage.as_ref();
    let run = spillway_api::layout::run_dir("exports", "job", "run-1");
    let schema = DocSchema::from_mapping(&serde_json::json!({"properties": {
        "n": {"type": "long"}, "s": {"type": "keyword"}
    }}))
    .unwrap();
    let mut w = FileWriter::create(
        s,
        &run,
        "data/part-000000.parquet",
        encoder_for(&output, &schema).unwrap(),
    )
    .await
    .unwrap();
    let mut expected_n = Vec::new();
    for page in 0..50 {
        let srcs: Vec<(String, String)> = (0..1000)
            .map(|i| {
                let n = page * 1000 + i;
                (
                    format!("{n}"),
                    format!(
                        r#"{{"n":{n},"s":"{}"}}"#,
                        hex::encode(Sha256::digest(n.to_string()))
                    ),
                )
            })
            .collect();
        expected_n.extend((0..1000).map(|i| (page * 1000 + i) as i64));
        let docs: Vec<DocRef<'_>> = srcs
            .iter()
            .map(|(id, src)| DocRef {
                index: "idx",
                id,
                source: src,
            })
            .collect();
        w.write_page(&docs).await.unwrap();
    }
    let done = w.finish().await.unwrap();
    assert_eq!(done.file.rows, 50_000);
    let key = format!("{run}/data/part-000000.parquet");
    let body = s.get(&key).await.unwrap().unwrap();
    assert_eq!(body.len() as u64, done.file.bytes);
    assert_eq!(
        format!("blake3:{}", blake3::hash(&body).to_hex()),
        done.file.digest
    );
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
        .unwrap()
        .build()
        .unwrap();
    let mut got_n = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("n").unwrap();
        let col = col
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        got_n.extend(col.values().iter().copied());
    }
    assert_eq!(got_n, expected_n);

    let marker = ShardMarker {
        shard_id: "000000".into(),
        docs: 50_000,
        expected_docs: 50_000,
        bytes: done.file.bytes,
        files: vec![done.file.clone()],
        attempt: 1,
        completed_at: chrono::Utc::now(),
    };
    commit::write_marker(s, &run, &marker).await.unwrap();
    assert_eq!(commit::read_markers(s, &run).await.unwrap(), vec![marker]);
    assert_eq!(
        s.describe(),
        format!("s3://{}/exports", created.config().bucket)
    );
}
