//! The cluster client: connect and detect the flavor, read mappings, open, keep alive and
//! close the point-in-time snapshot (or fall back to scroll), count and histogram under it,
//! and hand out [`ShardReader`]s.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use spillway_api::{Flavor, SnapshotRef, TimeWindow};

use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::info::{ClusterInfo, detect};
use crate::reader::{ShardReader, ShardRequest};
use crate::transport::{
    ClientStats, Response, Transport, Verdict, classify_failure, parse_error, parse_failure,
};

/// What a request reads: a snapshot, or the live indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Snapshot(Snapshot),
    Indices(Vec<String>),
}

/// How a snapshot is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A point in time shared by every shard.
    Pit,
    /// No PIT on this cluster: every shard reader opens its own (sliced) scroll, so each
    /// slice is its own snapshot, taken when the reader starts.
    None,
}

/// A consistent view of the job's indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The PIT id. Elasticsearch may return a new id with any response: always use the
    /// latest one (see [`ShardReader::snapshot_id`], [`Client::renew`]). Empty for
    /// [`SnapshotKind::None`].
    pub id: String,
    pub keep_alive: String,
    pub kind: SnapshotKind,
    /// The indices (names, patterns, aliases) the snapshot was opened on.
    pub indices: Vec<String>,
}

impl Snapshot {
    /// The snapshot a shard task refers to: a PIT, or scroll when the id is empty.
    pub fn from_ref(r: &SnapshotRef, keep_alive: &str, indices: &[String]) -> Snapshot {
        Snapshot {
            id: r.pit_id.clone(),
            keep_alive: keep_alive.to_string(),
            kind: if r.pit_id.is_empty() {
                SnapshotKind::None
            } else {
                SnapshotKind::Pit
            },
            indices: indices.to_vec(),
        }
    }

    /// The reference shard tasks carry.
    pub fn to_ref(&self, info: &ClusterInfo, generation: u32) -> SnapshotRef {
        SnapshotRef {
            pit_id: match self.kind {
                SnapshotKind::Pit => self.id.clone(),
                SnapshotKind::None => String::new(),
            },
            flavor: info.flavor,
            version: info.version_label(),
            generation,
        }
    }
}

struct Inner {
    transport: Transport,
    info: ClusterInfo,
}

/// A client for one cluster; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.transport.display())
            .field("flavor", &self.inner.info.flavor)
            .field("version", &self.inner.info.version)
            .finish()
    }
}

/// Index names for a URL path: each name percent-encoded (keeping `*`), joined by `,`.
pub(crate) fn index_path(indices: &[String]) -> Result<String, SourceError> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'*')
        .remove(b'+');
    if indices.is_empty() || indices.iter().any(|i| i.trim().is_empty()) {
        return Err(SourceError::Config(
            "no index given: list at least one index, pattern or alias in source.indices".into(),
        ));
    }
    Ok(indices
        .iter()
        .map(|i| utf8_percent_encode(i.trim(), SET).to_string())
        .collect::<Vec<_>>()
        .join(","))
}

pub(crate) fn json_body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a JSON value serialises"))
}

impl Client {
    /// Connects: `GET /` for flavor, version and capabilities.
    pub async fn connect(config: SourceConfig) -> Result<Client, SourceError> {
        let transport = Transport::new(&config)?;
        let url = transport.url_for("/");
        let aoss = transport.is_aoss();
        let flavor_override = config.flavor_override;
        let info = transport
            .execute(Method::GET, "/", None, |resp: Response| {
                if aoss && resp.status == 404 {
                    // Serverless collections do not serve `GET /`.
                    return Verdict::Done(ClusterInfo::serverless());
                }
                if !resp.is_success() {
                    return classify_failure(&url, &resp);
                }
                let product = resp
                    .headers
                    .get("x-elastic-product")
                    .and_then(|v| v.to_str().ok());
                match detect(&resp.body, product, flavor_override) {
                    Ok(i) => Verdict::Done(i),
                    Err(crate::info::DetectError::NotJson(e)) => {
                        match serde_json::from_slice::<serde::de::IgnoredAny>(&resp.body) {
                            Err(pe) if !pe.is_data() => parse_failure(&url, &pe),
                            _ => Verdict::Fail(SourceError::Decode {
                                url: url.clone(),
                                detail: e,
                            }),
                        }
                    }
                    Err(e) => Verdict::Fail(SourceError::Decode {
                        url: url.clone(),
                        detail: e.to_string(),
                    }),
                }
            })
            .await?;
        let info = match (aoss, config.flavor_override) {
            (true, _) => ClusterInfo {
                serverless: true,
                capabilities: crate::info::Capabilities {
                    scroll: false,
                    ..info.capabilities
                },
                ..info
            },
            (false, Some(f)) => info.with_flavor(f),
            (false, None) => info,
        };
        tracing::info!(
            url = %transport.display(),
            flavor = ?info.flavor,
            version = %info.version_label(),
            pit = info.capabilities.pit,
            shard_doc = info.capabilities.shard_doc,
            "connected to the source cluster"
        );
        Ok(Client {
            inner: Arc::new(Inner { transport, info }),
        })
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.inner.info
    }

    pub fn stats(&self) -> &ClientStats {
        &self.inner.transport.stats
    }

    /// The cluster URL as printed in messages (never holds credentials).
    pub fn url(&self) -> &str {
        self.inner.transport.display()
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Sends a request whose 2xx body is JSON `T`; everything else goes through the
    /// standard failure classification.
    pub(crate) async fn request_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, SourceError> {
        let url = self.transport().url_for(path);
        self.transport()
            .execute(method, path, body, |resp| {
                if !resp.is_success() {
                    return classify_failure(&url, &resp);
                }
                match serde_json::from_slice::<T>(&resp.body) {
                    Ok(v) => Verdict::Done(v),
                    Err(e) => parse_failure(&url, &e),
                }
            })
            .await
    }

    /// The merged `properties` of every index matching `indices`.
    pub async fn mapping(&self, indices: &[String]) -> Result<Value, SourceError> {
        let path = format!("/{}/_mapping", index_path(indices)?);
        let all: Map<String, Value> = self.request_json(Method::GET, &path, None).await?;
        let mut merged = Map::new();
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        for name in names {
            let mappings = &all[name]["mappings"];
            let props = mappings.get("properties").or_else(|| {
                // Pre-7 mappings carry a type level: {"mappings":{"_doc":{"properties":…}}}.
                mappings
                    .as_object()
                    .and_then(|m| m.values().find_map(|t| t.get("properties")))
            });
            if let Some(Value::Object(p)) = props {
                merge_properties(&mut merged, p);
            }
        }
        Ok(Value::Object(merged))
    }

    /// Opens the job's snapshot: a PIT where the cluster has one, else
    /// [`SnapshotKind::None`] (each reader opens a sliced scroll).
    pub async fn open_snapshot(
        &self,
        indices: &[String],
        keep_alive: &str,
    ) -> Result<Snapshot, SourceError> {
        let targets = index_path(indices)?;
        let none = || Snapshot {
            id: String::new(),
            keep_alive: keep_alive.to_string(),
            kind: SnapshotKind::None,
            indices: indices.to_vec(),
        };
        let info = self.info();
        if !info.capabilities.pit {
            if !info.capabilities.scroll {
                return Err(SourceError::Unsupported(format!(
                    "{} supports neither point in time nor scroll; it cannot be exported consistently",
                    self.url()
                )));
            }
            return Ok(none());
        }
        let ka =
            percent_encoding::utf8_percent_encode(keep_alive, percent_encoding::NON_ALPHANUMERIC);
        let (path, key) = match info.flavor {
            Flavor::Opensearch => (
                format!("/{targets}/_search/point_in_time?keep_alive={ka}"),
                "pit_id",
            ),
            Flavor::Elasticsearch => (format!("/{targets}/_pit?keep_alive={ka}"), "id"),
        };
        let url = self.transport().url_for(&path);
        let compat = info.compatibility_mode;
        let opened = self
            .transport()
            .execute(Method::POST, &path, None, |resp| {
                if !resp.is_success() {
                    // OpenSearch in compatibility mode may be older than 2.4 after all:
                    // no PIT endpoint means scroll.
                    if compat && matches!(resp.status, 400 | 404 | 405) {
                        let cause = parse_error(&resp.body);
                        let kind = cause.as_ref().and_then(|c| c.kind.as_deref()).unwrap_or("");
                        if kind != "index_not_found_exception"
                            && kind != "action_request_validation_exception"
                            && kind != "illegal_argument_exception"
                        {
                            return Verdict::Done(None);
                        }
                    }
                    return classify_failure(&url, &resp);
                }
                match serde_json::from_slice::<Value>(&resp.body) {
                    Ok(v) => match v.get(key).and_then(Value::as_str) {
                        Some(id) => Verdict::Done(Some(id.to_string())),
                        None => Verdict::Fail(SourceError::Decode {
                            url: url.clone(),
                            detail: format!("the point-in-time response has no `{key}`"),
                        }),
                    },
                    Err(e) => parse_failure(&url, &e),
                }
            })
            .await?;
        Ok(match opened {
            Some(id) => Snapshot {
                id,
                keep_alive: keep_alive.to_string(),
                kind: SnapshotKind::Pit,
                indices: indices.to_vec(),
            },
            None => none(),
        })
    }

    /// Closes the snapshot. A PIT that is already gone is fine.
    pub async fn close_snapshot(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        if snapshot.kind != SnapshotKind::Pit || snapshot.id.is_empty() {
            return Ok(());
        }
        let (path, body) = match self.info().flavor {
            Flavor::Opensearch => ("/_search/point_in_time", json!({"pit_id": [snapshot.id]})),
            Flavor::Elasticsearch => ("/_pit", json!({"id": snapshot.id})),
        };
        let url = self.transport().url_for(path);
        self.transport()
            .execute(Method::DELETE, path, Some(json_body(&body)), |resp| {
                if resp.is_success() || resp.status == 404 {
                    Verdict::Done(())
                } else {
                    classify_failure(&url, &resp)
                }
            })
            .await
    }

    /// Extends the PIT's life with a cheap size-0 search. [`SourceError::SnapshotLost`] if
    /// it is gone.
    pub async fn keep_alive(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        self.touch(snapshot).await.map(|_| ())
    }

    /// Like [`Client::keep_alive`], and adopts the PIT id the cluster returned (Elasticsearch
    /// may rotate it). Returns whether the id changed.
    pub async fn renew(&self, snapshot: &mut Snapshot) -> Result<bool, SourceError> {
        match self.touch(snapshot).await? {
            Some(id) if id != snapshot.id => {
                snapshot.id = id;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn touch(&self, snapshot: &Snapshot) -> Result<Option<String>, SourceError> {
        if snapshot.kind != SnapshotKind::Pit {
            return Ok(None);
        }
        let body = json!({
            "size": 0,
            "track_total_hits": false,
            "query": {"match_none": {}},
            "pit": {"id": snapshot.id, "keep_alive": snapshot.keep_alive},
        });
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            pit_id: Option<String>,
        }
        let r: R = self
            .request_json(Method::POST, "/_search", Some(json_body(&body)))
            .await?;
        Ok(r.pit_id)
    }

    /// Search path and body additions for a target: with a PIT the path has no index.
    pub(crate) fn search_target(
        &self,
        target: &Target,
    ) -> Result<(String, Option<Value>), SourceError> {
        match target {
            Target::Snapshot(s) if s.kind == SnapshotKind::Pit => Ok((
                "/_search".to_string(),
                Some(json!({"id": s.id, "keep_alive": s.keep_alive})),
            )),
            Target::Snapshot(s) => Ok((format!("/{}/_search", index_path(&s.indices)?), None)),
            Target::Indices(i) => Ok((format!("/{}/_search", index_path(i)?), None)),
        }
    }

    /// Documents matching `query` (under the PIT: a size-0 search with
    /// `track_total_hits: true`).
    pub async fn count(&self, target: &Target, query: &Value) -> Result<u64, SourceError> {
        let (path, pit) = self.search_target(target)?;
        let mut body = json!({"size": 0, "track_total_hits": true, "query": query});
        if let Some(pit) = pit {
            body["pit"] = pit;
        }
        let r: SearchTotals = self
            .request_json(Method::POST, &path, Some(json_body(&body)))
            .await?;
        r.exact_total(&self.transport().url_for(&path))
    }

    /// Documents per `fixed_interval_ms` bucket of `field` within `window`: `(bucket start
    /// in epoch ms, count)`, ascending, empty buckets left out. Buckets are aligned to
    /// multiples of the interval from the epoch (UTC), so the first and last may extend past
    /// the window; their counts hold only documents inside it.
    pub async fn date_histogram(
        &self,
        target: &Target,
        query: &Value,
        field: &str,
        window: TimeWindow,
        fixed_interval_ms: i64,
    ) -> Result<Vec<(i64, u64)>, SourceError> {
        if fixed_interval_ms <= 0 {
            return Err(SourceError::Config(format!(
                "histogram interval must be positive, got {fixed_interval_ms} ms"
            )));
        }
        let (path, pit) = self.search_target(target)?;
        let histogram = json!({
            "field": field,
            "fixed_interval": format!("{fixed_interval_ms}ms"),
            "min_doc_count": 1,
        });
        let mut body = json!({
            "size": 0,
            "track_total_hits": false,
            "query": filtered_query(query, Some(field), Some(window)),
            "aggs": {"spillway_histogram": {"date_histogram": histogram}},
        });
        if let Some(pit) = pit {
            body["pit"] = pit;
        }
        #[derive(Deserialize)]
        struct R {
            aggregations: Aggs,
        }
        #[derive(Deserialize)]
        struct Aggs {
            spillway_histogram: Hist,
        }
        #[derive(Deserialize)]
        struct Hist {
            buckets: Vec<Bucket>,
        }
        #[derive(Deserialize)]
        struct Bucket {
            key: f64,
            doc_count: u64,
        }
        let r: R = self
            .request_json(Method::POST, &path, Some(json_body(&body)))
            .await?;
        let mut out: Vec<(i64, u64)> = r
            .aggregations
            .spillway_histogram
            .buckets
            .into_iter()
            .filter(|b| b.doc_count > 0)
            .map(|b| (b.key as i64, b.doc_count))
            .collect();
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// A pager over one shard of the export.
    pub fn read_shard(&self, req: ShardRequest) -> ShardReader {
        ShardReader::new(self.clone(), req)
    }
}

#[derive(Deserialize)]
struct SearchTotals {
    hits: TotalsHits,
}

#[derive(Deserialize)]
struct TotalsHits {
    total: Option<TotalValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TotalValue {
    Int(u64),
    Obj { value: u64, relation: String },
}

impl SearchTotals {
    fn exact_total(&self, url: &str) -> Result<u64, SourceError> {
        match &self.hits.total {
            Some(TotalValue::Int(v)) => Ok(*v),
            Some(TotalValue::Obj { value, relation }) if relation == "eq" => Ok(*value),
            Some(TotalValue::Obj { relation, .. }) => Err(SourceError::Decode {
                url: url.to_string(),
                detail: format!(
                    "hits.total has relation [{relation}] although track_total_hits was true"
                ),
            }),
            None => Err(SourceError::Decode {
                url: url.to_string(),
                detail: "the response has no hits.total".into(),
            }),
        }
    }
}

/// The user query, restricted to `[gte, lt)` of `time_field` when a window is given.
pub(crate) fn filtered_query(
    query: &Value,
    time_field: Option<&str>,
    window: Option<TimeWindow>,
) -> Value {
    let user = if query.is_null() || query.as_object().is_some_and(Map::is_empty) {
        json!({"match_all": {}})
    } else {
        query.clone()
    };
    match (time_field, window) {
        (Some(field), Some(w)) => json!({"bool": {"filter": [
            user,
            {"range": {field: {"gte": w.gte_ms, "lt": w.lt_ms, "format": "epoch_millis"}}}
        ]}}),
        _ => user,
    }
}

/// Merges index mappings' `properties`: objects are merged field by field, the first
/// definition of a leaf wins.
fn merge_properties(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (name, def) in from {
        match into.get_mut(name) {
            None => {
                into.insert(name.clone(), def.clone());
            }
            Some(existing) => {
                if let (Some(Value::Object(a)), Some(Value::Object(b))) = (
                    existing.get_mut("properties").map(|v| &mut *v),
                    def.get("properties"),
                ) {
                    merge_properties(a, b);
                } else if existing.get("properties").is_none()
                    && let Some(Value::Object(b)) = def.get("properties")
                    && existing.get("type").is_none()
                {
                    existing["properties"] = Value::Object(b.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ref_round_trip() {
        let info = crate::info::detect(
            br#"{"version":{"distribution":"opensearch","number":"2.19.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#,
            None,
            None,
        )
        .unwrap();
        let s = Snapshot {
            id: "pit==".into(),
            keep_alive: "10m".into(),
            kind: SnapshotKind::Pit,
            indices: vec!["logs-*".into()],
        };
        let r = s.to_ref(&info, 2);
        assert_eq!(r.pit_id, "pit==");
        assert_eq!(r.version, "2.19.0");
        assert_eq!(r.generation, 2);
        assert_eq!(Snapshot::from_ref(&r, "10m", &s.indices), s);
        let none = Snapshot {
            kind: SnapshotKind::None,
            id: String::new(),
            ..s
        };
        assert_eq!(
            Snapshot::from_ref(&none.to_ref(&info, 0), "10m", &none.indices),
            none
        );
    }

    #[test]
    fn index_paths_are_encoded() {
        assert_eq!(
            index_path(&["logs-*".into(), "a b".into(), "x/y".into()]).unwrap(),
            "logs-*,a%20b,x%2Fy"
        );
        assert!(index_path(&[]).is_err());
    }

    #[test]
    fn query_filtering() {
        let q = filtered_query(
            &json!({"term": {"a": 1}}),
            Some("@timestamp"),
            Some(TimeWindow {
                gte_ms: 10,
                lt_ms: 20,
            }),
        );
        assert_eq!(
            q,
            json!({"bool": {"filter": [{"term": {"a": 1}},
                {"range": {"@timestamp": {"gte": 10, "lt": 20, "format": "epoch_millis"}}}]}})
        );
        assert_eq!(
            filtered_query(&Value::Null, None, None),
            json!({"match_all": {}})
        );
        assert_eq!(
            filtered_query(&json!({}), None, None),
            json!({"match_all": {}})
        );
    }

    #[test]
    fn mapping_merge() {
        let mut m = Map::new();
        let a =
            json!({"ts": {"type": "date"}, "user": {"properties": {"name": {"type": "keyword"}}}});
        let b = json!({"ts": {"type": "long"}, "msg": {"type": "text"},
            "user": {"properties": {"age": {"type": "integer"}}}});
        merge_properties(&mut m, a.as_object().unwrap());
        merge_properties(&mut m, b.as_object().unwrap());
        assert_eq!(
            Value::Object(m),
            json!({"ts": {"type": "date"},
                "user": {"properties": {"name": {"type": "keyword"}, "age": {"type": "integer"}}},
                "msg": {"type": "text"}})
        );
    }
}
