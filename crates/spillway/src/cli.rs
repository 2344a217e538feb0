//! Command-line interface: argument parsing and dispatch to the roles.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Export very large OpenSearch/Elasticsearch data sets to Parquet, NDJSON or CSV files on
/// S3-compatible storage or a shared volume.
#[derive(Parser, Debug)]
#[command(name = "spillway", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `spillway_engine=debug`.
    #[arg(long, env = "SPILLWAY_LOG", global = true, default_value = "warn")]
    pub log: String,
    /// Log as JSON lines (for log collectors).
    #[arg(long, env = "SPILLWAY_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an ExportJob manifest on this machine, start to finish.
    Run(RunArgs),
    /// Check an ExportJob manifest without running it.
    Validate {
        /// ExportJob YAML file.
        job: PathBuf,
    },
    /// Print the ExportJob CustomResourceDefinition as YAML.
    Crd,
    /// Export generated data from an embedded test cluster to local Parquet files.
    Demo(crate::demo::DemoArgs),
    /// Run as a long-lived worker: take shard tasks from RabbitMQ and export them; serves
    /// /healthz, /readyz and /metrics.
    Worker(crate::worker::WorkerArgs),
    /// Run the ExportJob controller of a Kubernetes deployment (leader-elected); serves
    /// /healthz, /readyz and /metrics.
    Coordinator(crate::coordinator::CoordinatorArgs),
    /// Check that `spillway <ARGS>` would be accepted (flags and environment), without
    /// running anything: for deployment manifests and their tests.
    #[command(hide = true)]
    CheckArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// ExportJob YAML file (the same manifest you would `kubectl apply`).
    pub job: PathBuf,
    /// Shards exported at once.
    #[arg(long, short = 'w', env = "SPILLWAY_WORKERS", default_value_t = 4)]
    pub workers: u16,
    /// Directory of Secrets laid out as `<dir>/<secret name>/<key>` (as Kubernetes mounts
    /// them). Secrets are also read from `SPILLWAY_SECRET_<NAME>_<KEY>` variables.
    #[arg(long, env = "SPILLWAY_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Use this run id instead of the one derived from the job (a new id starts over).
    #[arg(long)]
    pub run_id: Option<String>,
    /// No progress bar; print a progress line every 10 seconds instead.
    #[arg(long)]
    pub no_progress: bool,
    /// Publish the job's shards to this RabbitMQ broker (`amqp://user:pass@host:5672/vhost`)
    /// for `spillway worker` processes instead of exporting them in this process; `--workers`
    /// is then ignored.
    #[arg(long, env = "SPILLWAY_BROKER", hide_env_values = true)]
    pub broker: Option<String>,
}

pub fn init_tracing(cli: &Cli) -> spillway_telemetry::TracingGuard {
    let worker = matches!(cli.command, Command::Worker(_) | Command::Coordinator(_));
    // A service logs its lifecycle unless told otherwise.
    let filter = if worker && cli.log == "warn" && std::env::var_os("SPILLWAY_LOG").is_none() {
        "warn,spillway=info".to_string()
    } else {
        cli.log.clone()
    };
    spillway_telemetry::init_tracing(spillway_telemetry::TracingOptions {
        filter,
        json: cli.log_json,
        service_name: if worker {
            "spillway-worker"
        } else {
            "spillway"
        }
        .to_string(),
    })
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => crate::run::run(args).await,
        Command::Validate { job } => {
            let text = std::fs::read_to_string(&job)
                .with_context(|| format!("cannot read {}", job.display()))?;
            let parsed = spillway_api::load_job_yaml(&text)
                .with_context(|| format!("{} is not a valid ExportJob", job.display()))?;
            println!(
                "{}: ExportJob {} is valid",
                job.display(),
                parsed.metadata.name.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => crate::demo::demo(args).await,
        Command::Worker(args) => crate::worker::worker(args).await,
        Command::Coordinator(args) => crate::coordinator::coordinator(args).await,
        Command::CheckArgs { args } => {
            let argv = std::iter::once("spillway".to_string()).chain(args);
            match Cli::try_parse_from(argv) {
                Ok(parsed) => {
                    println!("ok: {}", command_name(&parsed.command));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprint!("{e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Crd => {
            print!("{}", spillway_api::crd::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Run(_) => "run",
        Command::Validate { .. } => "validate",
        Command::Crd => "crd",
        Command::Demo(_) => "demo",
        Command::Worker(_) => "worker",
        Command::Coordinator(_) => "coordinator",
        Command::CheckArgs { .. } => "check-args",
    }
}
