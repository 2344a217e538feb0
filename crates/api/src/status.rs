//! The observed state of an `ExportJob`, written by the coordinator and read by people
//! (`kubectl get ej`), GitOps tools (Argo CD health checks, Flux kstatus) and `spillway run`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lifecycle phase of an export.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Phase {
    /// Accepted, not planned yet.
    #[default]
    Pending,
    /// Opening the snapshot and sizing shards.
    Planning,
    /// Shards are being exported.
    Running,
    /// `spec.suspend` is set: no new shards are published.
    Suspended,
    /// Every shard exported, counts verified, `_manifest.json` and `_SUCCESS` written.
    Succeeded,
    /// Stopped for good; `lastError` and the `Failed` condition say why.
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Planning => "Planning",
            Phase::Running => "Running",
            Phase::Suspended => "Suspended",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// A standard Kubernetes condition (`metav1.Condition` shape).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Complete`, `Failed`, `Stalled`, `Suspended`, `SnapshotRenewed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, machine readable.
    pub reason: String,
    /// Human readable; never contains credentials.
    #[serde(default)]
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    pub total: u64,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DocumentCounts {
    /// Documents the snapshot holds for the job's query (counted under the PIT).
    pub expected: u64,
    /// Documents written to committed output files.
    pub exported: u64,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Identifies this run's output directory `<job>/<runId>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default)]
    pub shards: ShardCounts,
    #[serde(default)]
    pub documents: DocumentCounts,
    /// Bytes written to committed output files.
    #[serde(default)]
    pub bytes: u64,
    /// `"<succeeded>/<total>"` shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// URI of `_manifest.json` once the job succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_uri: Option<String>,
    /// How many times the snapshot was re-opened under `onSnapshotLoss: Renew`.
    #[serde(default)]
    pub snapshot_renewals: u32,
    /// The last error, sanitised (no credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ExportJobStatus {
    /// Sets `type_` to the given state, moving `lastTransitionTime` only when `status` changes.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) {
        let status_str = if status { "True" } else { "False" };
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status_str {
                    c.last_transition_time = now;
                }
                c.status = status_str.to_string();
                c.reason = reason.to_string();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_string(),
                status: status_str.to_string(),
                reason: reason.to_string(),
                message,
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
