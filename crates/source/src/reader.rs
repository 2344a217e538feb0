//! The shard reader: pages through one shard of an export (a time window and/or a slice)
//! and proves it read everything.
//!
//! * With a PIT: `search_after` paging on a unique total order (`_shard_doc` where the
//!   cluster has it; `_doc` where the shard is one index shard of a shard-walking plan;
//!   else the tiebreaker field or `_id`), no index in the path, the latest
//!   `pit_id` of every response used for the next page.
//! * Without a PIT ([`SnapshotKind::None`] or [`Target::Indices`]): a (sliced) scroll sorted
//!   by `_doc`, cleared at the end and (best effort) on drop. Each scroll is its own
//!   snapshot, taken when the reader starts.
//! * Live indices on a cluster without scroll (Amazon OpenSearch Serverless), no slice:
//!   `search_after` on the indices with the tiebreaker sort.
//!
//! The first page asks `track_total_hits: true`; paging stops at an empty page or when
//! the count is reached, and a mismatch is [`SourceError::Truncated`].

use bytes::{Bytes, BytesMut};
use http::Method;
use serde_json::{Value, json};
use spillway_api::{Flavor, SliceRef, TimeWindow};

use crate::client::{Client, SnapshotKind, Target, filtered_query, index_path};
use crate::error::{RetryReason, SourceError};
use crate::page::{Page, PageError};
use crate::transport::{Transient, Verdict, classify_failure};

/// One shard of an export.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardRequest {
    pub target: Target,
    /// The user's query (`{"match_all":{}}` when there is none).
    pub query: Value,
    pub time_field: Option<String>,
    pub window: Option<TimeWindow>,
    pub slice: Option<SliceRef>,
    pub page_size: u32,
    pub source_includes: Vec<String>,
    pub source_excludes: Vec<String>,
    /// A unique field to sort on where `_shard_doc` is not available (default `_id`).
    pub tiebreaker_field: Option<String>,
    /// The one index this shard reads (a shard-walking plan): a `term` filter on `_index`,
    /// and with the slice naming one of its shards, `_doc` is a unique page order.
    pub index: Option<String>,
}

enum Mode {
    /// PIT + search_after.
    Pit { id: String, keep_alive: String },
    /// search_after on live indices.
    Live { path: String },
    /// Sliced scroll.
    Scroll {
        start_path: String,
        keep_alive: String,
        scroll_id: Option<String>,
    },
}

/// Pages through one shard. See the module docs.
pub struct ShardReader {
    client: Client,
    req: ShardRequest,
    mode: Result<Mode, Option<SourceError>>,
    sort: Value,
    search_after: Option<Value>,
    expected: Option<u64>,
    exported: u64,
    started: bool,
    done: bool,
    /// Receives every page's body: the previous page is dropped before the next request, so
    /// each response reuses this allocation.
    recv: BytesMut,
}

impl std::fmt::Debug for ShardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReader")
            .field("window", &self.req.window)
            .field("slice", &self.req.slice)
            .field("expected", &self.expected)
            .field("exported", &self.exported)
            .field("done", &self.done)
            .finish()
    }
}

impl ShardReader {
    pub(crate) fn new(client: Client, req: ShardRequest) -> ShardReader {
        let info = client.info().clone();
        let tiebreaker = req.tiebreaker_field.clone().unwrap_or_else(|| "_id".into());
        let slice = req.slice.filter(|s| s.max > 1);
        let mode = (|| -> Result<Mode, SourceError> {
            if req.page_size == 0 {
                return Err(SourceError::Config("pageSize must be at least 1".into()));
            }
            if req.window.is_some() && req.time_field.is_none() {
                return Err(SourceError::Config(
                    "a shard with a time window needs the time field (timeRange.field)".into(),
                ));
            }
            let scroll = |indices: &[String], keep_alive: &str| -> Result<Mode, SourceError> {
                if !info.capabilities.scroll {
                    return Err(SourceError::Unsupported(format!(
                        "{} has no scroll API (Amazon OpenSearch Serverless): export it with a point-in-time snapshot",
                        client.url()
                    )));
                }
                let ka = percent_encoding::utf8_percent_encode(
                    keep_alive,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                Ok(Mode::Scroll {
                    start_path: format!("/{}/_search?scroll={ka}", index_path(indices)?),
                    keep_alive: keep_alive.to_string(),
                    scroll_id: None,
                })
            };
            match &req.target {
                Target::Snapshot(s) if s.kind == SnapshotKind::Pit => {
                    if slice.is_some() && !info.capabilities.pit_slicing {
                        return Err(SourceError::Unsupported(format!(
                            "{} cannot slice a point-in-time search; plan the export without slices",
                            client.url()
                        )));
                    }
                    Ok(Mode::Pit {
                        id: s.id.clone(),
                        keep_alive: s.keep_alive.clone(),
                    })
                }
                Target::Snapshot(s) => scroll(&s.indices, &s.keep_alive),
                // Live indices: a scroll is a snapshot of its own, so prefer it.
                Target::Indices(i) if info.capabilities.scroll => scroll(i, "5m"),
                Target::Indices(_) if slice.is_some() => Err(SourceError::Unsupported(format!(
                    "{} can slice only under a point-in-time snapshot; open one first",
                    client.url()
                ))),
                Target::Indices(i) => Ok(Mode::Live {
                    path: format!("/{}/_search", index_path(i)?),
                }),
            }
        })();
        let sort = match &mode {
            Ok(Mode::Scroll { .. }) => json!(["_doc"]),
            // OpenSearch's `_shard_doc` holds the shard number within its index, not the
            // shard's position in the whole search (as Elasticsearch's does): two indices'
            // shards of the same number tie, and `search_after` would skip documents at a
            // page boundary. `_index` first makes the order total (no fielddata: the index
            // name is a constant per shard).
            Ok(Mode::Pit { .. }) if info.capabilities.shard_doc => match info.flavor {
                Flavor::Opensearch => json!([{"_index": "asc"}, {"_shard_doc": "asc"}]),
                Flavor::Elasticsearch => json!([{"_shard_doc": "asc"}]),
            },
            // One shard of one index (a shard-walking plan): `_doc` is unique within it and
            // costs nothing, where `_id` would load fielddata.
            Ok(Mode::Pit { .. }) if req.index.is_some() && req.tiebreaker_field.is_none() => {
                json!([{"_doc": "asc"}])
            }
            _ => json!([{ tiebreaker: "asc" }]),
        };
        ShardReader {
            client,
            req,
            mode: mode.map_err(Some),
            sort,
            search_after: None,
            expected: None,
            exported: 0,
            started: false,
            done: false,
            recv: BytesMut::new(),
        }
    }

    /// Documents the cluster counted for this shard (known after the first page).
    pub fn expected(&self) -> Option<u64> {
        self.expected
    }

    /// Documents yielded so far.
    pub fn exported(&self) -> u64 {
        self.exported
    }

    /// Whether paging has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The latest PIT id a response returned (Elasticsearch may rotate it): adopt it for
    /// the snapshot's later requests.
    pub fn snapshot_id(&self) -> Option<&str> {
        match &self.mode {
            Ok(Mode::Pit { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// The sort the reader pages on (`[{"_shard_doc":"asc"}]`, `[{"_doc":"asc"}]` for one
    /// index shard, `[{"_id":"asc"}]`, `["_doc"]` for a scroll).
    pub fn sort(&self) -> &Value {
        &self.sort
    }

    /// The request body of the next page (for PIT and live modes; scroll continuations
    /// send only the scroll id).
    fn search_body(&self) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("size".into(), json!(self.req.page_size));
        let query = filtered_query(
            &self.req.query,
            self.req.time_field.as_deref(),
            self.req.window,
        );
        let query = match &self.req.index {
            Some(index) => json!({"bool": {"filter": [query, {"term": {"_index": index}}]}}),
            None => query,
        };
        body.insert("query".into(), query);
        if let Ok(Mode::Pit { id, keep_alive }) = &self.mode {
            body.insert("pit".into(), json!({"id": id, "keep_alive": keep_alive}));
        }
        if let Some(s) = self.req.slice.filter(|s| s.max > 1) {
            body.insert("slice".into(), json!({"id": s.id, "max": s.max}));
        }
        body.insert("sort".into(), self.sort.clone());
        if let Some(after) = &self.search_after {
            body.insert("search_after".into(), after.clone());
        }
        body.insert("track_total_hits".into(), json!(!self.started));
        if !self.req.source_includes.is_empty() || !self.req.source_excludes.is_empty() {
            let mut src = serde_json::Map::new();
            if !self.req.source_includes.is_empty() {
                src.insert("includes".into(), json!(self.req.source_includes));
            }
            if !self.req.source_excludes.is_empty() {
                src.insert("excludes".into(), json!(self.req.source_excludes));
            }
            body.insert("_source".into(), Value::Object(src));
        }
        Value::Object(body)
    }

    /// The next page, or `None` when the shard is complete.
    pub async fn next_page(&mut self) -> Result<Option<Page>, SourceError> {
        if self.done {
            return Ok(None);
        }
        if let Err(e) = &mut self.mode {
            self.done = true;
            return Err(e
                .take()
                .unwrap_or_else(|| SourceError::Config("the shard request is invalid".into())));
        }
        if self.started && self.expected == Some(self.exported) {
            self.finish().await;
            return Ok(None);
        }
        let (method, path, body) = match &self.mode {
            Ok(Mode::Pit { .. }) => (Method::POST, "/_search".to_string(), self.search_body()),
            Ok(Mode::Live { path }) => (Method::POST, path.clone(), self.search_body()),
            Ok(Mode::Scroll {
                start_path,
                keep_alive,
                scroll_id,
            }) => match scroll_id {
                None => {
                    let mut body = self.search_body();
                    if let Some(o) = body.as_object_mut() {
                        o.remove("search_after");
                    }
                    (Method::POST, start_path.clone(), body)
                }
                Some(id) => (
                    Method::POST,
                    "/_search/scroll".to_string(),
                    json!({"scroll": keep_alive, "scroll_id": id}),
                ),
            },
            Err(_) => unreachable!("handled above"),
        };
        let body = Bytes::from(serde_json::to_vec(&body).expect("a JSON value serialises"));
        let page = match self.fetch(method, &path, body).await {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                self.finish().await;
                return Err(e);
            }
        };
        match self.accept(page) {
            Ok(Some(p)) => Ok(Some(p)),
            Ok(None) => {
                self.finish().await;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                self.finish().await;
                Err(e)
            }
        }
    }

    /// Books a page: totals, ids, cursor. `Ok(None)` at the end.
    fn accept(&mut self, page: Page) -> Result<Option<Page>, SourceError> {
        let url = self.client.url().to_string();
        if !self.started {
            self.started = true;
            let total = page.total().ok_or_else(|| SourceError::Decode {
                url: url.clone(),
                detail: "the first page has no hits.total although track_total_hits was true"
                    .into(),
            })?;
            if !total.exact {
                return Err(SourceError::Decode {
                    url,
                    detail: format!(
                        "hits.total is a lower bound ({}) although track_total_hits was true",
                        total.value
                    ),
                });
            }
            self.expected = Some(total.value);
        }
        match &mut self.mode {
            Ok(Mode::Pit { id, .. }) => {
                if let Some(new) = page.pit_id()
                    && new != id
                {
                    tracing::debug!("the cluster rotated the point-in-time id");
                    *id = new.to_string();
                }
            }
            Ok(Mode::Scroll { scroll_id, .. }) => {
                if let Some(new) = page.scroll_id() {
                    *scroll_id = Some(new.to_string());
                }
            }
            _ => {}
        }
        let expected = self.expected.unwrap_or(0);
        if page.is_empty() {
            self.done = true;
            if self.exported != expected {
                return Err(SourceError::Truncated {
                    expected,
                    got: self.exported,
                });
            }
            return Ok(None);
        }
        self.exported += page.len() as u64;
        if self.exported > expected {
            return Err(SourceError::Truncated {
                expected,
                got: self.exported,
            });
        }
        if !matches!(self.mode, Ok(Mode::Scroll { .. })) {
            let sort = page.last_sort().ok_or_else(|| SourceError::Decode {
                url: url.clone(),
                detail: "hits carry no `sort` values to continue from".into(),
            })?;
            let v: Value = serde_json::from_str(sort.get()).map_err(|e| SourceError::Decode {
                url,
                detail: format!("unreadable sort values: {e}"),
            })?;
            // A null sort value cannot be continued from: real OpenSearch 2.19 and 3.9 answer a
            // `search_after` holding null with HTTP 500 (null_pointer_exception), and a field
            // missing from two documents is no tiebreaker anyway.
            if self.exported < expected
                && v.as_array().is_some_and(|a| a.iter().any(Value::is_null))
            {
                self.done = true;
                return Err(SourceError::Config(format!(
                    "a document has no value for the page order {}: sort values {v}; source.tiebreakerField must name a field with a unique value in every document (unset it to use the cluster's own order)",
                    self.sort
                )));
            }
            self.search_after = Some(v);
        }
        Ok(Some(page))
    }

    async fn fetch(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Page, SourceError> {
        let transport = self.client.transport();
        let url = transport.url_for(path.split('?').next().unwrap_or(path));
        transport
            .execute_into(method, path, Some(body), &mut self.recv, |resp| {
                if !resp.is_success() {
                    return classify_failure(&url, &resp);
                }
                match Page::parse(resp.body) {
                    Ok(p) => Verdict::Done(p),
                    Err(PageError::Syntax(e)) => Verdict::Retry(Transient::new(
                        RetryReason::Connection,
                        Some(resp.status),
                        format!("the response is cut off or not JSON: {e}"),
                    )),
                    Err(PageError::Shape(detail)) => Verdict::Fail(SourceError::Decode {
                        url: url.clone(),
                        detail,
                    }),
                    Err(PageError::TimedOut) => Verdict::Retry(Transient::new(
                        RetryReason::Timeout,
                        Some(resp.status),
                        "the search timed out with partial results",
                    )),
                    Err(PageError::ShardFailures(f)) => {
                        let has = |t: &str| f.types.iter().any(|x| x == t);
                        let detail = format!("{} shard(s) failed: {}", f.failed, f.first_reason);
                        if has("search_context_missing_exception") {
                            Verdict::Fail(SourceError::SnapshotLost {
                                reason: f.first_reason.clone(),
                            })
                        } else if has("rejected_execution_exception")
                            || has("es_rejected_execution_exception")
                        {
                            Verdict::Retry(Transient::new(RetryReason::Rejected, Some(200), detail))
                        } else if has("circuit_breaking_exception") {
                            Verdict::Retry(Transient::new(RetryReason::Breaker, Some(200), detail))
                        } else if f.types.iter().any(|t| {
                            matches!(
                                t.as_str(),
                                "node_disconnected_exception"
                                    | "node_not_connected_exception"
                                    | "connect_transport_exception"
                                    | "no_shard_available_action_exception"
                                    | "node_closed_exception"
                                    | "receive_timeout_transport_exception"
                            )
                        }) {
                            Verdict::Retry(Transient::new(
                                RetryReason::Unavailable5xx,
                                Some(200),
                                detail,
                            ))
                        } else {
                            Verdict::Fail(SourceError::Http {
                                url: url.clone(),
                                status: 200,
                                reason: detail,
                            })
                        }
                    }
                }
            })
            .await
    }

    /// Ends paging; clears a scroll.
    async fn finish(&mut self) {
        self.done = true;
        if let Ok(Mode::Scroll { scroll_id, .. }) = &mut self.mode
            && let Some(id) = scroll_id.take()
        {
            clear_scroll(&self.client, id).await;
        }
    }

    /// The pages as a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Page, SourceError>> {
        futures::stream::unfold(self, |mut r| async move {
            match r.next_page().await {
                Ok(Some(p)) => Some((Ok(p), r)),
                Ok(None) => None,
                // After an error the reader is done: the stream ends after yielding it.
                Err(e) => Some((Err(e), r)),
            }
        })
    }
}

async fn clear_scroll(client: &Client, id: String) {
    let body = Bytes::from(
        serde_json::to_vec(&json!({"scroll_id": [id]})).expect("a JSON value serialises"),
    );
    let r = client
        .transport()
        .execute(Method::DELETE, "/_search/scroll", Some(body), |resp| {
            if resp.is_success() || resp.status == 404 {
                Verdict::Done(())
            } else {
                Verdict::Fail(SourceError::Http {
                    url: String::new(),
                    status: resp.status,
                    reason: String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
                        .into_owned(),
                })
            }
        })
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "could not clear a scroll; it expires on its own");
    }
}

impl Drop for ShardReader {
    fn drop(&mut self) {
        if let Ok(Mode::Scroll { scroll_id, .. }) = &mut self.mode
            && let Some(id) = scroll_id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let client = self.client.clone();
            handle.spawn(async move { clear_scroll(&client, id).await });
        }
    }
}
