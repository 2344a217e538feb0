//! Shared helpers for spillway's end-to-end tests: the `spillway` binary, a searchsim cluster
//! loaded with generated data, SeaweedFS access, and readers that decode every output format
//! back into JSON so tests can compare exports with the source documents.

pub mod cli;
pub mod procs;
pub mod real;
pub mod scenarios;
pub mod verify;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int64Type, TimestampMillisecondType, TimestampNanosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use searchsim::datagen::{DataSpec, LoadSummary};
use searchsim::{Config, RunningSim, SearchSim};
use serde_json::{Map, Value};
use spillway_api::manifest::Manifest;
use spillway_sink::storage::Storage;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Installs the TLS crypto provider once per test process.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Path of a workspace binary: in `$SPILLWAY_BIN_DIR` when it is set (`scripts/test.sh`
/// builds the binaries once and sets it), else built by the first call (`cargo build
/// --workspace --bins`). A test process never rebuilds what the script built: cargo run
/// from inside a test (its environment, its feature resolution) may recompile shared
/// dependencies for minutes while every test that needs a binary waits.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SPILLWAY_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(repo_root())
            .args(["build", "-q", "--workspace", "--bins"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the spillway binary failed");
        // Test executables live in target/<profile>/deps; binaries one level up.
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf()
    });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "no {name} binary at {} (SPILLWAY_BIN_DIR names the directory `cargo build --workspace --bins` wrote)",
        path.display()
    );
    path
}

/// Every file below `dir` (recursively); empty when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Starts searchsim and loads generated data into it.
pub async fn sim_with(config: Config, spec: &DataSpec) -> (RunningSim, LoadSummary) {
    init();
    let sim = SearchSim::start(config).await.expect("searchsim starts");
    let loaded = searchsim::datagen::load(sim.cluster(), spec).expect("data loads");
    (sim, loaded)
}

/// `_id` → generated source, for every document of `spec`.
pub fn expected_docs(spec: &DataSpec) -> HashMap<String, (String, Bytes)> {
    searchsim::datagen::docs(spec)
        .map(|d| (d.id, (d.index, d.source)))
        .collect()
}

/// SeaweedFS (or any S3) endpoint for tests, from `scripts/services/seaweedfs.sh env`.
pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn s3_env() -> S3Env {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: start the S3 test server with `scripts/services/seaweedfs.sh start` and `eval \"$(scripts/services/seaweedfs.sh env)\"` (scripts/test.sh does this)"
            )
        })
    };
    S3Env {
        endpoint: get("SPILLWAY_S3_ENDPOINT"),
        access_key: get("SPILLWAY_S3_ACCESS_KEY"),
        secret_key: get("SPILLWAY_S3_SECRET_KEY"),
    }
}

/// An S3 storage handle on a fresh bucket.
pub async fn s3_bucket(bucket: &str) -> Arc<spillway_sink::storage::s3::S3Storage> {
    init();
    let env = s3_env();
    let mut cfg = spillway_sink::storage::s3::S3Config::new(env.endpoint, bucket);
    cfg.path_style = true;
    let creds = spillway_sigv4::Credentials {
        access_key_id: env.access_key,
        secret_access_key: env.secret_key,
        session_token: None,
    };
    let s = spillway_sink::storage::s3::S3Storage::new(cfg, creds).expect("s3 client");
    s.create_bucket().await.expect("bucket created");
    Arc::new(s)
}

/// A run's manifest and data files, with every file's size and SHA-256 checked against it.
pub async fn read_run(storage: &dyn Storage, run_dir: &str) -> (Manifest, Vec<(String, Bytes)>) {
    let success = storage
        .get(&format!("{run_dir}/_SUCCESS"))
        .await
        .expect("get _SUCCESS");
    assert!(success.is_some(), "{run_dir}/_SUCCESS is missing");
    let manifest: Manifest = serde_json::from_slice(
        &storage
            .get(&format!("{run_dir}/_manifest.json"))
            .await
            .expect("get manifest")
            .expect("manifest exists"),
    )
    .expect("manifest parses");
    let listed = storage
        .list(&format!("{run_dir}/data/"))
        .await
        .expect("list data");
    assert_eq!(
        listed.len(),
        manifest.files.len(),
        "the data directory holds exactly the manifest's files"
    );
    let mut files = Vec::new();
    for f in &manifest.files {
        let body = storage
            .get(&format!("{run_dir}/{}", f.key))
            .await
            .expect("get data file")
            .unwrap_or_else(|| panic!("{} listed in the manifest is missing", f.key));
        assert_eq!(body.len() as u64, f.bytes, "size of {}", f.key);
        assert_eq!(
            format!("blake3:{}", blake3::hash(&body).to_hex()),
            f.digest,
            "digest of {}",
            f.key
        );
        files.push((f.key.clone(), body));
    }
    (manifest, files)
}

/// Decompresses by file suffix.
pub fn decompress(key: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if key.ends_with(".zst") {
        zstd::stream::read::Decoder::new(body)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("zstd stream");
    } else if key.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip stream");
    } else {
        out.extend_from_slice(body);
    }
    out
}

/// Every row of a Parquet file as a JSON object keyed by column name (nulls omitted).
/// Timestamps become epoch milliseconds.
pub fn parquet_rows(body: Bytes) -> Vec<Map<String, Value>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .expect("a parquet file")
        .build()
        .expect("parquet reader");
    let mut rows = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.expect("a record batch");
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Map::new()));
        for (ci, field) in batch.schema().fields().iter().enumerate() {
            let col = batch.column(ci);
            for r in 0..batch.num_rows() {
                if col.is_null(r) {
                    continue;
                }
                let v = match col.data_type() {
                    DataType::Utf8 => Value::from(col.as_string::<i32>().value(r)),
                    DataType::LargeUtf8 => Value::from(col.as_string::<i64>().value(r)),
                    DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(r)),
                    DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(r)),
                    DataType::Boolean => Value::from(col.as_boolean().value(r)),
                    DataType::Timestamp(TimeUnit::Millisecond, _) => {
                        Value::from(col.as_primitive::<TimestampMillisecondType>().value(r))
                    }
                    DataType::Timestamp(TimeUnit::Nanosecond, _) => Value::from(
                        col.as_primitive::<TimestampNanosecondType>().value(r) / 1_000_000,
                    ),
                    other => panic!("unexpected column type {other} for {}", field.name()),
                };
                rows[start + r].insert(field.name().clone(), v);
            }
        }
    }
    rows
}

/// Every line of an NDJSON file, parsed.
pub fn ndjson_rows(key: &str, body: &[u8]) -> Vec<Value> {
    let text = decompress(key, body);
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each NDJSON line is JSON"))
        .collect()
}

/// Every record of a CSV file as column → text.
pub fn csv_rows(key: &str, body: &[u8]) -> Vec<HashMap<String, String>> {
    let text = decompress(key, body);
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_slice());
    let headers = rdr.headers().expect("a header row").clone();
    rdr.records()
        .map(|r| {
            let r = r.expect("a CSV record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Looks up a dotted path (`http.status`) in a JSON source.
pub fn path<'a>(source: &'a Value, dotted: &str) -> Option<&'a Value> {
    if let Some(v) = source.get(dotted) {
        return Some(v);
    }
    let mut cur = source;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// Milliseconds since the epoch of an ISO date(-time) string.
pub fn millis(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .unwrap_or_else(|_| panic!("not an RFC 3339 date: {s}"))
}
