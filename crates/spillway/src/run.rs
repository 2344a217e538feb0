//! `spillway run`: one ExportJob on this machine with a progress bar, Ctrl-C handling and a
//! summary that says where the files are.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use spillway_api::ExportJob;
use spillway_engine::{
    JobReport, LocalOptions, LocalSecrets, Progress, SecretResolver, run_local, run_with_queue,
};
use spillway_queue::rabbit::{RabbitConfig, RabbitQueue};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read {}", args.job.display()))?;
    let job = spillway_api::load_job_yaml(&text)
        .with_context(|| format!("{} is not a valid ExportJob", args.job.display()))?;
    let secrets = Arc::new(LocalSecrets {
        dir: args.secrets_dir.clone(),
    });
    let mode = match &args.broker {
        None => Mode::Local {
            workers: args.workers,
        },
        Some(url) => Mode::Broker {
            queue: connect_broker(url).await?,
        },
    };
    let (report, elapsed) =
        execute(&job, mode, secrets, args.run_id.clone(), !args.no_progress).await?;
    print_report(&report, elapsed);
    Ok(ExitCode::SUCCESS)
}

/// Where the shards are exported.
pub enum Mode {
    /// A pool of `workers` shard slots in this process.
    Local { workers: u16 },
    /// `spillway worker` processes consuming from a broker.
    Broker { queue: Arc<RabbitQueue> },
}

async fn connect_broker(url: &str) -> anyhow::Result<Arc<RabbitQueue>> {
    let queue = RabbitQueue::connect(RabbitConfig {
        url: url.to_string(),
        ..Default::default()
    })
    .await?;
    Ok(Arc::new(queue))
}

/// Runs a job with a progress display and Ctrl-C handling.
pub async fn execute(
    job: &ExportJob,
    mode: Mode,
    secrets: Arc<dyn SecretResolver>,
    run_id: Option<String>,
    progress_bar: bool,
) -> anyhow::Result<(JobReport, Duration)> {
    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping; finished shards are kept");
                cancel.cancel();
            }
        });
    }
    let reporter = tokio::spawn(report_progress(
        progress.clone(),
        progress_bar && std::io::stderr().is_terminal(),
    ));
    let started = Instant::now();
    let result = match mode {
        Mode::Local { workers } => {
            let opts = LocalOptions {
                workers,
                secrets,
                progress,
                cancel,
                run_id,
            };
            run_local(job, opts).await
        }
        Mode::Broker { queue } => {
            let opts = LocalOptions {
                workers: 0,
                secrets,
                progress,
                cancel,
                run_id,
            };
            let r = run_with_queue(job, queue.clone(), opts).await;
            queue.close().await;
            r
        }
    };
    reporter.abort();
    let _ = reporter.await;
    Ok((result?, started.elapsed()))
}

pub fn print_report(report: &JobReport, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(0.001);
    if report.already_complete {
        println!(
            "already complete: {} documents in {} shards at {}",
            report.documents, report.shards, report.run_uri
        );
    } else {
        println!(
            "exported {} documents ({}) in {} shards in {:.1}s ({:.0} docs/s){}",
            report.documents,
            human_bytes(report.bytes),
            report.shards,
            secs,
            report.documents as f64 / secs,
            if report.resumed_shards > 0 {
                format!(
                    ", {} shards reused from an earlier run",
                    report.resumed_shards
                )
            } else {
                String::new()
            }
        );
    }
    println!("output:   {}", report.run_uri);
    println!("manifest: {}", report.manifest_uri);
}

async fn report_progress(progress: Arc<Progress>, tty: bool) {
    let started = Instant::now();
    if tty {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} docs {per_sec} eta {eta} {msg}",
            )
            .expect("static template"),
        );
        loop {
            let v = progress.get();
            bar.set_length(v.docs_expected);
            bar.set_position(v.docs_exported);
            bar.set_message(format!("shards {}/{}", v.shards_done, v.shards_total));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let v = progress.get();
            let rate = v.docs_exported as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "progress: {}/{} docs, shards {}/{}, {:.0} docs/s",
                v.docs_exported, v.docs_expected, v.shards_done, v.shards_total, rate
            );
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
