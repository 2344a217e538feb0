//! The status an ExportJob shows for each state of its run, as pure functions of the previous
//! status and what the run reports.
//!
//! Conditions follow kstatus (Flux, `kubectl wait`) and the Argo CD health check shipped in
//! `manifests/argocd/`: `Reconciling=True` while work is under way, `Stalled=True` when the
//! controller cannot make progress without a change from the user, `Ready=True` only once the
//! export succeeded; plus `Complete`, `Failed` and `Suspended` for people and scripts. Every
//! condition carries the `observedGeneration` it was computed for.

use chrono::{DateTime, Utc};
use spillway_api::status::{DocumentCounts, ShardCounts};
use spillway_api::{ExportJobStatus, Phase};
use spillway_engine::{JobReport, ProgressView};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";

/// Longest `lastError` / condition message kept in the status.
const MAX_MESSAGE: usize = 1024;

fn clip(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn base(prev: &ExportJobStatus, generation: Option<i64>, phase: Phase) -> ExportJobStatus {
    ExportJobStatus {
        phase: Some(phase),
        observed_generation: generation,
        ..prev.clone()
    }
}

fn counts(s: &mut ExportJobStatus, p: &ProgressView, running: u64) {
    let failed = s.shards.failed;
    s.shards = ShardCounts {
        total: p.shards_total,
        succeeded: p.shards_done,
        running,
        pending: p
            .shards_total
            .saturating_sub(p.shards_done)
            .saturating_sub(running)
            .saturating_sub(failed),
        failed,
    };
    s.documents = DocumentCounts {
        expected: p.docs_expected,
        exported: p.docs_exported,
    };
    s.bytes = p.bytes;
    s.progress = (p.shards_total > 0).then(|| format!("{}/{}", p.shards_done, p.shards_total));
}

/// The spec is invalid: nothing runs until it is fixed.
pub fn invalid(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    message: &str,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let mut s = base(prev, generation, Phase::Failed);
    let message = clip(&format!("the spec is invalid: {message}"));
    s.set_condition(READY, false, "InvalidSpec", &message, generation, now);
    s.set_condition(RECONCILING, false, "InvalidSpec", "", generation, now);
    s.set_condition(STALLED, true, "InvalidSpec", &message, generation, now);
    s.set_condition(FAILED, true, "InvalidSpec", &message, generation, now);
    s.last_error = Some(message);
    s
}

/// The run is planning or exporting.
pub fn running(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    run_id: &str,
    started: DateTime<Utc>,
    progress: &ProgressView,
    in_flight: u64,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let phase = if progress.shards_total == 0 {
        Phase::Planning
    } else {
        Phase::Running
    };
    let mut s = base(prev, generation, phase);
    s.run_id = Some(run_id.to_string());
    s.start_time = s.start_time.or(Some(started));
    counts(&mut s, progress, in_flight);
    let msg = match phase {
        Phase::Planning => "opening the snapshot and planning shards".to_string(),
        _ => format!(
            "exported {} of {} shards ({} of {} documents)",
            progress.shards_done,
            progress.shards_total,
            progress.docs_exported,
            progress.docs_expected
        ),
    };
    s.set_condition(READY, false, "Exporting", &msg, generation, now);
    s.set_condition(RECONCILING, true, "Exporting", &msg, generation, now);
    s.set_condition(STALLED, false, "Exporting", "", generation, now);
    s.set_condition(SUSPENDED, false, "Exporting", "", generation, now);
    s
}

/// `spec.suspend` is set: nothing is published until it is cleared.
pub fn suspended(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let mut s = base(prev, generation, Phase::Suspended);
    let msg = "spec.suspend is true: no shards are published; set it to false to resume from the finished shards";
    s.set_condition(READY, false, "Suspended", msg, generation, now);
    s.set_condition(RECONCILING, false, "Suspended", msg, generation, now);
    s.set_condition(STALLED, false, "Suspended", "", generation, now);
    s.set_condition(SUSPENDED, true, "Suspended", msg, generation, now);
    s
}

/// Every shard exported and verified; `_SUCCESS` written.
pub fn succeeded(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    report: &JobReport,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let mut s = base(prev, generation, Phase::Succeeded);
    s.run_id = Some(report.run_id.clone());
    s.shards = ShardCounts {
        total: report.shards,
        succeeded: report.shards,
        ..Default::default()
    };
    s.documents = DocumentCounts {
        expected: report.documents,
        exported: report.documents,
    };
    s.bytes = report.bytes;
    s.progress = Some(format!("{}/{}", report.shards, report.shards));
    s.start_time = s.start_time.or(Some(now));
    s.completion_time = Some(now);
    s.manifest_uri = Some(report.manifest_uri.clone());
    s.snapshot_renewals = report.snapshot_renewals;
    s.last_error = None;
    let msg = format!(
        "exported {} documents in {} shards to {}",
        report.documents, report.shards, report.run_uri
    );
    s.set_condition(READY, true, "Succeeded", &msg, generation, now);
    s.set_condition(RECONCILING, false, "Succeeded", "", generation, now);
    s.set_condition(STALLED, false, "Succeeded", "", generation, now);
    s.set_condition(COMPLETE, true, "Succeeded", &msg, generation, now);
    s.set_condition(FAILED, false, "Succeeded", "", generation, now);
    s.set_condition(SUSPENDED, false, "Succeeded", "", generation, now);
    s
}

/// The run failed for good; `message` says what failed and what to do.
pub fn failed(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let mut s = base(prev, generation, Phase::Failed);
    let message = clip(message);
    s.completion_time = Some(now);
    s.last_error = Some(message.clone());
    s.shards.running = 0;
    s.set_condition(READY, false, reason, &message, generation, now);
    s.set_condition(RECONCILING, false, reason, "", generation, now);
    s.set_condition(STALLED, true, reason, &message, generation, now);
    s.set_condition(FAILED, true, reason, &message, generation, now);
    s.set_condition(COMPLETE, false, reason, "", generation, now);
    s
}

/// A spec change that would change the output was made after the export started: the running
/// export goes on with the spec it started with.
pub fn spec_changed(
    prev: &ExportJobStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> ExportJobStatus {
    let mut s = prev.clone();
    let msg = "the spec changed after the export started; only suspend, parallelism and ttlSecondsAfterFinished may change. The export continues with the spec it started with: revert the change, or create a new ExportJob";
    s.set_condition(STALLED, true, "SpecChanged", msg, generation, now);
    s.last_error = Some(msg.to_string());
    s
}

/// A reason (CamelCase) for an engine error, for conditions, events and metrics.
pub fn reason_of(e: &spillway_engine::EngineError) -> &'static str {
    use spillway_engine::EngineError as E;
    match e {
        E::Spec(_) => "InvalidSpec",
        E::Source(_) => "SourceError",
        E::Sink(_) => "DestinationError",
        E::Queue(_) => "QueueError",
        E::Secret(_) => "SecretError",
        E::Incomplete { .. } => "IncompleteShard",
        E::SnapshotLost(_) => "SnapshotLost",
        E::ShardFailed { .. } => "ShardFailed",
        E::DeadLettered { .. } => "ShardDeadLettered",
        E::CountMismatch { .. } => "CountMismatch",
        E::Cancelled => "Cancelled",
        E::Internal(_) => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond<'a>(s: &'a ExportJobStatus, t: &str) -> &'a str {
        s.condition(t)
            .map(|c| c.status.as_str())
            .unwrap_or("absent")
    }

    fn view(done: u64, total: u64) -> ProgressView {
        ProgressView {
            shards_total: total,
            shards_done: done,
            shards_skipped: 0,
            docs_expected: 1000,
            docs_exported: done * 10,
            bytes: 5,
            retries: 0,
        }
    }

    #[test]
    fn lifecycle_follows_kstatus() {
        let t0 = Utc::now();
        let planning = running(
            &ExportJobStatus::default(),
            Some(1),
            "r1",
            t0,
            &view(0, 0),
            0,
            t0,
        );
        assert_eq!(planning.phase, Some(Phase::Planning));
        assert_eq!(cond(&planning, RECONCILING), "True");
        assert_eq!(cond(&planning, READY), "False");
        assert!(planning.progress.is_none());

        let run = running(&planning, Some(1), "r1", t0, &view(3, 10), 2, t0);
        assert_eq!(run.phase, Some(Phase::Running));
        assert_eq!(run.progress.as_deref(), Some("3/10"));
        assert_eq!(run.shards.pending, 5);
        assert_eq!(run.start_time, Some(t0));

        let report = JobReport {
            job: spillway_api::JobRef {
                namespace: Some("ns".into()),
                name: "j".into(),
                uid: "u".into(),
            },
            run_id: "r1".into(),
            run_uri: "s3://b/p/j/r1".into(),
            manifest_uri: "s3://b/p/j/r1/_manifest.json".into(),
            documents: 100,
            bytes: 10,
            shards: 10,
            resumed_shards: 0,
            already_complete: false,
            snapshot_renewals: 0,
        };
        let done = succeeded(&run, Some(1), &report, t0);
        assert_eq!(done.phase, Some(Phase::Succeeded));
        assert_eq!(cond(&done, READY), "True");
        assert_eq!(cond(&done, RECONCILING), "False");
        assert_eq!(cond(&done, COMPLETE), "True");
        assert_eq!(cond(&done, STALLED), "False");
        assert!(
            done.conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
        assert_eq!(done.progress.as_deref(), Some("10/10"));
    }

    #[test]
    fn failures_stall_and_keep_a_clipped_message() {
        let t0 = Utc::now();
        let long = "x".repeat(5000);
        let f = failed(
            &ExportJobStatus::default(),
            Some(2),
            "SourceError",
            &long,
            t0,
        );
        assert_eq!(f.phase, Some(Phase::Failed));
        assert_eq!(cond(&f, STALLED), "True");
        assert_eq!(cond(&f, READY), "False");
        assert_eq!(cond(&f, RECONCILING), "False");
        assert!(f.last_error.as_ref().unwrap().len() <= MAX_MESSAGE + 4);
        let inv = invalid(
            &ExportJobStatus::default(),
            Some(1),
            "timeRange.gte must be before timeRange.lt",
            t0,
        );
        assert_eq!(cond(&inv, STALLED), "True");
        assert!(inv.last_error.unwrap().contains("timeRange.gte"));
    }

    #[test]
    fn suspend_is_neither_ready_nor_reconciling() {
        let t0 = Utc::now();
        let s = suspended(&ExportJobStatus::default(), Some(3), t0);
        assert_eq!(s.phase, Some(Phase::Suspended));
        assert_eq!(cond(&s, SUSPENDED), "True");
        assert_eq!(cond(&s, READY), "False");
        assert_eq!(cond(&s, RECONCILING), "False");
        let resumed = running(&s, Some(4), "r", t0, &view(1, 4), 1, t0);
        assert_eq!(cond(&resumed, SUSPENDED), "False");
        assert_eq!(cond(&resumed, RECONCILING), "True");
    }
}
