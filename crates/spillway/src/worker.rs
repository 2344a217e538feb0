//! `spillway worker`: the long-running export service of a cluster deployment.
//!
//! It connects to RabbitMQ, takes shard tasks with a prefetch equal to its concurrency and
//! runs the engine's worker loop on them (each task is acked only after its output and marker
//! are committed and its result is confirmed by the broker). Beside the work it serves
//! `/healthz`, `/readyz` (ready while connected to the broker and consuming) and Prometheus
//! `/metrics`. On SIGTERM or SIGINT it stops consuming, gives the shards in flight back to the
//! queue (waiting at most `--shutdown-grace` for that), closes the connection and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use spillway_controller::secrets::KubeSecrets;
use spillway_engine::worker::run_worker;
use spillway_engine::{Executor, LocalSecrets, Progress, SecretResolver};
use spillway_queue::ShardQueue;
use spillway_queue::rabbit::{RabbitConfig, RabbitQueue, redact_url};
use spillway_telemetry::{Health, serve, worker_registry};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// RabbitMQ URL, `amqp://user:password@host:5672/vhost` (the vhost URL-encoded: `/` is
    /// `%2f`); `amqps://` for TLS. The password is never logged.
    #[arg(long, env = "SPILLWAY_BROKER", hide_env_values = true)]
    pub broker: String,
    /// Shards exported at once; also the number of unacknowledged tasks taken from the
    /// broker (prefetch).
    #[arg(long, env = "SPILLWAY_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Directory of Secrets laid out as `<dir>/<secret name>/<key>` (as Kubernetes mounts
    /// them). Secrets are also read from `SPILLWAY_SECRET_<NAME>_<KEY>` variables.
    #[arg(long, env = "SPILLWAY_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Address of the `/healthz`, `/readyz` and `/metrics` endpoint.
    #[arg(long, env = "SPILLWAY_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Deliveries of one task before the broker dead-letters it; must match the task queue's
    /// declaration (`x-delivery-limit`) made by every other worker and coordinator.
    #[arg(long, env = "SPILLWAY_DELIVERY_LIMIT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
    /// On SIGTERM/SIGINT, how long to wait for the shards in flight to be given back before
    /// exiting anyway (the broker then redelivers them when the connection closes).
    #[arg(long, env = "SPILLWAY_SHUTDOWN_GRACE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// How long to keep trying to reach the broker at start.
    #[arg(long, env = "SPILLWAY_CONNECT_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Read the Secrets jobs name through the Kubernetes API, in each job's namespace (the
    /// in-cluster service account, or KUBECONFIG), instead of `--secrets-dir`.
    #[arg(long, env = "SPILLWAY_KUBE_SECRETS", conflicts_with = "secrets_dir")]
    pub kube_secrets: bool,
    /// Prefix of the shared queue names (`spillway.<namespace>.shards`) so several
    /// installations can share one broker; coordinators must use the same.
    #[arg(long, env = "SPILLWAY_QUEUE_NAMESPACE")]
    pub queue_namespace: Option<String>,
}

/// Where the worker is in its life, for `/readyz`.
#[derive(Default)]
struct Lifecycle {
    queue: OnceLock<RabbitQueue>,
    consuming: AtomicBool,
    stopping: AtomicBool,
}

impl Lifecycle {
    fn readiness(&self, broker: &str) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let Some(queue) = self.queue.get() else {
            return Err(format!("connecting to the broker at {broker}"));
        };
        if !queue.is_connected() {
            return Err(format!(
                "lost the connection to the broker at {broker}; reconnecting"
            ));
        }
        if !self.consuming.load(Ordering::SeqCst) {
            return Err("connected to the broker but not consuming tasks".into());
        }
        Ok(())
    }
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let broker = redact_url(args.broker.trim());
    check_broker_url(args.broker.trim())?;
    let lifecycle = Arc::new(Lifecycle::default());
    let progress = Arc::new(Progress::default());

    let health = {
        let (lifecycle, broker) = (lifecycle.clone(), broker.clone());
        Health::new(move || lifecycle.readiness(&broker))
    };
    let (listening, server) = serve(args.listen, health, worker_registry(progress.clone()))
        .await
        .context("cannot start the worker")?;
    tracing::info!(
        concurrency = args.concurrency,
        listen = %listening,
        broker = %broker,
        delivery_limit = args.delivery_limit,
        "spillway worker starting"
    );

    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone(), lifecycle.clone()));

    let config = RabbitConfig {
        url: args.broker.trim().to_string(),
        delivery_limit: args.delivery_limit,
        connect_timeout: args.connect_timeout,
        namespace: args.queue_namespace.clone(),
        ..RabbitConfig::default()
    };
    let connected = tokio::select! {
        r = RabbitQueue::connect(config) => Some(r),
        _ = cancel.cancelled() => None,
    };
    let rabbit = match connected {
        None => {
            tracing::info!("stopped before the broker connection was up");
            server.abort();
            return Ok(ExitCode::SUCCESS);
        }
        Some(Err(e)) => {
            server.abort();
            return Err(anyhow::anyhow!(scrub(
                &format!("cannot connect to the broker: {e}"),
                &args.broker
            )));
        }
        Some(Ok(q)) => q,
    };
    let _ = lifecycle.queue.set(rabbit.clone());

    let queue: Arc<dyn ShardQueue> = Arc::new(rabbit.clone());
    let secrets: Arc<dyn SecretResolver> = if args.kube_secrets {
        let client = kube::Client::try_default().await.context(
            "--kube-secrets: cannot reach the Kubernetes API (in a pod: is a service account mounted? outside: is KUBECONFIG set?)",
        )?;
        Arc::new(KubeSecrets::new(client, None))
    } else {
        Arc::new(LocalSecrets {
            dir: args.secrets_dir.clone(),
        })
    };
    let executor = Arc::new(Executor::new(secrets, Some(progress.clone())));
    let mut work = tokio::spawn(run_worker(
        queue,
        executor,
        args.concurrency,
        cancel.clone(),
    ));

    // The loop runs until the process stops: while it does, the worker consumes (its consumer
    // subscribes again by itself after a reconnect, which `is_connected` covers).
    lifecycle.consuming.store(true, Ordering::SeqCst);
    let ended = tokio::select! {
        r = &mut work => Some(r),
        _ = cancel.cancelled() => None,
    };
    lifecycle.consuming.store(false, Ordering::SeqCst);
    let result = match ended {
        Some(Ok(Ok(()))) => Err(anyhow::anyhow!(
            "the broker closed the task queue; restarting the worker reconnects"
        )),
        Some(Ok(Err(e))) => Err(anyhow::anyhow!(scrub(
            &format!("the worker stopped: {e}"),
            &args.broker
        ))),
        Some(Err(e)) => Err(anyhow::anyhow!("the worker loop panicked: {e}")),
        None => {
            match tokio::time::timeout(args.shutdown_grace, &mut work).await {
                Ok(_) => tracing::info!("stopped consuming; shards in flight were given back"),
                Err(_) => {
                    work.abort();
                    tracing::warn!(
                        grace = ?args.shutdown_grace,
                        "shards still in flight after the shutdown grace; the broker redelivers them"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    lifecycle.stopping.store(true, Ordering::SeqCst);
    rabbit.close().await;
    server.abort();
    result
}

/// Refuses what cannot be a broker URL before anything is started; the message never holds
/// the password.
fn check_broker_url(url: &str) -> anyhow::Result<()> {
    let shown = match url.rsplit_once('@') {
        // Not a URL but it may hold `user:password@`: show none of what precedes the `@`.
        Some((_, host)) if !url.contains("://") => format!("***@{host}"),
        _ => redact_url(url),
    };
    let advice = "use amqp://user:password@host:5672/%2f (or amqps:// for TLS)";
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--broker [{shown}] is not a URL; {advice}");
    };
    if scheme != "amqp" && scheme != "amqps" {
        bail!("--broker [{shown}] has scheme [{scheme}], not amqp or amqps; {advice}");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        bail!("--broker [{shown}] names no host; {advice}");
    }
    if let Some(port) = host_port.rsplit_once(':').map(|(_, p)| p)
        && !host_port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        bail!("--broker [{shown}] has an invalid port [{port}]; {advice}");
    }
    Ok(())
}

/// `text` with the broker password (raw and URL-decoded) replaced by `***`.
fn scrub(text: &str, url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text.to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return text.to_string();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return text.to_string();
    };
    if password.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(password, "***");
    let decoded = percent_decode(password);
    if !decoded.is_empty() && decoded != password {
        out = out.replace(&decoded, "***");
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cancels `cancel` on the first SIGTERM or SIGINT.
async fn stop_on_signal(cancel: CancellationToken, lifecycle: Arc<Lifecycle>) {
    let name = wait_for_signal().await;
    tracing::info!(
        signal = name,
        "stopping: no new tasks; shards in flight go back to the queue"
    );
    lifecycle.stopping.store(true, Ordering::SeqCst);
    cancel.cancel();
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_checked_without_showing_the_password() {
        assert!(check_broker_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_broker_url("amqps://u:p@rabbit.example/vhost").is_ok());
        assert!(check_broker_url("amqp://[::1]:5672/%2f").is_ok());
        for bad in [
            "http://admin:hunter2@rabbit:5672/",
            "admin:hunter2@rabbit:5672",
            "amqp://admin:hunter2@/%2f",
            "amqp://admin:hunter2@rabbit:56x2/%2f",
        ] {
            let e = check_broker_url(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("--broker ["), "{e}");
            assert!(e.contains("amqp://user:password@host:5672/%2f"), "{e}");
        }
    }

    #[test]
    fn scrub_hides_raw_and_decoded_passwords() {
        let url = "amqp://admin:p%40ss@rabbit:5672/%2f";
        assert_eq!(
            scrub("failed for p%40ss and p@ss", url),
            "failed for *** and ***"
        );
        assert_eq!(scrub("nothing here", "amqp://rabbit/%2f"), "nothing here");
    }

    #[test]
    fn readiness_follows_the_lifecycle() {
        let l = Lifecycle::default();
        let e = l.readiness("amqp://u:***@h/%2f").unwrap_err();
        assert!(
            e.contains("connecting to the broker at amqp://u:***@h/%2f"),
            "{e}"
        );
        l.stopping.store(true, Ordering::SeqCst);
        assert_eq!(l.readiness("b").unwrap_err(), "shutting down");
    }
}
