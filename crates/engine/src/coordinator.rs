//! The coordinator engine: one job from spec to `_SUCCESS`, independent of Kubernetes.
//!
//! 1. Open one point-in-time snapshot (guarantee 1) and count the job's documents under it.
//! 2. Plan: reuse `_spillway/plan.json` when it exists (a resumed run), otherwise one
//!    `date_histogram` under the PIT → time windows × PIT slices (guarantee 2), persisted.
//! 3. Skip shards whose markers exist; publish the rest, at most `maxConcurrentShards` in flight.
//! 4. Track results: retry failed shards up to `retry.maxAttempts`, fail on dead letters and on
//!    errors that retrying cannot fix, apply `onSnapshotLoss` when the PIT disappears, and keep
//!    the PIT alive meanwhile.
//! 5. Verify the exported total equals the snapshot's count (guarantee 4), write
//!    `_manifest.json`, then `_SUCCESS`, and close the PIT — on every exit path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use spillway_api::manifest::{MANIFEST_VERSION, Manifest, ManifestSource};
use spillway_api::plan::PLAN_VERSION;
use spillway_api::validate::{parse_duration_ms, redact_url, validate_spec};
use spillway_api::{
    ExportJob, JobRef, MESSAGE_VERSION, OnSnapshotLoss, Plan, ShardMarker, ShardOutcome, ShardSpec,
    ShardTask, SnapshotRef, TimeWindow, layout,
};
use spillway_queue::ShardQueue;
use spillway_sink::commit;
use spillway_sink::encode::DocSchema;
use spillway_sink::storage::Storage;
use spillway_source::{Client, Snapshot, SnapshotKind, Target};
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::connect::{destination_prefix, open_storage, source_config, uri_of};
use crate::progress::Progress;
use crate::secrets::SecretResolver;

/// After this many shards have failed for good, no new shards are published: the cluster or
/// the destination is probably broken, and a re-run after the fix resumes from the markers.
pub const FAIL_FAST_AFTER: usize = 3;

/// Knobs of one coordinator run.
#[derive(Clone, Debug, Default)]
pub struct CoordinatorOptions {
    /// Run id; by default derived from the job's name and spec, so running the same job
    /// again resumes the same run.
    pub run_id: Option<String>,
    /// Count documents when shards complete (workers in other processes) rather than live.
    pub count_docs_on_completion: bool,
}

/// The outcome of a successful run.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub job: JobRef,
    pub run_id: String,
    /// Where the run's files are (`s3://bucket/prefix/job/run` or a directory).
    pub run_uri: String,
    pub manifest_uri: String,
    pub documents: u64,
    pub bytes: u64,
    pub shards: u64,
    /// Shards already committed by an earlier, interrupted run.
    pub resumed_shards: u64,
    /// The run had already succeeded; nothing was read.
    pub already_complete: bool,
    pub snapshot_renewals: u32,
}

/// A stable run id for a job spec: same name and spec → same run → resume.
/// Fields that may change while a job runs (suspend, parallelism, TTL) do not count.
pub fn derive_run_id(job: &ExportJob) -> String {
    let mut spec = job.spec.clone();
    spec.suspend = false;
    spec.ttl_seconds_after_finished = None;
    spec.parallelism = Default::default();
    let mut h = Sha256::new();
    h.update(job.metadata.name.as_deref().unwrap_or("").as_bytes());
    h.update(serde_json::to_vec(&spec).unwrap_or_default());
    hex::encode(&h.finalize()[..6])
}

pub fn job_ref(job: &ExportJob, run_id: &str) -> JobRef {
    JobRef {
        namespace: job.metadata.namespace.clone(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("local-{run_id}")),
    }
}

/// Runs one job to completion through `queue`; workers consume from the same queue.
pub async fn run_job(
    job: &ExportJob,
    queue: Arc<dyn ShardQueue>,
    secrets: Arc<dyn SecretResolver>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    opts: CoordinatorOptions,
) -> Result<JobReport, EngineError> {
    let spec = &job.spec;
    validate_spec(spec)?;
    let run_id = opts.run_id.clone().unwrap_or_else(|| derive_run_id(job));
    let jref = job_ref(job, &run_id);
    let storage = open_storage(&spec.output, secrets.as_ref()).await?;
    let run_dir = layout::run_dir(
        destination_prefix(&spec.output.destination),
        &jref.name,
        &run_id,
    );
    let run_uri = uri_of(&spec.output.destination, &run_dir);
    let manifest_uri = format!("{run_uri}/{}", layout::MANIFEST);

    if storage
        .get(&format!("{run_dir}/{}", layout::SUCCESS))
        .await?
        .is_some()
    {
        let manifest: Option<Manifest> = storage
            .get(&format!("{run_dir}/{}", layout::MANIFEST))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let m = manifest.ok_or_else(|| {
            EngineError::Internal(format!(
                "{run_uri} has _SUCCESS but no readable _manifest.json"
            ))
        })?;
        progress.shards_total.store(m.shards, Relaxed);
        progress.shards_done.store(m.shards, Relaxed);
        progress.docs_expected.store(m.expected_documents, Relaxed);
        progress.docs_exported.store(m.documents, Relaxed);
        return Ok(JobReport {
            job: jref,
            run_id,
            run_uri,
            manifest_uri,
            documents: m.documents,
            bytes: m.bytes,
            shards: m.shards,
            resumed_shards: m.shards,
            already_complete: true,
            snapshot_renewals: 0,
        });
    }

    let client = Client::connect(source_config(spec, secrets.as_ref()).await?).await?;
    let snapshot = client
        .open_snapshot(&spec.source.indices, &spec.source.keep_alive)
        .await?;
    let (jref_for_queue, run_id_for_queue) = (jref.clone(), run_id.clone());
    let mut run = Run {
        job,
        jref,
        run_id,
        run_dir,
        run_uri,
        manifest_uri,
        storage,
        client,
        snapshot,
        // Unique to this run attempt: answers to tasks of an earlier attempt of the same run
        // (before a suspend, or by a coordinator that died) never pass for this one's.
        generation: (Utc::now().timestamp_millis() as u64 % 1_000_000_000) as u32,
        renewals: 0,
        reply_to: spillway_api::results_queue(&jref_for_queue, &run_id_for_queue),
        queue,
        progress,
        opts,
        started_at: Utc::now(),
    };
    let outcome = run.drive(&cancel).await;
    // Only the coordinator closes the PIT, on every exit path.
    if let Err(e) = run.client.close_snapshot(&run.snapshot).await {
        tracing::warn!(job = %run.jref, error = %e, "could not close the snapshot; it expires on its own after keepAlive");
    }
    // The run's results queue is not needed once the run is over (an interrupted run keeps it:
    // its workers' answers wait there for the resumed run).
    if !matches!(outcome, Err(EngineError::Cancelled))
        && let Err(e) = run.queue.delete_results(&run.reply_to).await
    {
        tracing::warn!(job = %run.jref, error = %e, "could not delete the run's results queue; it expires on its own");
    }
    if outcome.is_err() {
        match run.storage.abort_incomplete_uploads(&run.run_dir).await {
            Ok(n) if n > 0 => {
                tracing::info!(job = %run.jref, aborted = n, "aborted incomplete uploads")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %run.jref, error = %e, "could not list incomplete uploads")
            }
        }
    }
    outcome
}

struct Run<'a> {
    job: &'a ExportJob,
    jref: JobRef,
    run_id: String,
    run_dir: String,
    run_uri: String,
    manifest_uri: String,
    storage: Arc<dyn Storage>,
    client: Client,
    snapshot: Snapshot,
    generation: u32,
    renewals: u32,
    queue: Arc<dyn ShardQueue>,
    /// This run's results queue.
    reply_to: String,
    progress: Arc<Progress>,
    opts: CoordinatorOptions,
    started_at: chrono::DateTime<Utc>,
}

impl Run<'_> {
    fn window(&self) -> Option<TimeWindow> {
        self.job.spec.time_range.as_ref().map(|t| TimeWindow {
            gte_ms: t.gte.timestamp_millis(),
            lt_ms: t.lt.timestamp_millis(),
        })
    }

    fn target(&self) -> Target {
        match self.snapshot.kind {
            SnapshotKind::Pit => Target::Snapshot(self.snapshot.clone()),
            _ => Target::Indices(self.job.spec.source.indices.clone()),
        }
    }

    /// The user's query (`match_all` when there is none).
    fn user_query(&self) -> serde_json::Value {
        self.job
            .spec
            .source
            .query
            .clone()
            .unwrap_or_else(|| serde_json::json!({"match_all": {}}))
    }

    /// The job's query restricted to its time window.
    fn full_query(&self) -> serde_json::Value {
        let user = self.user_query();
        match (self.window(), &self.job.spec.time_range) {
            (Some(w), Some(tr)) => serde_json::json!({"bool": {"filter": [
                user,
                {"range": {tr.field.clone(): {"gte": w.gte_ms, "lt": w.lt_ms, "format": "epoch_millis"}}}
            ]}}),
            _ => user,
        }
    }

    async fn make_plan(&self, expected: u64) -> Result<Plan, EngineError> {
        let spec = &self.job.spec;
        let shards = match (self.window(), &spec.time_range) {
            (Some(window), Some(tr)) => {
                let partition_by = spec.output.partition_by;
                let interval_ms = spillway_plan::choose_interval(window, partition_by);
                let user = self.user_query();
                let buckets = self
                    .client
                    .date_histogram(&self.target(), &user, &tr.field, window, interval_ms)
                    .await?;
                let input = spillway_plan::HistogramInput {
                    window,
                    interval_ms,
                    buckets,
                };
                spillway_plan::plan_time(&input, &spec.sharding, partition_by)
            }
            _ => spillway_plan::plan_slices(expected, &spec.sharding),
        };
        let shards = if self.walks_shards() {
            self.walk_shards(&shards).await?
        } else {
            shards
        };
        if let Some(w) = self.window() {
            spillway_plan::validate_plan(w, &shards).map_err(|e| {
                EngineError::Internal(format!("the planner produced an invalid plan: {e}"))
            })?;
        }
        Ok(Plan {
            version: PLAN_VERSION,
            job: self.jref.clone(),
            run_id: self.run_id.clone(),
            created_at: Utc::now(),
            time_field: spec.time_range.as_ref().map(|t| t.field.clone()),
            expected_docs: expected,
            shards,
        })
    }

    /// Whether the plan reads one index shard at a time: a PIT without `_shard_doc` and no
    /// `tiebreakerField`, where the alternative is sorting on `_id` (fielddata for every
    /// `_id` of the indices, refused outright where `indices.id_field_data.enabled` is off).
    fn walks_shards(&self) -> bool {
        let caps = &self.client.info().capabilities;
        self.snapshot.kind == SnapshotKind::Pit
            && !caps.shard_doc
            && caps.pit_slicing
            && self.job.spec.source.tiebreaker_field.is_none()
    }

    /// The time (or slice) plan re-cut into index shards: the windows stay, each index with
    /// documents in a window gets its shards (see `spillway_plan::plan_shard_walk`).
    async fn walk_shards(&self, plan: &[ShardSpec]) -> Result<Vec<ShardSpec>, EngineError> {
        let spec = &self.job.spec;
        let shards_of = self.client.index_shards(&spec.source.indices).await?;
        let windows = spillway_plan::plan_windows(plan);
        let only_windows: Vec<_> = windows.iter().map(|(w, _)| *w).collect();
        let user = self.user_query();
        let counts = self
            .client
            .index_counts(
                &self.target(),
                &user,
                spec.time_range.as_ref().map(|t| t.field.as_str()),
                &only_windows,
                shards_of.len(),
            )
            .await?;
        let walked = spillway_plan::plan_shard_walk(&windows, &counts, &shards_of, &spec.sharding)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        tracing::info!(job = %self.jref, indices = shards_of.len(), shards = walked.len(), "no _shard_doc on this cluster: reading one index shard at a time in _doc order");
        Ok(walked)
    }

    fn task(&self, shard: &ShardSpec, attempt: u32) -> ShardTask {
        let info = self.client.info();
        ShardTask {
            version: MESSAGE_VERSION,
            job: self.jref.clone(),
            run_id: self.run_id.clone(),
            snapshot: SnapshotRef {
                pit_id: match self.snapshot.kind {
                    SnapshotKind::Pit => self.snapshot.id.clone(),
                    _ => String::new(),
                },
                flavor: info.flavor,
                version: info.version_label(),
                generation: self.generation,
            },
            spec: self.job.spec.clone(),
            shard: shard.clone(),
            attempt,
            reply_to: self.reply_to.clone(),
        }
    }

    async fn renew_snapshot(&mut self, why: &str) -> Result<(), EngineError> {
        let spec = &self.job.spec;
        if spec.on_snapshot_loss == OnSnapshotLoss::Fail {
            return Err(EngineError::SnapshotLost(format!(
                "{why}; the job fails because spec.onSnapshotLoss is Fail (set it to Renew to re-open the snapshot and re-run unfinished shards, or raise source.keepAlive)"
            )));
        }
        let _ = self.client.close_snapshot(&self.snapshot).await;
        self.snapshot = self
            .client
            .open_snapshot(&spec.source.indices, &spec.source.keep_alive)
            .await?;
        self.generation = self.generation.wrapping_add(1);
        self.renewals += 1;
        tracing::warn!(job = %self.jref, generation = self.generation, "snapshot lost ({why}); opened a new one and re-running unfinished shards");
        Ok(())
    }

    async fn drive(&mut self, cancel: &CancellationToken) -> Result<JobReport, EngineError> {
        let spec = &self.job.spec;
        let mut expected = self
            .client
            .count(&self.target(), &self.full_query())
            .await?;
        let plan = match commit::read_plan(self.storage.as_ref(), &self.run_dir).await? {
            Some(p) => p,
            None => {
                let p = self.make_plan(expected).await?;
                commit::write_plan(self.storage.as_ref(), &self.run_dir, &p).await?;
                p
            }
        };
        let plan_ids: HashSet<&str> = plan.shards.iter().map(|s| s.id.as_str()).collect();
        let mut done: HashMap<String, ShardMarker> =
            commit::read_markers(self.storage.as_ref(), &self.run_dir)
                .await?
                .into_iter()
                .filter(|m| plan_ids.contains(m.shard_id.as_str()))
                .map(|m| (m.shard_id.clone(), m))
                .collect();
        let resumed = done.len() as u64;
        let p = &self.progress;
        p.shards_total.store(plan.shards.len() as u64, Relaxed);
        p.shards_done.store(resumed, Relaxed);
        p.shards_skipped.store(resumed, Relaxed);
        p.docs_expected.store(expected, Relaxed);
        p.docs_exported
            .store(done.values().map(|m| m.docs).sum(), Relaxed);

        let max_in_flight = spec.parallelism.max_concurrent_shards.max(1) as usize;
        let by_id: HashMap<String, ShardSpec> = plan
            .shards
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        let mut pending: VecDeque<String> = plan
            .shards
            .iter()
            .filter(|s| !done.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect();
        // Shards published under the current snapshot generation and not yet answered.
        let mut in_flight: HashSet<String> = HashSet::new();
        // The latest error reported for each shard, quoted when the shard is finally given up.
        let mut last_error: HashMap<String, String> = HashMap::new();
        // Shards given up on. The run goes on with the others so that a re-run only redoes
        // these, unless so many fail that the cluster or the destination is likely broken.
        let mut failed: Vec<EngineError> = Vec::new();
        let mut results = self.queue.consume_results(&self.reply_to).await?;
        let keep_alive_ms = parse_duration_ms(&spec.source.keep_alive).unwrap_or(600_000);
        let mut keep_alive = tokio::time::interval(Duration::from_millis(
            (keep_alive_ms / 3).clamp(1_000, 300_000),
        ));
        keep_alive.tick().await;

        loop {
            while in_flight.len() < max_in_flight && failed.len() < FAIL_FAST_AFTER {
                let Some(id) = pending.pop_front() else {
                    break;
                };
                self.queue.publish_task(&self.task(&by_id[&id], 1)).await?;
                self.progress.shards_published.fetch_add(1, Relaxed);
                in_flight.insert(id);
            }
            if in_flight.is_empty() && (pending.is_empty() || failed.len() >= FAIL_FAST_AFTER) {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                _ = keep_alive.tick(), if self.snapshot.kind == SnapshotKind::Pit => {
                    if let Err(e) = self.client.keep_alive(&self.snapshot).await {
                        if e.is_snapshot_lost() {
                            self.renew_snapshot(&format!("keep-alive found the snapshot gone: {e}")).await?;
                            expected = self.client.count(&self.target(), &self.full_query()).await?;
                            self.progress.docs_expected.store(expected, Relaxed);
                            for id in in_flight.drain() {
                                pending.push_front(id);
                            }
                        } else {
                            tracing::warn!(job = %self.jref, error = %e, "snapshot keep-alive failed; will try again");
                        }
                    } else {
                        self.progress.keep_alives.fetch_add(1, Relaxed);
                    }
                }
                r = results.next() => {
                    let Some(r) = r else { return Err(EngineError::Internal("the result queue closed".into())) };
                    let d = r?;
                    let res = d.message.clone();
                    d.ack().await?;
                    if res.run_id != self.run_id || res.job.uid != self.jref.uid {
                        tracing::warn!(job = %self.jref, other = %res.job, "dropped a result of another run that reached this run's queue");
                        continue;
                    }
                    if res.snapshot_generation != self.generation || !in_flight.contains(&res.shard_id) {
                        continue; // stale: an older snapshot, or a shard already answered
                    }
                    match res.outcome {
                        ShardOutcome::Completed { marker } => {
                            in_flight.remove(&res.shard_id);
                            self.progress.shards_done.fetch_add(1, Relaxed);
                            if self.opts.count_docs_on_completion {
                                self.progress.add_docs(marker.docs);
                                self.progress.add_bytes(marker.bytes);
                            }
                            done.insert(marker.shard_id.clone(), marker);
                        }
                        ShardOutcome::Failed { error, snapshot_lost: true, .. } => {
                            self.renew_snapshot(&error).await?;
                            expected = self.client.count(&self.target(), &self.full_query()).await?;
                            self.progress.docs_expected.store(expected, Relaxed);
                            for id in in_flight.drain() {
                                pending.push_front(id);
                            }
                        }
                        ShardOutcome::Failed { error, will_retry: true, .. } => {
                            self.progress.retries.fetch_add(1, Relaxed);
                            tracing::info!(job = %self.jref, shard = %res.shard_id, attempt = res.attempt, %error, "shard attempt failed; a worker retries it");
                            last_error.insert(res.shard_id, error);
                        }
                        ShardOutcome::Failed { error, .. } => {
                            tracing::error!(job = %self.jref, shard = %res.shard_id, attempt = res.attempt, %error, "shard failed; no attempts left");
                            in_flight.remove(&res.shard_id);
                            failed.push(EngineError::ShardFailed {
                                shard: res.shard_id,
                                attempts: res.attempt,
                                error,
                                others: 0,
                            });
                        }
                        ShardOutcome::DeadLettered { reason } => {
                            let detail = match (reason.as_str(), last_error.get(&res.shard_id)) {
                                ("delivery_limit", _) => "it was delivered more often than the queue's delivery limit: workers stopped while exporting it each time (crash or out of memory on this shard?)".to_string(),
                                (_, Some(e)) => format!("{reason}; last error: {e}"),
                                _ => reason,
                            };
                            tracing::error!(job = %self.jref, shard = %res.shard_id, %detail, "shard was dead-lettered");
                            in_flight.remove(&res.shard_id);
                            failed.push(EngineError::DeadLettered { shard: res.shard_id, detail, others: 0 });
                        }
                    }
                }
            }
        }
        if !failed.is_empty() {
            let others = failed.len() - 1;
            let mut first = failed.swap_remove(0);
            if let EngineError::ShardFailed { others: o, .. }
            | EngineError::DeadLettered { others: o, .. } = &mut first
            {
                *o = others;
            }
            return Err(first);
        }

        // Guarantee 4: the files hold exactly what the snapshot holds.
        let exported: u64 = done.values().map(|m| m.docs).sum();
        if exported != expected {
            return Err(EngineError::CountMismatch {
                expected,
                got: exported,
            });
        }
        // Every shard is committed, so any upload still open under the run is an orphan of a
        // worker that died mid-shard (its shard was redone elsewhere): abort them.
        match self.storage.abort_incomplete_uploads(&self.run_dir).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(job = %self.jref, aborted = n, "aborted uploads left by stopped workers")
            }
            Err(e) => {
                tracing::warn!(job = %self.jref, error = %e, "could not list incomplete uploads")
            }
        }
        let mut files = Vec::new();
        let mut bytes = 0;
        for s in &plan.shards {
            let m = &done[&s.id];
            bytes += m.bytes;
            files.extend(m.files.iter().cloned());
        }
        let mapping = self.client.mapping(&spec.source.indices).await?;
        let schema = DocSchema::from_mapping(&serde_json::json!({ "properties": mapping }))?;
        let info = self.client.info();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            job: self.jref.clone(),
            run_id: self.run_id.clone(),
            format: spec.output.format,
            compression: spec.output.compression,
            source: ManifestSource {
                url: redact_url(&spec.source.url),
                indices: spec.source.indices.clone(),
                flavor: info.flavor,
                version: info.version_label(),
            },
            started_at: self.started_at,
            completed_at: Utc::now(),
            shards: plan.shards.len() as u64,
            expected_documents: expected,
            documents: exported,
            bytes,
            files,
            schema: if spec.output.format == spillway_api::Format::Ndjson {
                Vec::new()
            } else {
                schema.manifest_columns()
            },
        };
        commit::write_manifest(self.storage.as_ref(), &self.run_dir, &manifest).await?;
        commit::write_success(self.storage.as_ref(), &self.run_dir).await?;
        Ok(JobReport {
            job: self.jref.clone(),
            run_id: self.run_id.clone(),
            run_uri: self.run_uri.clone(),
            manifest_uri: self.manifest_uri.clone(),
            documents: exported,
            bytes,
            shards: plan.shards.len() as u64,
            resumed_shards: resumed,
            already_complete: false,
            snapshot_renewals: self.renewals,
        })
    }
}
