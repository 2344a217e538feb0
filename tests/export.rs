//! The export engine end to end, in process: searchsim → spillway's coordinator and workers →
//! real S3 (SeaweedFS) or a local directory, with every output file read back and compared to
//! the generated source documents.

use std::collections::HashMap;
use std::sync::Arc;

use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults};
use serde_json::Value;
use spillway_api::ExportJob;
use spillway_e2e::*;
use spillway_engine::{EngineError, JobReport, LocalOptions, LocalSecrets, Progress, run_local};
use spillway_sink::storage::volume::VolumeStorage;
use tokio_util::sync::CancellationToken;

/// Documents of the large exactness test (1M in CI; lower it locally with SPILLWAY_E2E_DOCS).
fn big_docs() -> u64 {
    std::env::var("SPILLWAY_E2E_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn job(name: &str, url: &str, spec: &DataSpec, extra_spec: &str, output: &str) -> ExportJob {
    let end = spec.start + chrono::Days::new(u64::from(spec.days));
    let yaml = format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\nspec:\n  source:\n    url: {url}\n    indices: [\"{prefix}*\"]\n  timeRange:\n    field: \"@timestamp\"\n    gte: {start}T00:00:00Z\n    lt: {end}T00:00:00Z\n{extra_spec}  output:\n{output}",
        prefix = spec.index_prefix,
        start = spec.start,
    );
    spillway_api::load_job_yaml(&yaml)
        .unwrap_or_else(|e| panic!("test job is invalid: {e}\n{yaml}"))
}

async fn run(
    job: &ExportJob,
    secrets: LocalSecrets,
    workers: u16,
) -> (Result<JobReport, EngineError>, Arc<Progress>) {
    let progress = Arc::new(Progress::default());
    let r = run_local(
        job,
        LocalOptions {
            workers,
            secrets: Arc::new(secrets),
            progress: progress.clone(),
            cancel: CancellationToken::new(),
            run_id: None,
        },
    )
    .await;
    (r, progress)
}

/// Every generated document's `_id` → its index, and a 1-in-`every` sample of full sources.
struct Expected {
    index_of: HashMap<String, String>,
    sample: HashMap<String, Value>,
}

fn expected(spec: &DataSpec, every: u64) -> Expected {
    let mut index_of = HashMap::new();
    let mut sample = HashMap::new();
    for (i, d) in searchsim::datagen::docs(spec).enumerate() {
        if (i as u64).is_multiple_of(every) {
            sample.insert(d.id.clone(), serde_json::from_slice(&d.source).unwrap());
        }
        index_of.insert(d.id, d.index);
    }
    Expected { index_of, sample }
}

/// Checks one exported record: it belongs to the source, is not a duplicate, and (if sampled)
/// carries the source's values. Removes it from `remaining`.
fn account(remaining: &mut HashMap<String, String>, seen: &mut u64, id: &str, index: &str) {
    let Some(src_index) = remaining.remove(id) else {
        panic!("document {id} is exported twice or does not exist in the source");
    };
    assert_eq!(src_index, index, "document {id} has the wrong _index");
    *seen += 1;
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// Compares a source value with an exported cell (a typed Parquet value or CSV/JSON text).
fn same_value(field: &str, source: &Value, cell: &Value) -> bool {
    match (source, cell) {
        (Value::String(s), Value::Number(n)) if field == "@timestamp" => {
            n.as_i64() == Some(millis(s))
        }
        (Value::Number(_), Value::Number(_)) => same_number(source, cell),
        // Objects and arrays kept whole in a text column (geo_point, nested, ...).
        (Value::Object(_) | Value::Array(_), Value::String(text)) => {
            serde_json::from_str::<Value>(text).ok().as_ref() == Some(source)
        }
        _ => source == cell,
    }
}

/// Every field of `source` is in a column of `row` (at its own path or an enclosing
/// object's) or in `_extra`, with the same value.
fn assert_row(row: &serde_json::Map<String, Value>, source: &Value, what: &str) {
    let extra: Value = match row.get("_extra") {
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str(s).expect("_extra is JSON"),
        _ => Value::Null,
    };
    fn walk(
        row: &serde_json::Map<String, Value>,
        extra: &Value,
        prefix: &str,
        v: &Value,
        what: &str,
    ) {
        if let Some(cell) = row.get(prefix).filter(|_| !prefix.is_empty()) {
            assert!(
                same_value(prefix, v, cell),
                "{what} field {prefix}: source {v} but exported {cell}"
            );
            return;
        }
        match v {
            Value::Object(m) if path(extra, prefix).is_none() || prefix.is_empty() => {
                for (k, c) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(row, extra, &p, c, what);
                }
            }
            Value::Null => {}
            _ => assert_eq!(
                path(extra, prefix),
                Some(v),
                "{what} field {prefix} = {v} is neither in a column nor in _extra ({extra})"
            ),
        }
    }
    walk(row, &extra, "", source, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_exactness_parquet_s3_ndjson_csv() {
    let spec = DataSpec {
        docs: big_docs(),
        days: 30,
        shards: 3,
        seed: 2024,
        ..Default::default()
    };
    let (sim, loaded) = sim_with(Config::opensearch_3(), &spec).await;
    assert_eq!(loaded.docs, spec.docs);
    assert_eq!(loaded.indices.len(), 30);
    let exp = expected(&spec, (spec.docs / 1000).max(1));
    assert!(exp.sample.len() >= 1000.min(spec.docs as usize));
    let target = (spec.docs / 40).max(1000);

    // 1. zstd Parquet on S3 (SeaweedFS).
    let s3 = s3_env();
    let bucket = "e2e-exactness";
    let storage = s3_bucket(bucket).await;
    let secrets_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(secrets_dir.path().join("s3")).unwrap();
    std::fs::write(secrets_dir.path().join("s3/accessKeyId"), &s3.access_key).unwrap();
    std::fs::write(
        secrets_dir.path().join("s3/secretAccessKey"),
        &s3.secret_key,
    )
    .unwrap();
    let j = job(
        "exact-parquet",
        &sim.url(),
        &spec,
        &format!("  sharding:\n    targetDocsPerShard: {target}\n"),
        &format!(
            "    format: parquet\n    compression: zstd\n    destination:\n      s3:\n        bucket: {bucket}\n        prefix: runs\n        endpoint: {}\n        forcePathStyle: true\n        secretRef: {{name: s3}}\n",
            s3.endpoint
        ),
    );
    let (report, _) = run(
        &j,
        LocalSecrets {
            dir: Some(secrets_dir.path().into()),
        },
        4,
    )
    .await;
    let report = report.expect("the Parquet export succeeds");
    assert_eq!(report.documents, spec.docs);
    let run_dir = format!("runs/exact-parquet/{}", report.run_id);
    let (manifest, files) = read_run(storage.as_ref(), &run_dir).await;
    assert_eq!(manifest.documents, spec.docs);
    assert_eq!(manifest.expected_documents, spec.docs);
    assert_eq!(
        manifest.files.iter().map(|f| f.rows).sum::<u64>(),
        spec.docs
    );
    assert!(
        files.iter().all(|(k, _)| k.starts_with("data/dt=2024-")),
        "files are partitioned by day"
    );
    let mut remaining = exp.index_of.clone();
    let mut seen = 0;
    let mut compared = 0;
    for (key, body) in files {
        for row in parquet_rows(body) {
            let id = row["_id"].as_str().expect("_id column").to_string();
            let index = row["_index"].as_str().expect("_index column").to_string();
            account(&mut remaining, &mut seen, &id, &index);
            if let Some(src) = exp.sample.get(&id) {
                assert_row(&row, src, "Parquet");
                let day = &src["@timestamp"].as_str().unwrap()[..10];
                assert!(
                    key.contains(&format!("dt={day}/")),
                    "{id} ({day}) is in {key}"
                );
                compared += 1;
            }
        }
    }
    assert!(
        remaining.is_empty(),
        "{} documents are missing from the Parquet export",
        remaining.len()
    );
    assert_eq!(seen, spec.docs);
    assert_eq!(compared, exp.sample.len());
    let orphans = storage.list_multipart_uploads("runs/").await.unwrap();
    assert!(
        orphans.is_empty(),
        "no multipart upload is left behind: {orphans:?}"
    );

    // 2. zstd NDJSON with metadata, and 3. gzip CSV, to a local directory.
    let out = tempfile::tempdir().unwrap();
    for (name, format, compression) in [
        ("exact-ndjson", "ndjson", "zstd"),
        ("exact-csv", "csv", "gzip"),
    ] {
        let j = job(
            name,
            &sim.url(),
            &spec,
            &format!("  sharding:\n    targetDocsPerShard: {target}\n"),
            &format!(
                "    format: {format}\n    compression: {compression}\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
                out.path().display()
            ),
        );
        let (report, _) = run(&j, LocalSecrets::default(), 4).await;
        let report = report.unwrap_or_else(|e| panic!("the {format} export fails: {e}"));
        let vol = VolumeStorage::open(out.path()).await.unwrap();
        let (manifest, files) = read_run(&vol, &format!("{name}/{}", report.run_id)).await;
        assert_eq!(manifest.documents, spec.docs);
        let mut remaining = exp.index_of.clone();
        let mut seen = 0;
        for (key, body) in files {
            assert!(
                key.ends_with(if format == "ndjson" {
                    ".ndjson.zst"
                } else {
                    ".csv.gz"
                }),
                "{key}"
            );
            if format == "ndjson" {
                for mut line in ndjson_rows(&key, &body) {
                    let obj = line.as_object_mut().unwrap();
                    let id = obj.remove("_id").unwrap().as_str().unwrap().to_string();
                    let index = obj.remove("_index").unwrap().as_str().unwrap().to_string();
                    account(&mut remaining, &mut seen, &id, &index);
                    if let Some(src) = exp.sample.get(&id) {
                        assert_eq!(&line, src, "NDJSON line of {id} differs from its source");
                    }
                }
            } else {
                for rec in csv_rows(&key, &body) {
                    account(&mut remaining, &mut seen, &rec["_id"], &rec["_index"]);
                    if let Some(src) = exp.sample.get(&rec["_id"]) {
                        // CSV cells are text: strings as they are, everything else as JSON.
                        let row: serde_json::Map<String, Value> = rec
                            .iter()
                            .filter(|(_, v)| !v.is_empty())
                            .map(|(k, v)| {
                                let parsed = if k == "_extra" {
                                    Value::String(v.clone())
                                } else {
                                    serde_json::from_str(v)
                                        .unwrap_or_else(|_| Value::String(v.clone()))
                                };
                                (k.clone(), parsed)
                            })
                            .collect();
                        assert_row(&row, src, "CSV");
                    }
                }
            }
        }
        assert!(
            remaining.is_empty(),
            "{} documents missing from the {format} export",
            remaining.len()
        );
        assert_eq!(seen, spec.docs);
    }
    sim.shutdown().await;
}

fn small_spec(seed: u64) -> DataSpec {
    DataSpec {
        docs: 30_000,
        days: 3,
        shards: 3,
        seed,
        large_every: 0,
        ..Default::default()
    }
}

fn volume_output(dir: &std::path::Path) -> String {
    format!(
        "    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
        dir.display()
    )
}

async fn exported_ids(dir: &std::path::Path, run_dir: &str) -> Vec<String> {
    let vol = VolumeStorage::open(dir).await.unwrap();
    let (_, files) = read_run(&vol, run_dir).await;
    let mut ids = Vec::new();
    for (key, body) in files {
        for line in ndjson_rows(&key, &body) {
            ids.push(line["_id"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn assert_exact(spec: &DataSpec, mut ids: Vec<String>) {
    let mut want: Vec<String> = searchsim::datagen::docs(spec).map(|d| d.id).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids.len(), want.len(), "document count");
    assert!(ids == want, "exported ids differ from the source ids");
}

fn fired(sim: &searchsim::RunningSim, kind: &str) -> u64 {
    // A counter appears once its fault has fired.
    sim.cluster().stats()["faults"][kind].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_pages_fail_the_shard_and_are_retried() {
    let spec = small_spec(7);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            short_page_rate: 0.1,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "short-pages",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 2500\n    pageSize: 1000\n  retry:\n    maxAttempts: 40\n",
        &volume_output(out.path()),
    );
    let (report, progress) = run(&j, LocalSecrets::default(), 4).await;
    let report = report.expect("short pages are retried until the shard is whole");
    assert!(fired(&sim, "short_page") > 0, "the fault fired");
    assert!(progress.get().retries > 0, "shards were retried");
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("short-pages/{}", report.run_id)).await,
    );

    // Every page short: the job must fail, never claim success.
    sim.cluster()
        .set_faults(Faults {
            short_page_rate: 1.0,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "always-short",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 2500\n  retry:\n    maxAttempts: 2\n",
        &volume_output(out.path()),
    );
    let (report, _) = run(&j, LocalSecrets::default(), 2).await;
    let err = report
        .expect_err("a job with truncated pages must fail")
        .to_string();
    assert!(
        err.contains("incomplete") || err.contains("truncat"),
        "{err}"
    );
    let success: Vec<_> = walk(out.path())
        .into_iter()
        .filter(|p| p.ends_with("_SUCCESS"))
        .collect();
    assert!(
        success.is_empty(),
        "no _SUCCESS after a failed job: {success:?}"
    );
    sim.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_unavailability_and_latency_do_not_change_the_output() {
    let spec = small_spec(8);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            reject_rate: 0.2,
            unavailable_rate: 0.05,
            latency_ms: 2,
            latency_jitter_ms: 3,
            seed: 5,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "faults",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 5000\n    pageSize: 100\n",
        &volume_output(out.path()),
    );
    let (report, progress) = run(&j, LocalSecrets::default(), 4).await;
    let report = report.expect("faults are absorbed by retries");
    let retries = progress.request_retries();
    assert!(retries["rejected"] > 0, "429s were retried: {retries:?}");
    assert!(
        retries["unavailable_5xx"] > 0,
        "503s were retried: {retries:?}"
    );
    assert!(fired(&sim, "reject") > 0 && fired(&sim, "unavailable") > 0);
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("faults/{}", report.run_id)).await,
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opensearch_2_without_shard_doc_pages_by_id_or_a_tiebreaker_field() {
    let spec = small_spec(9);
    let (sim, _) = sim_with(Config::opensearch(), &spec).await;
    // The default tiebreaker before OpenSearch 3.3 is `_id`; a unique field can replace it.
    for (name, tiebreaker) in [("os2-id", None), ("os2-field", Some("event.id"))] {
        let out = tempfile::tempdir().unwrap();
        let mut j = job(
            name,
            &sim.url(),
            &spec,
            "  sharding:\n    targetDocsPerShard: 4000\n    pageSize: 700\n",
            &volume_output(out.path()),
        );
        j.spec.source.tiebreaker_field = tiebreaker.map(str::to_string);
        let (report, _) = run(&j, LocalSecrets::default(), 4).await;
        let report = report.unwrap_or_else(|e| panic!("OpenSearch 2.19 export ({name}): {e}"));
        assert_exact(
            &spec,
            exported_ids(out.path(), &format!("{name}/{}", report.run_id)).await,
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_custom_ca_and_sigv4_signed_requests() {
    let spec = DataSpec {
        docs: 5_000,
        ..small_spec(10)
    };
    let tls_dir = tempfile::tempdir().unwrap();
    let config = Config::opensearch_3()
        .with_tls(tls_dir.path())
        .with_sigv4("AKIDEXPORT", "export-secret-key-1");
    let (sim, _) = sim_with(config, &spec).await;
    assert!(sim.url().starts_with("https://"));
    let secrets = tempfile::tempdir().unwrap();
    let put = |secret: &str, key: &str, value: &str| {
        std::fs::create_dir_all(secrets.path().join(secret)).unwrap();
        std::fs::write(secrets.path().join(secret).join(key), value).unwrap();
    };
    put(
        "search-ca",
        "ca.crt",
        sim.ca_pem().expect("the simulator wrote its CA"),
    );
    put("aws", "accessKeyId", "AKIDEXPORT");
    put("aws", "secretAccessKey", "export-secret-key-1");
    put("aws-wrong", "accessKeyId", "AKIDEXPORT");
    put("aws-wrong", "secretAccessKey", "not-the-secret-999");
    let auth = |secret: &str| {
        format!(
            "    auth:\n      awsSigV4:\n        region: us-east-1\n        service: es\n        secretRef: {{name: {secret}}}\n    tls:\n      caSecretRef: {{name: search-ca}}\n"
        )
    };
    let out = tempfile::tempdir().unwrap();
    let with_auth = |name: &str, secret: &str| {
        let mut j = job(name, &sim.url(), &spec, "", &volume_output(out.path()));
        let extra: ExportJob = spillway_api::load_job_yaml(&format!(
            "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata: {{name: x}}\nspec:\n  source:\n    url: {}\n    indices: [x]\n{}  output: {{destination: {{volume: {{path: /x}}}}}}\n",
            sim.url(),
            auth(secret)
        ))
        .unwrap();
        j.spec.source.auth = extra.spec.source.auth;
        j.spec.source.tls = extra.spec.source.tls;
        j
    };
    let secrets_of = || LocalSecrets {
        dir: Some(secrets.path().into()),
    };
    let (report, progress) = run(&with_auth("signed", "aws"), secrets_of(), 4).await;
    let report = report.expect("signed requests over TLS export everything");
    assert!(progress.requests() > 0);
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("signed/{}", report.run_id)).await,
    );

    let (report, _) = run(&with_auth("wrongly-signed", "aws-wrong"), secrets_of(), 2).await;
    let err = report
        .expect_err("a wrong secret key is refused")
        .to_string();
    assert!(
        !err.contains("not-the-secret-999"),
        "the secret leaked: {err}"
    );
    assert!(
        err.contains("403")
            || err.to_lowercase().contains("signature")
            || err.contains("authentication"),
        "{err}"
    );
    sim.shutdown().await;
}
