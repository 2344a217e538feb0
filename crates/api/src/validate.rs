//! Validation the CRD schema cannot fully express, shared by `spillway run` and the
//! coordinator, plus loading an ExportJob manifest from YAML with errors that point at the
//! offending field.

use crate::spec::{Compression, ExportJob, ExportJobSpec, Format};

/// Why a job manifest or spec was refused. Each message names the field and what to do.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{0}")]
    Parse(String),
    #[error(
        "this file is a {found}, not an ExportJob (apiVersion spillway.dev/v1alpha1, kind ExportJob)"
    )]
    WrongKind { found: String },
    #[error("invalid ExportJob: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

const API_VERSION: &str = "spillway.dev/v1alpha1";

/// Parses one ExportJob manifest (the same YAML `kubectl apply` takes) and validates it.
pub fn load_job_yaml(text: &str) -> Result<ExportJob, SpecError> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| SpecError::Parse(format!("not valid YAML: {e}")))?;
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION || kind != "ExportJob" {
        return Err(SpecError::WrongKind {
            found: if kind.is_empty() && api_version.is_empty() {
                "manifest without apiVersion/kind".to_string()
            } else {
                format!("{api_version} {kind}")
            },
        });
    }
    let job: ExportJob = serde_yaml_ng::from_value(value)
        .map_err(|e| SpecError::Parse(format!("invalid ExportJob: {e}")))?;
    if job.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(SpecError::Invalid(vec!["metadata.name is required".into()]));
    }
    validate_spec(&job.spec)?;
    Ok(job)
}

/// Checks the rules of the CRD's CEL validations and the ones only the coordinator can check.
pub fn validate_spec(spec: &ExportJobSpec) -> Result<(), SpecError> {
    let mut errs = Vec::new();
    let src = &spec.source;
    if !(src.url.starts_with("http://") || src.url.starts_with("https://")) {
        errs.push(format!(
            "source.url {:?} must start with http:// or https://",
            redact_url(&src.url)
        ));
    }
    if src.indices.is_empty() || src.indices.iter().any(|i| i.trim().is_empty()) {
        errs.push("source.indices needs at least one non-empty index, alias or pattern".into());
    }
    if let Some(q) = &src.query
        && !q.is_object()
    {
        errs.push("source.query must be a query object such as {\"match_all\": {}}".into());
    }
    if parse_duration_ms(&src.keep_alive).is_none() {
        errs.push(format!(
            "source.keepAlive {:?} is not a duration such as 10m, 1h or 90s",
            src.keep_alive
        ));
    }
    if let Some(auth) = &src.auth {
        let n = [
            auth.basic.is_some(),
            auth.api_key.is_some(),
            auth.aws_sig_v4.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if n > 1 {
            errs.push("source.auth takes one of basic, apiKey or awsSigV4".into());
        }
    }
    if let Some(tr) = &spec.time_range {
        if tr.gte >= tr.lt {
            errs.push(format!(
                "timeRange.gte ({}) must be before timeRange.lt ({})",
                tr.gte.to_rfc3339(),
                tr.lt.to_rfc3339()
            ));
        }
        if tr.field.trim().is_empty() {
            errs.push("timeRange.field must name a date field".into());
        }
    }
    let sh = &spec.sharding;
    if sh.target_docs_per_shard == 0 {
        errs.push("sharding.targetDocsPerShard must be at least 1".into());
    }
    if !(1..=10_000).contains(&sh.page_size) {
        errs.push(format!(
            "sharding.pageSize {} must be between 1 and 10000 (index.max_result_window)",
            sh.page_size
        ));
    }
    if !(1..=1024).contains(&sh.max_slices) {
        errs.push(format!(
            "sharding.maxSlices {} must be between 1 and 1024",
            sh.max_slices
        ));
    }
    let out = &spec.output;
    match (&out.destination.s3, &out.destination.volume) {
        (Some(_), Some(_)) | (None, None) => {
            errs.push("output.destination takes exactly one of s3 or volume".into())
        }
        (Some(s3), None) => {
            if s3.bucket.len() < 3 {
                errs.push(
                    "output.destination.s3.bucket must be a bucket name (3 characters or more)"
                        .into(),
                );
            }
        }
        (None, Some(v)) => {
            if v.path.trim().is_empty() {
                errs.push("output.destination.volume.path must not be empty".into());
            }
        }
    }
    if out.compression == Compression::Snappy && out.format != Format::Parquet {
        errs.push("output.compression snappy is only for parquet; use gzip or zstd".into());
    }
    if out.part_size_bytes < 5 << 20 {
        errs.push("output.partSizeBytes must be at least 5 MiB (5242880), the S3 minimum".into());
    }
    if spec.parallelism.max_concurrent_shards == 0 {
        errs.push("parallelism.maxConcurrentShards must be at least 1".into());
    }
    if !(1..=100).contains(&spec.retry.max_attempts) {
        errs.push("retry.maxAttempts must be between 1 and 100".into());
    }
    if spec.ttl_seconds_after_finished.is_some_and(|t| t < 0) {
        errs.push("ttlSecondsAfterFinished must not be negative".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Invalid(errs))
    }
}

/// Parses `500ms`, `90s`, `10m`, `1h`, `1d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A URL with any `user:password@` part removed, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: spillway.dev/v1alpha1
kind: ExportJob
metadata:
  name: logs-march
spec:
  source:
    url: http://127.0.0.1:9200
    indices: ["logs-*"]
  timeRange:
    field: "@timestamp"
    gte: 2024-03-01T00:00:00Z
    lt: 2024-04-01T00:00:00Z
  output:
    format: parquet
    destination:
      volume:
        path: ./out
"#;

    #[test]
    fn loads_a_minimal_job_with_defaults() {
        let job = load_job_yaml(GOOD).unwrap();
        assert_eq!(job.spec.sharding.page_size, 1000);
        assert_eq!(job.spec.output.compression, Compression::Zstd);
        assert_eq!(job.spec.source.keep_alive, "10m");
    }

    #[test]
    fn unknown_field_is_named() {
        let bad = GOOD.replace("format: parquet", "format: parquet\n    colour: blue");
        let err = load_job_yaml(&bad).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn reversed_range_is_refused() {
        let bad = GOOD.replace("gte: 2024-03-01", "gte: 2024-05-01");
        let err = load_job_yaml(&bad).unwrap_err().to_string();
        assert!(err.contains("timeRange.gte"), "{err}");
    }

    #[test]
    fn wrong_kind_is_refused() {
        let bad = GOOD.replace("kind: ExportJob", "kind: Deployment");
        assert!(matches!(
            load_job_yaml(&bad),
            Err(SpecError::WrongKind { .. })
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10m"), Some(600_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1x"), None);
        assert_eq!(parse_duration_ms("m"), None);
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_url("https://u:p@h:9200/x"), "https://***@h:9200/x");
        assert_eq!(redact_url("http://h:9200"), "http://h:9200");
    }
}
