//! `spillway demo`: the whole data path with nothing installed. Starts the embedded test
//! cluster (searchsim, OpenSearch flavor) with generated log events, writes an ExportJob
//! manifest for it, exports it to Parquet on the local disk, checks the manifest against
//! the generated count, and says how to read the files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{Days, NaiveDate};
use clap::Args;
use spillway_api::manifest::Manifest;
use spillway_engine::LocalSecrets;

use crate::run::{execute, print_report};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Documents to generate.
    #[arg(long, default_value_t = 200_000)]
    pub docs: u64,
    /// Daily indices to spread them over (`logs-2024.03.01`, ...).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Where the job manifest and the output go.
    #[arg(long, default_value = "spillway-demo")]
    pub dir: PathBuf,
    /// Output format: parquet, ndjson or csv.
    #[arg(long, default_value = "parquet")]
    pub format: String,
    /// Shards exported at once.
    #[arg(long, short = 'w', default_value_t = 4)]
    pub workers: u16,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !["parquet", "ndjson", "csv"].contains(&args.format.as_str()) {
        bail!(
            "--format must be parquet, ndjson or csv, not {:?}",
            args.format
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let out = dir.join("out");

    eprintln!("starting the embedded test cluster (searchsim, OpenSearch 3.3 flavor)…");
    let sim = searchsim::SearchSim::start(searchsim::Config::opensearch_3())
        .await
        .context("cannot start the embedded test cluster")?;
    let start = NaiveDate::from_ymd_opt(2024, 3, 1).expect("valid date");
    let spec = searchsim::datagen::DataSpec {
        docs: args.docs,
        days: args.days.max(1),
        start,
        ..Default::default()
    };
    eprintln!(
        "generating {} log events over {} daily indices ({}*)…",
        spec.docs, spec.days, spec.index_prefix
    );
    let loaded = searchsim::datagen::load(sim.cluster(), &spec)
        .map_err(|e| anyhow::anyhow!("generating demo data failed: {e}"))?;
    let end = start + Days::new(u64::from(spec.days));

    let job_yaml = format!(
        r#"# Written by `spillway demo`. The cluster URL points at the demo's embedded cluster,
# which stops when the demo ends; change source.url to run this job against your own.
apiVersion: spillway.dev/v1alpha1
kind: ExportJob
metadata:
  name: demo-logs
spec:
  source:
    url: {url}
    indices: ["{prefix}*"]
  timeRange:
    field: "@timestamp"
    gte: {start}T00:00:00Z
    lt: {end}T00:00:00Z
  sharding:
    targetDocsPerShard: {target}
  output:
    format: {format}
    compression: zstd
    partitionBy: day
    destination:
      volume:
        path: {out}
"#,
        url = sim.url(),
        prefix = spec.index_prefix,
        start = start,
        end = end,
        target = (args.docs / 16).max(1000),
        format = args.format,
        out = out.display(),
    );
    let job_path = dir.join("job.yaml");
    std::fs::write(&job_path, &job_yaml)?;
    eprintln!("job manifest: {}", job_path.display());
    let job = spillway_api::load_job_yaml(&job_yaml)?;

    let (report, elapsed) = execute(
        &job,
        crate::run::Mode::Local {
            workers: args.workers,
        },
        Arc::new(LocalSecrets::default()),
        // A fresh run each time: the embedded cluster is new data every time.
        Some(format!(
            "demo-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        )),
        true,
    )
    .await?;
    sim.shutdown().await;
    print_report(&report, elapsed);

    let manifest_path = PathBuf::from(&report.manifest_uri);
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&manifest_path)?)
        .context("the manifest is not readable")?;
    if manifest.documents != loaded.docs {
        bail!(
            "the export holds {} documents but {} were generated",
            manifest.documents,
            loaded.docs
        );
    }
    println!(
        "verified: {} files, {} documents = {} generated",
        manifest.files.len(),
        manifest.documents,
        loaded.docs
    );
    let data = format!("{}/data", report.run_uri);
    println!();
    println!("Read it with DuckDB:");
    println!(
        "  duckdb -c \"SELECT service, count(*) FROM read_{fmt}('{data}/*/*.{ext}', hive_partitioning=true) GROUP BY 1\"",
        fmt = if args.format == "ndjson" {
            "json_auto"
        } else {
            args.format.as_str()
        },
        ext = match args.format.as_str() {
            "parquet" => "parquet",
            "ndjson" => "ndjson.zst",
            _ => "csv.zst",
        },
    );
    if args.format == "parquet" {
        println!("or with Python (pyarrow):");
        println!(
            "  python3 -c \"import pyarrow.dataset as d; print(d.dataset('{data}', partitioning='hive').to_table().num_rows)\""
        );
    }
    Ok(ExitCode::SUCCESS)
}
