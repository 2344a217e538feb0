//! `spillway coordinator`: the ExportJob controller of a cluster deployment.
//!
//! Every replica serves `/healthz`, `/readyz` and `/metrics`; only the one holding the leader
//! Lease runs the controller and publishes shards. A leader that loses its Lease exits at once
//! (non-zero, so Kubernetes restarts it as a candidate) rather than risk two publishers; on
//! SIGTERM it stops its runs, releases the Lease and exits 0 so a follower takes over at once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use spillway_controller::{
    ControllerOptions, ControllerStats, LeaderElector, LeaseConfig, LeaseError, Runs,
};
use spillway_engine::Progress;
use spillway_queue::ShardQueue;
use spillway_queue::rabbit::{RabbitConfig, RabbitQueue, redact_url};
use spillway_telemetry::{Health, QueueDepth, Registry, coordinator_registry, serve};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// RabbitMQ URL, `amqp://user:password@host:5672/vhost`; the password is never logged.
    #[arg(long, env = "SPILLWAY_BROKER", hide_env_values = true)]
    pub broker: String,
    /// Namespaces whose ExportJobs this coordinator runs (comma-separated); all when empty.
    #[arg(long, env = "SPILLWAY_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Namespace of the leader Lease (the coordinator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease; replicas with the same name elect one leader.
    #[arg(
        long,
        env = "SPILLWAY_LEASE_NAME",
        default_value = "spillway-coordinator"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader's Lease lasts without renewal; a follower takes over after it.
    #[arg(long, env = "SPILLWAY_LEASE_DURATION", default_value = "15s",
          value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How often a running job's status is refreshed.
    #[arg(long, env = "SPILLWAY_STATUS_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// Address of the `/healthz`, `/readyz` and `/metrics` endpoint.
    #[arg(long, env = "SPILLWAY_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Deliveries of one task before the broker dead-letters it (the queue's
    /// `x-delivery-limit`; the same value as the workers').
    #[arg(long, env = "SPILLWAY_DELIVERY_LIMIT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
    /// Prefix of the shared queue names, the same as the workers'.
    #[arg(long, env = "SPILLWAY_QUEUE_NAMESPACE")]
    pub queue_namespace: Option<String>,
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let broker_shown = redact_url(args.broker.trim());
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));

    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: is a service account mounted? outside: is KUBECONFIG set?)",
    )?;
    let rabbit = RabbitQueue::connect(RabbitConfig {
        url: args.broker.trim().to_string(),
        delivery_limit: args.delivery_limit,
        namespace: args.queue_namespace.clone(),
        ..RabbitConfig::default()
    })
    .await
    .with_context(|| format!("cannot connect to the broker at {broker_shown}"))?;
    let queue: Arc<dyn ShardQueue> = Arc::new(rabbit.clone());
    let runs = Runs::new(queue);
    let stats = Arc::new(ControllerStats::default());

    // Metrics: the runs' counters summed, and queue depths sampled in the background.
    let totals = Arc::new(Progress::default());
    let depths = Arc::new((AtomicI64::new(0), AtomicI64::new(0)));
    let names = rabbit.names().clone();
    let depth_fn: QueueDepth = {
        let (depths, names) = (depths.clone(), names.clone());
        Arc::new(move || {
            vec![
                (names.shards.clone(), depths.0.load(Relaxed)),
                (names.dead.clone(), depths.1.load(Relaxed)),
            ]
        })
    };
    tokio::spawn(sample(
        runs.clone(),
        totals.clone(),
        rabbit.clone(),
        depths,
        cancel.clone(),
    ));
    let mut registry = coordinator_registry(totals, depth_fn);
    let controller_metrics = ControllerMetrics::register(&mut registry);
    tokio::spawn(controller_metrics.clone().follow(
        client.clone(),
        stats.clone(),
        args.namespaces.clone(),
        cancel.clone(),
    ));
    let health = {
        let rabbit = rabbit.clone();
        Health::new(move || {
            if rabbit.is_connected() {
                Ok(())
            } else {
                Err("not connected to the broker; reconnecting".into())
            }
        })
    };
    let (listening, server) = serve(args.listen, health, registry)
        .await
        .context("cannot start the coordinator")?;
    tracing::info!(listen = %listening, broker = %broker_shown, %identity, lease = %args.lease_name, namespaces = ?args.namespaces, "spillway coordinator starting");

    let mut lease_cfg = LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity);
    lease_cfg.lease_duration = args.lease_duration;
    lease_cfg.renew_every = (args.lease_duration / 3).max(Duration::from_millis(500));
    lease_cfg.retry_every = (args.lease_duration / 5).max(Duration::from_millis(500));
    let elector = LeaderElector::new(client.clone(), lease_cfg);
    match elector.acquire(&cancel).await {
        Ok(()) => {}
        Err(LeaseError::Cancelled) => {
            rabbit.close().await;
            server.abort();
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    }

    let leading = cancel.child_token();
    let opts = ControllerOptions {
        namespaces: args.namespaces.clone(),
        status_interval: args.status_interval,
        instance: identity.clone(),
        ..Default::default()
    };
    let controller = tokio::spawn(spillway_controller::run_controller(
        client,
        runs,
        opts,
        stats,
        leading.clone(),
    ));
    let held = elector.hold(&cancel).await;
    leading.cancel();
    let _ = controller.await;
    rabbit.close().await;
    server.abort();
    match held {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::anyhow!(
            "{e}; stopped publishing and exiting so that this replica restarts as a follower"
        )),
    }
}

/// Sums the runs' counters into `totals` and samples queue depths, every 2 seconds.
async fn sample(
    runs: Arc<Runs>,
    totals: Arc<Progress>,
    rabbit: RabbitQueue,
    depths: Arc<(AtomicI64, AtomicI64)>,
    cancel: CancellationToken,
) {
    // Counters of runs that ended are kept, so the totals never go down.
    let mut base = [0u64; 6];
    let mut seen: std::collections::HashMap<usize, [u64; 6]> = Default::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let live = runs.totals();
        let mut now_live: std::collections::HashMap<usize, [u64; 6]> = Default::default();
        for p in &live {
            let v = p.get();
            now_live.insert(
                Arc::as_ptr(p) as usize,
                [
                    v.docs_exported,
                    v.bytes,
                    v.shards_done,
                    v.retries,
                    p.shards_published.load(Relaxed),
                    p.keep_alives.load(Relaxed),
                ],
            );
        }
        for (k, v) in &seen {
            if !now_live.contains_key(k) {
                for i in 0..6 {
                    base[i] += v[i];
                }
            }
        }
        let mut sum = base;
        for v in now_live.values() {
            for i in 0..6 {
                sum[i] += v[i];
            }
        }
        seen = now_live;
        totals.docs_exported.store(sum[0], Relaxed);
        totals.bytes.store(sum[1], Relaxed);
        totals.shards_done.store(sum[2], Relaxed);
        totals.retries.store(sum[3], Relaxed);
        totals.shards_published.store(sum[4], Relaxed);
        totals.keep_alives.store(sum[5], Relaxed);
        if let Ok((ready, dead)) = rabbit.queue_depths().await {
            depths.0.store(i64::from(ready), Relaxed);
            depths.1.store(i64::from(dead), Relaxed);
        }
    }
}

fn default_identity() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("spillway-coordinator-{}", std::process::id()))
}

async fn stop_on_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            cancel.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: finishing the current reconcile and releasing the leader lease");
    cancel.cancel();
}

/// The controller's own families: reconciles, reconcile errors by reason, jobs by phase.
#[derive(Clone)]
struct ControllerMetrics {
    reconciles: Counter,
    errors: Family<Vec<(String, String)>, Counter>,
    jobs: Family<Vec<(String, String)>, Gauge>,
}

impl ControllerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ControllerMetrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            jobs: Family::default(),
        };
        registry.register(
            "spillway_reconciles",
            "ExportJob reconciles run by this replica",
            m.reconciles.clone(),
        );
        registry.register(
            "spillway_reconcile_errors",
            "Failed ExportJob reconciles by reason (KubeApiError, FinalizerError, ...)",
            m.errors.clone(),
        );
        registry.register(
            "spillway_jobs",
            "ExportJobs in the watched namespaces by status.phase",
            m.jobs.clone(),
        );
        m
    }

    /// Copies the controller's counters every 2 s and counts jobs by phase every 15 s.
    async fn follow(
        self,
        client: kube::Client,
        stats: Arc<ControllerStats>,
        namespaces: Vec<String>,
        cancel: CancellationToken,
    ) {
        let mut tick = 0u64;
        let mut seen_reconciles = 0u64;
        let mut seen_errors: std::collections::BTreeMap<&'static str, u64> = Default::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let r = stats.reconciles.load(Relaxed);
            self.reconciles.inc_by(r.saturating_sub(seen_reconciles));
            seen_reconciles = r;
            for (reason, n) in stats.errors() {
                let before = seen_errors.insert(reason, n).unwrap_or(0);
                self.errors
                    .get_or_create(&vec![("reason".into(), reason.into())])
                    .inc_by(n.saturating_sub(before));
            }
            if tick.is_multiple_of(8) {
                self.count_jobs(&client, &namespaces).await;
            }
            tick += 1;
        }
    }

    async fn count_jobs(&self, client: &kube::Client, namespaces: &[String]) {
        use spillway_api::{ExportJob, Phase};
        let apis: Vec<kube::Api<ExportJob>> = if namespaces.is_empty() {
            vec![kube::Api::all(client.clone())]
        } else {
            namespaces
                .iter()
                .map(|ns| kube::Api::namespaced(client.clone(), ns))
                .collect()
        };
        let mut by_phase: std::collections::BTreeMap<&'static str, i64> = [
            Phase::Pending,
            Phase::Planning,
            Phase::Running,
            Phase::Suspended,
            Phase::Succeeded,
            Phase::Failed,
        ]
        .into_iter()
        .map(|p| (p.as_str(), 0))
        .collect();
        for api in apis {
            match api.list(&Default::default()).await {
                Ok(list) => {
                    for j in list {
                        let phase = j.status.and_then(|s| s.phase).unwrap_or_default();
                        *by_phase.entry(phase.as_str()).or_insert(0) += 1;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not count ExportJobs for metrics");
                    return;
                }
            }
        }
        for (phase, n) in by_phase {
            self.jobs
                .get_or_create(&vec![("phase".into(), phase.into())])
                .set(n);
        }
    }
}
