//! The shard executor: one `ShardTask` in, one committed file and marker out.
//!
//! fetch (PIT + search_after pages) → encode (page by page) → upload (fixed-size parts) →
//! verify (exported == the shard's `hits.total`) → commit (complete upload, then marker).
//! Memory is bounded by one page plus the encoder's row group plus one upload part. A failure
//! at any step aborts the upload, so nothing half-written is ever visible under a final key.
//! A re-delivered shard whose marker already exists returns that marker without re-reading.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use parking_lot::Mutex;
use spillway_api::{
    DocRef, MESSAGE_VERSION, ShardMarker, ShardOutcome, ShardResult, ShardTask, layout,
};
use spillway_sink::encode::{DocSchema, encoder_for};
use spillway_sink::storage::Storage;
use spillway_sink::{FileWriter, commit};
use spillway_source::{Client, ShardRequest, Snapshot, SnapshotKind, Target};
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::connect::{destination_prefix, open_storage, source_config};
use crate::progress::Progress;
use crate::secrets::SecretResolver;

/// What a worker keeps per job: the client, the storage and the output schema.
#[derive(Clone)]
struct JobResources {
    client: Client,
    storage: Arc<dyn Storage>,
    schema: Arc<DocSchema>,
}

/// Executes shard tasks; one per worker process, shared by its concurrent slots.
pub struct Executor {
    secrets: Arc<dyn SecretResolver>,
    progress: Option<Arc<Progress>>,
    jobs: Mutex<HashMap<String, JobResources>>,
}

impl Executor {
    pub fn new(secrets: Arc<dyn SecretResolver>, progress: Option<Arc<Progress>>) -> Self {
        Executor {
            secrets,
            progress,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Runs a task to a result message (never panics on task errors).
    pub async fn execute(&self, task: &ShardTask, cancel: &CancellationToken) -> ShardResult {
        let result = self.try_execute(task, cancel).await;
        if let (Some(p), Some(res)) = (&self.progress, self.jobs.lock().get(&Self::job_key(task))) {
            p.record_client(&Self::job_key(task), res.client.stats().snapshot());
        }
        let outcome = match result {
            Ok(marker) => ShardOutcome::Completed { marker },
            Err(e) => {
                tracing::warn!(job = %task.job, shard = %task.shard.id, attempt = task.attempt, error = %e, "shard failed");
                ShardOutcome::Failed {
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                    snapshot_lost: e.is_snapshot_lost(),
                    will_retry: false,
                }
            }
        };
        self.result_of(task, outcome)
    }

    /// The result message for `task` with `outcome`.
    pub fn result_of(&self, task: &ShardTask, outcome: ShardOutcome) -> ShardResult {
        ShardResult {
            version: MESSAGE_VERSION,
            job: task.job.clone(),
            run_id: task.run_id.clone(),
            shard_id: task.shard.id.clone(),
            attempt: task.attempt,
            snapshot_generation: task.snapshot.generation,
            outcome,
        }
    }

    /// The counters this executor updates, if any.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    fn job_key(task: &ShardTask) -> String {
        format!("{}/{}", task.job.uid, task.run_id)
    }

    async fn resources(&self, task: &ShardTask) -> Result<JobResources, EngineError> {
        let key = Self::job_key(task);
        if let Some(r) = self.jobs.lock().get(&key) {
            return Ok(r.clone());
        }
        let secrets = self
            .secrets
            .clone()
            .in_namespace(task.job.namespace.as_deref());
        let client = Client::connect(source_config(&task.spec, secrets.as_ref()).await?).await?;
        let storage = open_storage(&task.spec.output, secrets.as_ref()).await?;
        let mapping = client.mapping(&task.spec.source.indices).await?;
        let schema = Arc::new(DocSchema::from_mapping(
            &serde_json::json!({ "properties": mapping }),
        )?);
        let res = JobResources {
            client,
            storage,
            schema,
        };
        let mut jobs = self.jobs.lock();
        if jobs.len() >= 32 {
            jobs.clear();
        }
        jobs.insert(key, res.clone());
        Ok(res)
    }

    async fn try_execute(
        &self,
        task: &ShardTask,
        cancel: &CancellationToken,
    ) -> Result<ShardMarker, EngineError> {
        let res = self.resources(task).await?;
        let spec = &task.spec;
        let run_dir = layout::run_dir(
            destination_prefix(&spec.output.destination),
            &task.job.name,
            &task.run_id,
        );
        let marker_key = format!("{run_dir}/{}", layout::marker(&task.shard.id));
        if let Some(existing) = res.storage.get(&marker_key).await?
            && let Ok(m) = serde_json::from_slice::<ShardMarker>(&existing)
        {
            return Ok(m);
        }
        let rel_key = layout::data_file(&task.shard, spec.output.format, spec.output.compression);
        let encoder = encoder_for(&spec.output, &res.schema)?;
        let target = if task.snapshot.pit_id.is_empty() {
            Target::Indices(spec.source.indices.clone())
        } else {
            Target::Snapshot(Snapshot {
                id: task.snapshot.pit_id.clone(),
                keep_alive: spec.source.keep_alive.clone(),
                kind: SnapshotKind::Pit,
                indices: spec.source.indices.clone(),
            })
        };
        let fields = spec.source.fields.clone().unwrap_or_default();
        let mut reader = res.client.read_shard(ShardRequest {
            target,
            query: spec
                .source
                .query
                .clone()
                .unwrap_or_else(|| serde_json::json!({"match_all": {}})),
            time_field: spec.time_range.as_ref().map(|t| t.field.clone()),
            window: task.shard.window,
            slice: task.shard.slice,
            page_size: spec.sharding.page_size,
            source_includes: fields.includes,
            source_excludes: fields.excludes,
            tiebreaker_field: spec.source.tiebreaker_field.clone(),
            index: task.shard.index.clone(),
        });

        let mut file =
            FileWriter::create(res.storage.as_ref(), &run_dir, &rel_key, encoder).await?;
        let mut counted: u64 = 0;
        let streamed: Result<(), EngineError> = async {
            while let Some(page) = reader.next_page().await? {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let docs: Vec<DocRef<'_>> = page.docs().collect();
                file.write_page(&docs).await?;
                counted += docs.len() as u64;
                if let Some(p) = &self.progress {
                    p.add_docs(docs.len() as u64);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            self.undo_progress(counted);
            let _ = file.abort().await;
            return Err(e);
        }
        let expected = reader.expected().unwrap_or(counted);
        let exported = reader.exported();
        if exported != expected {
            self.undo_progress(counted);
            let _ = file.abort().await;
            return Err(EngineError::Incomplete {
                shard: task.shard.id.clone(),
                expected,
                got: exported,
            });
        }
        let written = match file.finish().await {
            Ok(w) => w,
            Err(e) => {
                self.undo_progress(counted);
                return Err(e.into());
            }
        };
        let bytes = written.file.bytes;
        let marker = ShardMarker {
            shard_id: task.shard.id.clone(),
            docs: exported,
            expected_docs: expected,
            bytes,
            files: vec![written.file],
            attempt: task.attempt,
            completed_at: Utc::now(),
        };
        commit::write_marker(res.storage.as_ref(), &run_dir, &marker).await?;
        if let Some(p) = &self.progress {
            p.add_bytes(bytes);
        }
        Ok(marker)
    }

    fn undo_progress(&self, docs: u64) {
        if let Some(p) = &self.progress {
            p.sub_docs(docs);
        }
    }
}
