//! HTTP transport and REST dispatch: hyper HTTP/1.1 (optionally over rustls), request parsing,
//! authentication, fault injection for search-type endpoints, routing of every supported path
//! to the cluster, and the background refresh/reaper task.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult, Error};
use crate::faults::{Decision, Faults};
use crate::search::SearchFaults;
use crate::{Config, Flavor, RunningSim};

type Body = BoxBody<Bytes, std::io::Error>;

/// A handler's answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Close the connection after part of the body.
    pub drop_connection: bool,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Self::raw(status, serde_json::to_vec(v).unwrap_or_default())
    }

    fn raw(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            body: Bytes::from(body),
            content_type: "application/json; charset=UTF-8",
            headers: Vec::new(),
            drop_connection: false,
        }
    }

    fn text(status: u16, body: String) -> Self {
        Self {
            status,
            body: Bytes::from(body),
            content_type: "text/plain; charset=UTF-8",
            headers: Vec::new(),
            drop_connection: false,
        }
    }

    fn from_error(e: ApiError) -> Self {
        let mut r = match &e.body {
            Value::String(s) => Self::text(e.status, s.clone()),
            other => Self::json(e.status, other),
        };
        r.headers = e.headers;
        r
    }
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(q) = q {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(decode(k), decode(v));
        }
    }
    out
}

fn parse_body(body: &[u8]) -> ApiResult<Option<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::new(
            400,
            "parsing_exception",
            format!("Failed to parse request body: {e}"),
        )
    })
}

/// Endpoint kind of a request (for counters, auth and fault eligibility).
pub fn classify(method: &Method, segs: &[String]) -> &'static str {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] => "info",
        ["_searchsim", ..] => "searchsim",
        ["_search", "scroll", ..] if *method == Method::DELETE => "clear_scroll",
        ["_search", "scroll", ..] => "scroll",
        ["_search", "point_in_time", ..] => "pit_close",
        ["_pit"] => "pit_close",
        [_, "_search", "point_in_time"] | [_, "_pit"] => "pit_open",
        ["_search"] | [_, "_search"] => "search",
        ["_msearch"] | [_, "_msearch"] => "msearch",
        ["_count"] | [_, "_count"] => "count",
        ["_bulk"] | [_, "_bulk"] => "bulk",
        [_, "_doc", ..] | [_, "_create", _] | [_, "_update", _] => "doc",
        ["_refresh"] | [_, "_refresh"] => "refresh",
        ["_cat", ..] => "cat",
        ["_cluster", ..] => "cluster",
        _ => "admin",
    }
}

const FAULT_KINDS: &[&str] = &[
    "search",
    "scroll",
    "clear_scroll",
    "pit_open",
    "pit_close",
    "msearch",
    "count",
];

fn is_write(kind: &str, method: &Method) -> bool {
    match kind {
        "search" | "scroll" | "clear_scroll" | "pit_open" | "pit_close" | "msearch" | "count"
        | "info" | "cat" | "refresh" => false,
        "bulk" => true,
        "doc" => *method != Method::GET && *method != Method::HEAD,
        _ => *method != Method::GET && *method != Method::HEAD,
    }
}

fn action_name(kind: &str, write: bool) -> &'static str {
    match kind {
        "search" | "scroll" | "pit_open" | "msearch" => "indices:data/read/search",
        "count" => "indices:data/read/search",
        "bulk" => "indices:data/write/bulk",
        "doc" if write => "indices:data/write/index",
        "doc" => "indices:data/read/get",
        _ if write => "indices:admin/create",
        _ => "indices:monitor/stats",
    }
}

fn rejection(flavor: Flavor) -> ApiError {
    let (ty, exec) = match flavor {
        Flavor::OpenSearch => (
            "rejected_execution_exception",
            "QueueResizingOpenSearchThreadPoolExecutor",
        ),
        Flavor::Elasticsearch => (
            "es_rejected_execution_exception",
            "TaskExecutionTimeTrackingEsThreadPoolExecutor",
        ),
    };
    let reason = format!(
        "rejected execution of TimedRunnable{{original=ShardSearchRequest, duration=0ms}} on {exec}[name = searchsim-node-1/search, queue capacity = 1000, task execution EWMA = 1ms, total task execution time = 5s][Running, pool size = 13, active threads = 13, queued tasks = 1000, completed tasks = 123456]"
    );
    ApiError::shard_failure(429, ty, reason, None)
}

fn unavailable(status: u16) -> ApiError {
    if status == 502 {
        return ApiError { status, body: Value::String("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n".into()), headers: Vec::new() };
    }
    ApiError::shard_failure(
        503,
        "no_shard_available_action_exception",
        "No shard available for [searchsim]: all copies of the shard are temporarily unavailable",
        None,
    )
}

fn breaker(wanted: u64, limit: u64) -> ApiError {
    let mut extra = serde_json::Map::new();
    extra.insert("bytes_wanted".into(), json!(wanted));
    extra.insert("bytes_limit".into(), json!(limit));
    extra.insert("durability".into(), json!("TRANSIENT"));
    ApiError::with_extra(
        429,
        "circuit_breaking_exception",
        format!(
            "[parent] Data too large, data for [<http_request>] would be [{wanted}/{wanted}b], which is larger than the limit of [{limit}/{limit}b], real usage: [{wanted}/{wanted}b], new bytes reserved: [{wanted}/{wanted}b], usages [request=0/0b, fielddata=0/0b, in_flight_requests={wanted}/{wanted}b]"
        ),
        extra,
    )
}

fn no_handler(method: &Method, path: &str) -> ApiError {
    ApiError {
        status: 400,
        body: json!({"error": format!("no handler found for uri [{path}] and method [{method}]"), "status": 400}),
        headers: Vec::new(),
    }
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        Some(Value::String(s)) => Some(s.split(',').map(str::to_string).collect()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

impl Cluster {
    /// Handles one request end to end (auth, faults, dispatch). Public for in-process use.
    pub async fn handle(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        auth_header: Option<&str>,
        body: Bytes,
    ) -> Reply {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        let params = parse_query(query);
        let kind = classify(&method, &segs);
        self.count_request(kind);
        let flavor = self.flavor();
        let mut reply = self
            .handle_inner(&method, path, &segs, &params, kind, auth_header, &body)
            .await;
        if flavor == Flavor::Elasticsearch && version_at_least(self.version(), 7, 14) {
            reply
                .headers
                .push(("X-elastic-product".into(), "Elasticsearch".into()));
        }
        if method == Method::HEAD {
            reply.body = Bytes::new();
        }
        reply
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle_inner(
        &self,
        method: &Method,
        path: &str,
        segs: &[String],
        params: &HashMap<String, String>,
        kind: &'static str,
        auth_header: Option<&str>,
        body: &Bytes,
    ) -> Reply {
        let flavor = self.flavor();
        if kind != "searchsim"
            && let Some(auth) = &self.config().auth
        {
            let principal = match auth.authenticate(auth_header, flavor, path) {
                Ok(p) => p,
                Err(e) => return Reply::from_error(e),
            };
            let write = is_write(kind, method);
            let index_part: Vec<&str> = segs
                .first()
                .filter(|s| !s.starts_with('_'))
                .map(|s| vec![s.as_str()])
                .unwrap_or_default();
            if !principal.allowed(write, &index_part) {
                return Reply::from_error(crate::auth::forbidden(
                    flavor,
                    action_name(kind, write),
                    &principal.name,
                ));
            }
        }
        let decision = if FAULT_KINDS.contains(&kind) {
            self.inner.faults.lock().decide(path)
        } else {
            Decision::default()
        };
        if decision.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(decision.delay_ms)).await;
        }
        if decision.reject {
            return Reply::from_error(rejection(flavor));
        }
        if let Some(status) = decision.unavailable {
            return Reply::from_error(unavailable(status));
        }
        if FAULT_KINDS.contains(&kind)
            && let Some(poison) = self.faults().poison
            && !poison.is_empty()
            && self.faults().path_matches(path)
            && body.windows(poison.len()).any(|w| w == poison.as_bytes())
        {
            self.count_fault("poison");
            return Reply::from_error(ApiError::shard_failure(
                500,
                "illegal_state_exception",
                "searchsim poison fault: this request always fails",
                None,
            ));
        }
        let sf = SearchFaults {
            short_page: decision.short_page,
            rotate_pit: decision.rotate_pit,
        };
        // Dispatch is synchronous and CPU-bound (collecting and sorting a snapshot, rendering a
        // page) and waits on the state lock: run it on the blocking pool so the runtime's
        // worker threads stay free to drive sockets and timers (latency faults, other
        // connections). This matters most in-process, where the embedding program's own
        // tasks share those workers.
        let dispatched = {
            let c = self.clone();
            let (method, path, segs, params, body) = (
                method.clone(),
                path.to_string(),
                segs.to_vec(),
                params.clone(),
                body.clone(),
            );
            tokio::task::spawn_blocking(move || {
                c.dispatch(&method, &path, &segs, &params, &body, sf)
            })
            .await
        };
        let mut reply = match dispatched {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Reply::from_error(e),
            Err(e) => Reply::from_error(ApiError::new(
                500,
                "exception",
                format!("searchsim failed while handling [{method} {path}]: {e}"),
            )),
        };
        if FAULT_KINDS.contains(&kind)
            && let Some(limit) = self.faults().breaker_bytes
            && reply.body.len() as u64 > limit
        {
            self.count_fault("breaker");
            return Reply::from_error(breaker(reply.body.len() as u64, limit));
        }
        reply.drop_connection = decision.drop_connection;
        reply
    }

    fn dispatch(
        &self,
        method: &Method,
        path: &str,
        segs: &[String],
        params: &HashMap<String, String>,
        raw: &Bytes,
        sf: SearchFaults,
    ) -> ApiResult<Reply> {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let flavor = self.flavor();
        // OpenSearch has PIT since 2.4; Elasticsearch since 7.10
        let has_pit = match flavor {
            Flavor::OpenSearch => version_at_least(self.version(), 2, 4),
            Flavor::Elasticsearch => version_at_least(self.version(), 7, 10),
        };
        let os_pit = flavor == Flavor::OpenSearch && has_pit;
        let es_pit = flavor == Flavor::Elasticsearch && has_pit;
        let m = method.clone();
        let body = || parse_body(raw);
        let ok = |v: Value| Ok(Reply::json(200, &v));
        match (m, s.as_slice()) {
            (Method::GET | Method::HEAD, []) => ok(self.info()),
            // simulator control plane
            (Method::GET, ["_searchsim", "faults"]) => {
                ok(serde_json::to_value(self.faults()).unwrap_or_default())
            }
            (Method::POST | Method::PUT, ["_searchsim", "faults"]) => {
                let f: Faults = match body()? {
                    Some(v) => serde_json::from_value(v)
                        .map_err(|e| ApiError::illegal(format!("invalid faults: {e}")))?,
                    None => Faults::default(),
                };
                self.set_faults(f).map_err(ApiError::illegal)?;
                ok(serde_json::to_value(self.faults()).unwrap_or_default())
            }
            (Method::GET, ["_searchsim", "stats"]) => ok(self.stats()),
            (Method::POST, ["_searchsim", "reset"]) => {
                self.reset();
                ok(json!({"acknowledged": true}))
            }
            (Method::POST, ["_searchsim", "pits", "_expire"]) => {
                let b = body()?;
                let id = b
                    .as_ref()
                    .and_then(|v| v.get("pit_id").or_else(|| v.get("id")))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                ok(json!({"expired": self.expire_pits(id.as_deref())}))
            }
            // search
            (Method::GET | Method::POST, ["_search"]) => {
                let (st, b) = self.search(None, params, body()?.as_ref(), sf)?;
                Ok(Reply::raw(st, b))
            }
            (Method::GET | Method::POST, [idx, "_search"]) => {
                let (st, b) = self.search(Some(idx), params, body()?.as_ref(), sf)?;
                Ok(Reply::raw(st, b))
            }
            (Method::GET | Method::POST, ["_search", "scroll", rest @ ..]) => {
                let b = body()?;
                let id = b
                    .as_ref()
                    .and_then(|v| v.get("scroll_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| rest.first().map(|s| s.to_string()))
                    .or_else(|| params.get("scroll_id").cloned())
                    .ok_or_else(|| ApiError::validation(&["scrollId is missing".into()]))?;
                let ka = b
                    .as_ref()
                    .and_then(|v| v.get("scroll"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| params.get("scroll").cloned());
                let as_int = params.get("rest_total_hits_as_int").map(|v| v != "false");
                let (st, bytes) = self.scroll(&id, ka.as_deref(), as_int, sf)?;
                Ok(Reply::raw(st, bytes))
            }
            (Method::DELETE, ["_search", "scroll", "_all"]) => self.clear_scroll_reply(None),
            (Method::DELETE, ["_search", "scroll", ids]) => {
                self.clear_scroll_reply(Some(ids.split(',').map(str::to_string).collect()))
            }
            (Method::DELETE, ["_search", "scroll"]) => {
                let b = body()?;
                let ids = string_list(b.as_ref().and_then(|v| v.get("scroll_id"))).or_else(|| {
                    params
                        .get("scroll_id")
                        .map(|s| s.split(',').map(str::to_string).collect())
                });
                match ids {
                    Some(ids) if ids.iter().any(|i| i == "_all") => self.clear_scroll_reply(None),
                    Some(ids) => self.clear_scroll_reply(Some(ids)),
                    None => Err(ApiError::validation(&["no scroll ids specified".into()])),
                }
            }
            // OpenSearch PIT
            (Method::POST, [idx, "_search", "point_in_time"]) if os_pit => {
                ok(self.open_pit(idx, params)?)
            }
            (Method::GET, ["_search", "point_in_time", "_all"]) if os_pit => ok(self.list_pits()),
            (Method::DELETE, ["_search", "point_in_time", "_all"]) if os_pit => {
                let ids = self.close_all_pits();
                ok(
                    json!({"pits": ids.iter().map(|i| json!({"successful": true, "pit_id": i})).collect::<Vec<_>>()}),
                )
            }
            (Method::DELETE, ["_search", "point_in_time"]) if os_pit => {
                let b = body()?;
                let ids = string_list(b.as_ref().and_then(|v| v.get("pit_id"))).unwrap_or_default();
                if ids.is_empty() {
                    return Err(ApiError::validation(&["no pit ids specified".into()]));
                }
                let res = self.close_pits(&ids)?;
                ok(
                    json!({"pits": res.iter().map(|(i, _)| json!({"successful": true, "pit_id": i})).collect::<Vec<_>>()}),
                )
            }
            // Elasticsearch PIT
            (Method::POST, [idx, "_pit"]) if es_pit => ok(self.open_pit(idx, params)?),
            (Method::DELETE, ["_pit"]) if es_pit => {
                let b = body()?;
                let id = b
                    .as_ref()
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let Some(id) = id else {
                    return Err(ApiError::validation(&[
                        "point in time id is not provided".into()
                    ]));
                };
                let res = self.close_pits(&[id])?;
                let freed = res.iter().filter(|(_, f)| *f).count();
                let old_semantics = !version_at_least(self.version(), 8, 8);
                let status = if freed == 0 && old_semantics {
                    404
                } else {
                    200
                };
                Ok(Reply::json(
                    status,
                    &json!({"succeeded": true, "num_freed": freed}),
                ))
            }
            (Method::GET | Method::POST, ["_msearch"]) => self.msearch(None, params, raw),
            (Method::GET | Method::POST, [idx, "_msearch"]) => self.msearch(Some(idx), params, raw),
            (Method::GET | Method::POST, ["_count"]) => {
                ok(self.count(None, params, body()?.as_ref())?)
            }
            (Method::GET | Method::POST, [idx, "_count"]) => {
                ok(self.count(Some(idx), params, body()?.as_ref())?)
            }
            // documents
            (Method::POST | Method::PUT, ["_bulk"]) => ok(self.bulk(None, params, raw)?),
            (Method::POST | Method::PUT, [idx, "_bulk"]) => {
                ok(self.bulk(Some(idx), params, raw)?)
            }
            (Method::POST, [idx, "_doc"]) => {
                let (st, v) = self.index_api(idx, None, false, params, raw)?;
                Ok(Reply::json(st, &v))
            }
            (Method::PUT | Method::POST, [idx, "_doc", id]) => {
                let (st, v) = self.index_api(idx, Some(id), false, params, raw)?;
                Ok(Reply::json(st, &v))
            }
            (Method::PUT | Method::POST, [idx, "_create", id]) => {
                let (st, v) = self.index_api(idx, Some(id), true, params, raw)?;
                Ok(Reply::json(st, &v))
            }
            (Method::GET | Method::HEAD, [idx, "_doc", id]) => {
                let (st, v) = self.get_api(idx, id, params)?;
                Ok(Reply::json(st, &v))
            }
            (Method::GET, [idx, "_source", id]) => {
                let (st, v) = self.get_api(idx, id, params)?;
                if st != 200 {
                    return Err(ApiError::new(
                        404,
                        "resource_not_found_exception",
                        format!("Document not found [{idx}]/[{id}]"),
                    ));
                }
                ok(v.get("_source").cloned().unwrap_or(Value::Null))
            }
            (Method::DELETE, [idx, "_doc", id]) => {
                let (st, v) = self.delete_api(idx, id, params)?;
                Ok(Reply::json(st, &v))
            }
            (Method::POST, [idx, "_update", id]) => {
                let b = body()?.unwrap_or(Value::Null);
                let (st, v) = self.update_api(idx, id, params, &b)?;
                Ok(Reply::json(st, &v))
            }
            (Method::GET | Method::POST, ["_refresh"]) => ok(self.refresh_api(None, params)?),
            (Method::GET | Method::POST, [idx, "_refresh"]) => {
                ok(self.refresh_api(Some(idx), params)?)
            }
            // cluster and cat
            (Method::GET, ["_cluster", "health"]) => ok(self.health_api(None)?),
            (Method::GET, ["_cluster", "health", idx]) => ok(self.health_api(Some(idx))?),
            (Method::PUT, ["_cluster", "settings"]) => {
                ok(self.put_cluster_settings_api(&body()?.unwrap_or(Value::Null))?)
            }
            (Method::GET, ["_cluster", "settings"]) => ok(self.get_cluster_settings_api(params)),
            (Method::GET, ["_cat", "indices"]) => self.cat_reply(None, params),
            (Method::GET, ["_cat", "indices", idx]) => self.cat_reply(Some(idx), params),
            (Method::POST, ["_aliases"]) => {
                ok(self.update_aliases_api(&body()?.unwrap_or(Value::Null))?)
            }
            (Method::GET, ["_alias"]) | (Method::GET, ["_aliases"]) => {
                self.aliases_reply(None, None)
            }
            (Method::GET, ["_alias", name]) => self.aliases_reply(None, Some(name)),
            (Method::GET, [idx, "_alias"]) | (Method::GET, [idx, "_aliases"]) => {
                self.aliases_reply(Some(idx), None)
            }
            (Method::GET, [idx, "_alias", name]) => self.aliases_reply(Some(idx), Some(name)),
            (Method::PUT | Method::POST, [idx, "_alias" | "_aliases", name]) => {
                ok(self.put_alias_api(idx, name, body()?.as_ref())?)
            }
            (Method::DELETE, [idx, "_alias" | "_aliases", name]) => {
                ok(self.delete_alias_api(idx, name)?)
            }
            (Method::GET, ["_mapping"]) => ok(self.get_mapping_api(None, params)?),
            (Method::GET, [idx, "_mapping"]) => ok(self.get_mapping_api(Some(idx), params)?),
            (Method::PUT | Method::POST, [idx, "_mapping"]) => {
                ok(self.put_mapping_api(idx, &body()?.unwrap_or(Value::Null))?)
            }
            (Method::GET, ["_settings"]) => ok(self.get_settings_api(None, params)?),
            (Method::GET, [idx, "_settings"]) => ok(self.get_settings_api(Some(idx), params)?),
            (Method::PUT, ["_settings"]) => {
                ok(self.put_settings_api(None, &body()?.unwrap_or(Value::Null))?)
            }
            (Method::PUT, [idx, "_settings"]) => {
                ok(self.put_settings_api(Some(idx), &body()?.unwrap_or(Value::Null))?)
            }
            // indices
            (Method::PUT, [idx]) if !idx.starts_with('_') => {
                ok(self.create_index_api(idx, body()?.as_ref())?)
            }
            (Method::DELETE, [idx]) if !idx.starts_with('_') || *idx == "_all" => {
                ok(self.delete_index_api(idx, params)?)
            }
            (Method::HEAD, [idx]) if !idx.starts_with('_') => Ok(Reply::raw(
                if self.index_exists(idx) { 200 } else { 404 },
                Vec::new(),
            )),
            (Method::GET, [idx]) if !idx.starts_with('_') => ok(self.get_index_api(idx, params)?),
            (m, _) => Err(no_handler(&m, path)),
        }
    }

    fn clear_scroll_reply(&self, ids: Option<Vec<String>>) -> ApiResult<Reply> {
        let v = self.clear_scroll(ids)?;
        let status = if v["num_freed"].as_u64() == Some(0) {
            404
        } else {
            200
        };
        Ok(Reply::json(status, &v))
    }

    fn cat_reply(&self, idx: Option<&str>, params: &HashMap<String, String>) -> ApiResult<Reply> {
        let (is_json, v, text) = self.cat_indices_api(idx, params)?;
        Ok(if is_json {
            Reply::json(200, &v)
        } else {
            Reply::text(200, text)
        })
    }

    fn aliases_reply(&self, idx: Option<&str>, name: Option<&str>) -> ApiResult<Reply> {
        let (st, v) = self.get_aliases_api(idx, name)?;
        Ok(Reply::json(st, &v))
    }

    fn msearch(
        &self,
        default_index: Option<&str>,
        params: &HashMap<String, String>,
        raw: &[u8],
    ) -> ApiResult<Reply> {
        let started = std::time::Instant::now();
        let lines: Vec<&[u8]> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        if lines.is_empty() {
            return Err(ApiError::validation(&["no requests added".into()]));
        }
        let mut out: Vec<u8> = Vec::new();
        let mut i = 0;
        let mut first = true;
        while i < lines.len() {
            let header: Value = serde_json::from_slice(lines[i])
                .map_err(|e| ApiError::parsing(format!("msearch header: {e}")))?;
            let body: Option<Value> = match lines.get(i + 1) {
                Some(l) => Some(
                    serde_json::from_slice(l)
                        .map_err(|e| ApiError::parsing(format!("msearch body: {e}")))?,
                ),
                None => None,
            };
            i += 2;
            let mut p: HashMap<String, String> = params
                .iter()
                .filter(|(k, _)| k.as_str() != "max_concurrent_searches")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut index = default_index.map(str::to_string);
            if let Some(h) = header.as_object() {
                for (k, v) in h {
                    let val = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    if k == "index" {
                        index = Some(val);
                    } else {
                        p.insert(k.clone(), val);
                    }
                }
            }
            if !first {
                out.push(b',');
            }
            first = false;
            match self.search(index.as_deref(), &p, body.as_ref(), SearchFaults::default()) {
                Ok((st, mut b)) => {
                    b.pop();
                    out.extend_from_slice(&b);
                    out.extend_from_slice(format!(",\"status\":{st}}}").as_bytes());
                }
                Err(e) => out.extend_from_slice(&serde_json::to_vec(&e.body).unwrap_or_default()),
            }
        }
        let mut body = format!(
            "{{\"took\":{},\"responses\":[",
            started.elapsed().as_millis()
        )
        .into_bytes();
        body.extend_from_slice(&out);
        body.extend_from_slice(b"]}");
        Ok(Reply::raw(200, body))
    }
}

fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

fn to_response(reply: Reply) -> Response<Body> {
    let len = reply.body.len();
    let body: Body = if reply.drop_connection && len > 1 {
        let half = reply.body.slice(..len / 2);
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "searchsim fault: connection dropped mid-response",
            )),
        ];
        BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
    } else {
        Full::new(reply.body)
            .map_err(|never: Infallible| match never {})
            .boxed()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    for (k, v) in reply.headers {
        if let (Ok(name), Ok(val)) = (
            http::HeaderName::try_from(k.as_str()),
            HeaderValue::from_str(&v),
        ) {
            h.append(name, val);
        }
    }
    resp
}

/// Verifies an AWS SigV4 signature; on failure, the 403 Amazon OpenSearch Service answers.
fn check_sigv4(cluster: &Cluster, parts: &http::request::Parts, body: &[u8]) -> Result<(), Reply> {
    let keys = &cluster.config().sigv4;
    if parts.headers.get(http::header::AUTHORIZATION).is_none() {
        let action = if parts.method == Method::GET {
            "es:ESHttpGet"
        } else {
            "es:ESHttp"
        };
        return Err(Reply::json(
            403,
            &json!({"Message": format!("User: anonymous is not authorized to perform: {action} because no identity-based policy allows the {action} action")}),
        ));
    }
    let lookup = |id: &str| {
        keys.iter()
            .find(|k| k.access_key_id == id)
            .map(|k| k.secret().to_string())
    };
    match spillway_sigv4::verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
        lookup,
        chrono::Utc::now(),
        chrono::Duration::minutes(15),
    ) {
        Ok(_) => Ok(()),
        Err(spillway_sigv4::VerifyError::SignatureDoesNotMatch) => Err(Reply::json(
            403,
            &json!({"message": "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}),
        )),
        Err(spillway_sigv4::VerifyError::UnknownAccessKey(_)) => Err(Reply::json(
            403,
            &json!({"message": "The security token included in the request is invalid."}),
        )),
        Err(e) => Err(Reply::json(403, &json!({"message": e.to_string()}))),
    }
}

async fn serve_request(cluster: Cluster, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body_len = bytes.len();
    if !cluster.config().sigv4.is_empty()
        && !parts.uri.path().starts_with("/_searchsim")
        && let Err(reply) = check_sigv4(&cluster, &parts, &bytes)
    {
        cluster.count_request("sigv4_denied");
        return to_response(reply);
    }
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let reply = cluster
        .handle(
            parts.method.clone(),
            parts.uri.path(),
            parts.uri.query(),
            auth,
            bytes,
        )
        .await;
    tracing::debug!(
        method = %parts.method,
        path = parts.uri.path(),
        query = parts.uri.query().unwrap_or_default(),
        request_bytes = body_len,
        status = reply.status,
        response_bytes = reply.body.len(),
        "request"
    );
    to_response(reply)
}

async fn serve_conn<S>(cluster: Cluster, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let c = cluster.clone();
        async move { Ok::<_, Infallible>(serve_request(c, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Binds and starts serving.
pub(crate) async fn start(config: Config) -> Result<RunningSim, Error> {
    let bind = config.bind;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| Error::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr: bind, source })?;
    let (tls, ca_pem) = match &config.tls {
        Some(t) => {
            let m = crate::tls::generate()?;
            std::fs::create_dir_all(&t.dir).map_err(|source| Error::Io {
                path: t.dir.display().to_string(),
                source,
            })?;
            let p = t.dir.join("ca.pem");
            std::fs::write(&p, &m.ca_pem).map_err(|source| Error::Io {
                path: p.display().to_string(),
                source,
            })?;
            (
                Some(tokio_rustls::TlsAcceptor::from(m.server_config.clone())),
                Some(m.ca_pem),
            )
        }
        None => (None, None),
    };
    let refresh = config.refresh_interval;
    config.faults.validate().map_err(Error::Config)?;
    let cluster = Cluster::new(config);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    {
        let cluster = cluster.clone();
        let mut rx = rx.clone();
        let tls = tls.map(Arc::new);
        tasks.push(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        let _ = stream.set_nodelay(true);
                        let c = cluster.clone();
                        match &tls {
                            Some(acceptor) => {
                                let acceptor = acceptor.clone();
                                conns.spawn(async move {
                                    if let Ok(s) = acceptor.accept(stream).await {
                                        serve_conn(c, s).await;
                                    }
                                });
                            }
                            None => {
                                conns.spawn(serve_conn(c, stream));
                            }
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }));
    }
    {
        let cluster = cluster.clone();
        let mut rx = rx.clone();
        let period = refresh.unwrap_or(Duration::from_secs(1));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    _ = tick.tick() => {
                        if refresh.is_some() {
                            cluster.auto_refresh();
                        }
                        cluster.reap();
                    }
                }
            }
        }));
    }
    Ok(RunningSim {
        addr,
        https: ca_pem.is_some(),
        cluster,
        shutdown: tx,
        tasks,
        ca_pem,
    })
}
