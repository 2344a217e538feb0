//! `spillway coordinator`: the ExportJob controller.
//!
//! A kube-rs [`Controller`](kube::runtime::Controller) watches ExportJobs (in all namespaces or
//! a configured list) and drives each through the coordinator engine — the same engine
//! `spillway run --broker` uses — publishing shards to the broker that `spillway worker`
//! processes consume. Only the replica holding the leader [`lease`] runs the controller.
//!
//! - [`reconcile`]: the reconcile pipeline (validate → run → status), finalizer cleanup, TTL;
//! - [`runs`]: the engine runs this replica drives, one per ExportJob;
//! - [`status`]: the status and kstatus conditions for each state;
//! - [`secrets`]: Secrets read through the API in the job's namespace;
//! - [`lease`]: leader election over a `coordination.k8s.io` Lease.

pub mod lease;
pub mod reconcile;
pub mod runs;
pub mod secrets;
pub mod stats;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use spillway_api::ExportJob;
use tokio_util::sync::CancellationToken;

pub use lease::{LeaderElector, LeaseConfig, LeaseError};
pub use reconcile::{Context, FINALIZER};
pub use runs::Runs;
pub use stats::ControllerStats;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    pub status_interval: Duration,
    /// Reported as the events' controller (`reportingController`).
    pub reporter: String,
    /// This replica (`reportingInstance`), usually the pod name.
    pub instance: String,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            namespaces: Vec::new(),
            status_interval: Duration::from_secs(5),
            reporter: "spillway-coordinator".into(),
            instance: "spillway-coordinator".into(),
        }
    }
}

/// Runs the controller until `cancel` fires. Call only while holding the leader lease.
pub async fn run_controller(
    client: Client,
    runs: Arc<Runs>,
    opts: ControllerOptions,
    stats: Arc<ControllerStats>,
    cancel: CancellationToken,
) {
    let queue = runs.queue();
    let ctx = Arc::new(Context {
        client: client.clone(),
        runs: runs.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: opts.reporter.clone(),
                instance: Some(opts.instance.clone()),
            },
        ),
        stats,
        status_interval: opts.status_interval,
    });
    // Dead letters of every run this replica drives go back to their runs.
    let forwarder = tokio::spawn(spillway_engine::deadletters::forward_dead_letters(
        queue,
        Default::default(),
        cancel.child_token(),
    ));
    let mut controllers = Vec::new();
    let apis: Vec<Api<ExportJob>> = if opts.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        opts.namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    for api in apis {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        let controller = Controller::new(api, watcher::Config::default().any_semantic())
            .graceful_shutdown_on(async move { cancel.cancelled().await });
        controllers.push(tokio::spawn(async move {
            controller
                .run(reconcile::reconcile, reconcile::error_policy, ctx)
                .for_each(|res| async move {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "reconcile loop reported an error");
                    }
                })
                .await;
        }));
    }
    for c in controllers {
        let _ = c.await;
    }
    // Leadership is gone or we are shutting down: stop every run (PITs closed; their results
    // queues are kept so the next leader resumes them).
    let uids: Vec<String> = runs_uids(&runs);
    for uid in uids {
        runs.stop(&uid, None).await;
    }
    forwarder.abort();
}

fn runs_uids(runs: &Runs) -> Vec<String> {
    runs.uids()
}
