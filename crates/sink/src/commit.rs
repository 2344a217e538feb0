//! The records a run leaves beside its data, as pretty JSON under the keys of
//! `spillway_api::layout`: the plan (written first), one marker per committed shard, then the
//! manifest and `_SUCCESS` (written last, so their presence means the run is complete).

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spillway_api::manifest::Manifest;
use spillway_api::{Plan, ShardMarker, layout};

use crate::error::SinkError;
use crate::storage::Storage;

fn join(run_dir: &str, rel: &str) -> String {
    let run_dir = run_dir.trim_matches('/');
    if run_dir.is_empty() {
        rel.to_string()
    } else {
        format!("{run_dir}/{rel}")
    }
}

fn to_json<T: Serialize>(what: &'static str, key: &str, v: &T) -> Result<Bytes, SinkError> {
    let mut s = serde_json::to_vec_pretty(v).map_err(|source| SinkError::Json {
        what,
        key: key.to_string(),
        source,
    })?;
    s.push(b'\n');
    Ok(Bytes::from(s))
}

async fn read_json<T: DeserializeOwned>(
    storage: &dyn Storage,
    what: &'static str,
    key: &str,
) -> Result<Option<T>, SinkError> {
    match storage.get(key).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| SinkError::Json {
                what,
                key: key.to_string(),
                source,
            }),
    }
}

/// Key of a shard's marker.
pub fn marker_key(run_dir: &str, shard_id: &str) -> String {
    join(run_dir, &layout::marker(shard_id))
}

/// Writes (or rewrites with identical content) the marker of a committed shard.
pub async fn write_marker(
    storage: &dyn Storage,
    run_dir: &str,
    marker: &ShardMarker,
) -> Result<(), SinkError> {
    let key = marker_key(run_dir, &marker.shard_id);
    storage
        .put(&key, to_json("shard marker", &key, marker)?)
        .await
}

/// Every shard marker of the run, sorted by shard id.
pub async fn read_markers(
    storage: &dyn Storage,
    run_dir: &str,
) -> Result<Vec<ShardMarker>, SinkError> {
    let dir = join(run_dir, layout::MARKER_DIR);
    let mut out = Vec::new();
    for obj in storage.list(&dir).await? {
        if !obj.key.ends_with(".json") {
            continue;
        }
        if let Some(m) = read_json::<ShardMarker>(storage, "shard marker", &obj.key).await? {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    Ok(out)
}

pub async fn write_plan(
    storage: &dyn Storage,
    run_dir: &str,
    plan: &Plan,
) -> Result<(), SinkError> {
    let key = join(run_dir, layout::PLAN);
    storage.put(&key, to_json("plan", &key, plan)?).await
}

pub async fn read_plan(storage: &dyn Storage, run_dir: &str) -> Result<Option<Plan>, SinkError> {
    read_json(storage, "plan", &join(run_dir, layout::PLAN)).await
}

pub async fn write_manifest(
    storage: &dyn Storage,
    run_dir: &str,
    manifest: &Manifest,
) -> Result<(), SinkError> {
    let key = join(run_dir, layout::MANIFEST);
    storage
        .put(&key, to_json("manifest", &key, manifest)?)
        .await
}

pub async fn read_manifest(
    storage: &dyn Storage,
    run_dir: &str,
) -> Result<Option<Manifest>, SinkError> {
    read_json(storage, "manifest", &join(run_dir, layout::MANIFEST)).await
}

/// Writes the empty `_SUCCESS` object; call it after [`write_manifest`].
pub async fn write_success(storage: &dyn Storage, run_dir: &str) -> Result<(), SinkError> {
    storage
        .put(&join(run_dir, layout::SUCCESS), Bytes::new())
        .await
}

pub async fn is_successful(storage: &dyn Storage, run_dir: &str) -> Result<bool, SinkError> {
    Ok(storage
        .get(&join(run_dir, layout::SUCCESS))
        .await?
        .is_some())
}
