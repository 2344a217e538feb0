//! Reconciling one ExportJob: validate → plan and run → status, as a pipeline that is safe to
//! repeat at any point (the controller may restart, lose leadership or see the same object
//! many times).
//!
//! - A finalizer (`spillway.dev/cleanup`) is added before anything runs; on deletion the run is
//!   stopped (its PIT closed, its uploads aborted, its queued shards dropped) before the
//!   finalizer is removed.
//! - An invalid spec ends `Failed` with `Stalled=True` and a message that says what to fix.
//! - A valid one gets a run (the engine's coordinator) keyed by the object's uid; the status is
//!   refreshed from the run's counters every `status_interval` and when the run ends.
//! - `spec.suspend` stops the run (finished shards are kept) and resuming starts it again from
//!   its markers; the run id does not depend on `suspend`, so it is the same run.
//! - A finished job is deleted `ttlSecondsAfterFinished` after its completion.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Client, Resource, ResourceExt};
use spillway_api::validate::validate_spec;
use spillway_api::{ExportJob, ExportJobStatus, Phase, results_queue};
use spillway_engine::coordinator::{derive_run_id, job_ref};

use crate::runs::{Outcome, Runs};
use crate::secrets::KubeSecrets;
use crate::stats::ControllerStats;
use crate::status;

pub const FINALIZER: &str = "spillway.dev/cleanup";

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub runs: Arc<Runs>,
    pub recorder: Recorder,
    pub stats: Arc<ControllerStats>,
    /// How often a running job's status is refreshed.
    pub status_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(String),
    #[error("the ExportJob has no namespace or uid yet")]
    Incomplete,
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "KubeApiError",
            ReconcileError::Finalizer(_) => "FinalizerError",
            ReconcileError::Incomplete => "IncompleteObject",
        }
    }
}

/// The controller's reconcile function.
pub async fn reconcile(job: Arc<ExportJob>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.stats
        .reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = job.namespace().ok_or(ReconcileError::Incomplete)?;
    let api: Api<ExportJob> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(&job, &api, &ctx).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

/// Backs off after a failed reconcile.
pub fn error_policy(job: Arc<ExportJob>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.stats.record_error(error.reason());
    tracing::warn!(job = %job.name_any(), namespace = ?job.namespace(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn write_status(
    api: &Api<ExportJob>,
    job: &ExportJob,
    status: &ExportJobStatus,
) -> Result<(), ReconcileError> {
    if job.status.as_ref() == Some(status) {
        return Ok(());
    }
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn event(ctx: &Context, job: &ExportJob, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
        tracing::warn!(job = %job.name_any(), error = %e, "could not publish an event");
    }
}

async fn apply(
    job: &ExportJob,
    api: &Api<ExportJob>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let now = Utc::now();
    let generation = job.metadata.generation;
    let prev = job.status.clone().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().ok_or(ReconcileError::Incomplete)?;

    // A finished job: nothing runs again; apply the TTL.
    if prev.phase.is_some_and(Phase::is_finished) && ctx.runs.get(&uid).is_none() {
        if let (Some(ttl), Some(done)) = (job.spec.ttl_seconds_after_finished, prev.completion_time)
        {
            let expires = done + chrono::Duration::seconds(ttl.max(0));
            if expires <= now {
                tracing::info!(job = %name, "deleting a finished job after ttlSecondsAfterFinished");
                event(
                    ctx,
                    job,
                    EventType::Normal,
                    "Expired",
                    format!("deleted {ttl}s after it finished (ttlSecondsAfterFinished)"),
                )
                .await;
                api.delete(&name, &DeleteParams::background()).await?;
                return Ok(Action::await_change());
            }
            let wait = (expires - now).to_std().unwrap_or_default();
            return Ok(Action::requeue(wait + Duration::from_millis(200)));
        }
        return Ok(Action::await_change());
    }

    if let Err(e) = validate_spec(&job.spec) {
        let st = status::invalid(&prev, generation, &e.to_string(), now);
        if prev.phase != Some(Phase::Failed) {
            event(ctx, job, EventType::Warning, "InvalidSpec", e.to_string()).await;
        }
        write_status(api, job, &st).await?;
        return Ok(Action::await_change());
    }

    let run_id = derive_run_id(job);
    let jref = job_ref(job, &run_id);
    let results = results_queue(&jref, &run_id);

    if job.spec.suspend {
        if let Some(run) = ctx.runs.get(&uid) {
            run.cancel.cancel();
            ctx.runs.stop(&uid, None).await;
            ctx.runs.remove(&uid);
            event(
                ctx,
                job,
                EventType::Normal,
                "Suspended",
                "stopped publishing shards; finished shards are kept".into(),
            )
            .await;
        }
        let st = status::suspended(&prev, generation, now);
        write_status(api, job, &st).await?;
        return Ok(Action::await_change());
    }

    // The spec changed in a way that would change the output after the run started (the CRD's
    // CEL rule refuses this on servers that evaluate it; this covers the rest).
    if let Some(started_run) = prev.run_id.as_deref()
        && started_run != run_id
    {
        let st = status::spec_changed(&prev, generation, now);
        write_status(api, job, &st).await?;
        return Ok(Action::requeue(ctx.status_interval));
    }

    let existed = ctx.runs.get(&uid).is_some();
    let secrets = Arc::new(KubeSecrets::new(
        ctx.client.clone(),
        Some(job.namespace().unwrap_or_default()),
    ));
    let run = ctx.runs.ensure(job, &uid, &run_id, secrets);
    if !existed {
        let note = if prev.phase == Some(Phase::Suspended) {
            "resumed: publishing the unfinished shards".to_string()
        } else {
            format!("export started (run {run_id})")
        };
        tracing::info!(job = %name, %run_id, "starting the export");
        event(ctx, job, EventType::Normal, "Started", note).await;
    }
    match run.outcome() {
        None => {
            let st = status::running(
                &prev,
                generation,
                &run_id,
                run.started,
                &run.progress.get(),
                run.in_flight(),
                now,
            );
            write_status(api, job, &st).await?;
            Ok(Action::requeue(ctx.status_interval))
        }
        Some(Outcome::Succeeded(report)) => {
            let st = status::succeeded(&prev, generation, &report, now);
            write_status(api, job, &st).await?;
            ctx.runs.remove(&uid);
            event(
                ctx,
                job,
                EventType::Normal,
                "Succeeded",
                format!(
                    "exported {} documents in {} shards; manifest {}",
                    report.documents, report.shards, report.manifest_uri
                ),
            )
            .await;
            Ok(match job.spec.ttl_seconds_after_finished {
                Some(ttl) => Action::requeue(
                    Duration::from_secs(ttl.max(0) as u64) + Duration::from_millis(200),
                ),
                None => Action::await_change(),
            })
        }
        Some(Outcome::Failed { reason, message }) => {
            let st = status::failed(&prev, generation, &reason, &message, now);
            write_status(api, job, &st).await?;
            ctx.runs.remove(&uid);
            let _ = ctx.runs.queue().delete_results(&results).await;
            event(ctx, job, EventType::Warning, &reason, message).await;
            Ok(match job.spec.ttl_seconds_after_finished {
                Some(ttl) => Action::requeue(
                    Duration::from_secs(ttl.max(0) as u64) + Duration::from_millis(200),
                ),
                None => Action::await_change(),
            })
        }
        Some(Outcome::Stopped) => {
            // Stopped while not suspended (e.g. a lost leadership race): start again.
            ctx.runs.remove(&uid);
            Ok(Action::requeue(Duration::from_millis(100)))
        }
    }
}

/// The ExportJob is being deleted: stop its run, close its PIT, abort its uploads and drop
/// its queued shards, then let the finalizer go.
async fn cleanup(job: &ExportJob, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(uid) = job.uid() else {
        return Ok(Action::await_change());
    };
    let run_id = derive_run_id(job);
    let results = results_queue(&job_ref(job, &run_id), &run_id);
    let was_running = ctx.runs.get(&uid).is_some_and(|r| r.outcome().is_none());
    ctx.runs.stop(&uid, Some(&results)).await;
    ctx.runs.remove(&uid);
    if was_running {
        tracing::info!(job = %job.name_any(), "deleted while running: snapshot closed, uploads aborted, queued shards dropped");
        event(
            ctx,
            job,
            EventType::Normal,
            "Deleted",
            "export stopped: snapshot closed, incomplete uploads aborted, queued shards dropped"
                .into(),
        )
        .await;
    }
    Ok(Action::await_change())
}
