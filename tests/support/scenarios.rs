//! Scenarios that run against any cluster, simulated or real: a job built from a generated
//! data spec, a local run of the engine, and the exactness check of one export in three
//! formats (zstd Parquet on S3, zstd NDJSON and gzip CSV on a volume).

use std::sync::Arc;

use searchsim::datagen::DataSpec;
use serde_json::Value;
use spillway_api::ExportJob;
use spillway_engine::{EngineError, JobReport, LocalOptions, LocalSecrets, Progress, run_local};
use spillway_sink::storage::volume::VolumeStorage;
use tokio_util::sync::CancellationToken;

use crate::verify::{account, assert_row, expected};
use crate::{csv_rows, ndjson_rows, parquet_rows, read_run, s3_bucket, s3_env};

/// An ExportJob over every daily index of `spec`, for its whole time range.
pub fn job(name: &str, url: &str, spec: &DataSpec, extra_spec: &str, output: &str) -> ExportJob {
    let end = spec.start + chrono::Days::new(u64::from(spec.days));
    let yaml = format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\nspec:\n  source:\n    url: {url}\n    indices: [\"{prefix}*\"]\n  timeRange:\n    field: \"@timestamp\"\n    gte: {start}T00:00:00Z\n    lt: {end}T00:00:00Z\n{extra_spec}  output:\n{output}",
        prefix = spec.index_prefix,
        start = spec.start,
    );
    spillway_api::load_job_yaml(&yaml)
        .unwrap_or_else(|e| panic!("test job is invalid: {e}\n{yaml}"))
}

/// Runs a job in process with `workers` shard slots.
pub async fn run(
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

/// Exports every document of `spec` from `url` three times (zstd Parquet to the S3 bucket
/// `bucket`, zstd NDJSON and gzip CSV to a volume) and checks each output record by record:
/// nothing missing, nothing twice, the right index, and a sample compared field by field.
/// `name` prefixes the jobs' names.
pub async fn exactness_in_three_formats(url: &str, spec: &DataSpec, bucket: &str, name: &str) {
    let target = (spec.docs / 40).max(1000);
    let exp = expected(spec, (spec.docs / 1000).max(1));
    assert!(exp.sample.len() >= 1000.min(spec.docs as usize));

    // 1. zstd Parquet on S3 (SeaweedFS).
    let s3 = s3_env();
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
        &format!("{name}-parquet"),
        url,
        spec,
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
    let run_dir = format!("runs/{name}-parquet/{}", report.run_id);
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
    for (suffix, format, compression) in [("ndjson", "ndjson", "zstd"), ("csv", "csv", "gzip")] {
        let job_name = format!("{name}-{suffix}");
        let j = job(
            &job_name,
            url,
            spec,
            &format!("  sharding:\n    targetDocsPerShard: {target}\n"),
            &format!(
                "    format: {format}\n    compression: {compression}\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
                out.path().display()
            ),
        );
        let (report, _) = run(&j, LocalSecrets::default(), 4).await;
        let report = report.unwrap_or_else(|e| panic!("the {format} export fails: {e}"));
        let vol = VolumeStorage::open(out.path()).await.unwrap();
        let (manifest, files) = read_run(&vol, &format!("{job_name}/{}", report.run_id)).await;
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
}

/// A small spec: 30,000 documents over 3 days, no large documents.
pub fn small_spec(seed: u64) -> DataSpec {
    DataSpec {
        docs: 30_000,
        days: 3,
        shards: 3,
        seed,
        large_every: 0,
        ..Default::default()
    }
}

/// Uncompressed NDJSON with metadata to a volume.
pub fn volume_output(dir: &std::path::Path) -> String {
    format!(
        "    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
        dir.display()
    )
}

/// Every `_id` of a finished run on a volume.
pub async fn exported_ids(dir: &std::path::Path, run_dir: &str) -> Vec<String> {
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

/// The exported ids are exactly the generated ones.
pub fn assert_exact(spec: &DataSpec, mut ids: Vec<String>) {
    let mut want: Vec<String> = searchsim::datagen::docs(spec).map(|d| d.id).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids.len(), want.len(), "document count");
    assert!(ids == want, "exported ids differ from the source ids");
}
