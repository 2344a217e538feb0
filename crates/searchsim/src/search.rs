//! Searching: request parsing (body and query string), validation with the servers' messages,
//! collection of matching documents per (index, shard) in shard-request order, sorting with
//! `missing`, `search_after`, `_shard_doc`, slices, aggregations, and the byte-level rendering
//! of responses (sources are copied as stored, never re-serialised unless filtered).
//!
//! PIT and scroll pages reuse a cached sorted hit list per (context, query, sort, slice) so a
//! `search_after` page is a binary search plus a copy.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::cluster::{Cluster, DocVersion, Index, SnapTarget, State, wildcard_match};
use crate::error::{ApiError, ApiResult};
use crate::mapping::{Dv, DvRef, FieldType};
use crate::query::{EvalDoc, Query, dv_cmp, query_dv};
use crate::routing::{ShardSlice, Slice, id_in_hash_slice};
use crate::timeval::DateFormat;

/// `_source` filtering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFilter {
    /// `_source: false` turns it off.
    pub disabled: bool,
    /// Include patterns.
    pub includes: Vec<String>,
    /// Exclude patterns.
    pub excludes: Vec<String>,
}

impl SourceFilter {
    fn parse(v: &Value) -> ApiResult<Self> {
        let list = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        Ok(match v {
            Value::Bool(b) => Self {
                disabled: !b,
                ..Self::default()
            },
            Value::String(_) | Value::Array(_) => Self {
                includes: list(Some(v)),
                ..Self::default()
            },
            Value::Object(o) => Self {
                disabled: false,
                includes: list(o.get("includes").or_else(|| o.get("include"))),
                excludes: list(o.get("excludes").or_else(|| o.get("exclude"))),
            },
            _ => {
                return Err(ApiError::parsing(
                    "[_source] must be a boolean, string, array or object",
                ));
            }
        })
    }

    /// Whether the source is returned unchanged.
    pub fn passthrough(&self) -> bool {
        !self.disabled && self.includes.is_empty() && self.excludes.is_empty()
    }

    /// Applies the filter to a parsed source.
    pub fn apply(&self, v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                Value::Object(filter_obj(o, "", &self.includes, &self.excludes, false))
            }
            other => other.clone(),
        }
    }
}

fn filter_obj(
    o: &Map<String, Value>,
    prefix: &str,
    inc: &[String],
    exc: &[String],
    included: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in o {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if exc.iter().any(|e| wildcard_match(e, &p)) {
            continue;
        }
        let here = included || inc.is_empty() || inc.iter().any(|i| wildcard_match(i, &p));
        let deeper = here
            || inc
                .iter()
                .any(|i| i.starts_with(&format!("{p}.")) || i.contains('*'));
        match v {
            Value::Object(c) => {
                if !deeper {
                    continue;
                }
                let sub = filter_obj(c, &p, inc, exc, here);
                if !sub.is_empty() || (here && c.is_empty()) {
                    out.insert(k.clone(), Value::Object(sub));
                }
            }
            Value::Array(items) => {
                if !deeper {
                    continue;
                }
                let mut kept = Vec::new();
                for item in items {
                    match item {
                        Value::Object(c) => {
                            let sub = filter_obj(c, &p, inc, exc, here);
                            if !sub.is_empty() {
                                kept.push(Value::Object(sub));
                            }
                        }
                        other if here => kept.push(other.clone()),
                        _ => {}
                    }
                }
                if !kept.is_empty() || here {
                    out.insert(k.clone(), Value::Array(kept));
                }
            }
            other => {
                if here {
                    out.insert(k.clone(), other.clone());
                }
            }
        }
    }
    out
}

/// Where missing values sort.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// After all values.
    Last,
    /// Before all values.
    First,
    /// Replaced by this value.
    Value(Value),
}

/// One sort clause.
#[derive(Debug, Clone, PartialEq)]
pub enum SortSpec {
    /// A field.
    Field {
        field: String,
        desc: bool,
        missing: Missing,
        format: Option<String>,
        unmapped_type: Option<String>,
    },
    /// Relevance.
    Score { desc: bool },
    /// Index order.
    Doc { desc: bool },
    /// PIT tiebreaker.
    ShardDoc { desc: bool },
}

impl SortSpec {
    fn desc(&self) -> bool {
        match self {
            SortSpec::Field { desc, .. }
            | SortSpec::Score { desc }
            | SortSpec::Doc { desc }
            | SortSpec::ShardDoc { desc } => *desc,
        }
    }

    fn missing_last(&self) -> bool {
        !matches!(
            self,
            SortSpec::Field {
                missing: Missing::First,
                ..
            }
        )
    }
}

fn parse_order(v: &Value) -> ApiResult<bool> {
    match v.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        _ => Err(ApiError::illegal(format!(
            "Unknown SortOrder [{}]",
            v.as_str().unwrap_or_default()
        ))),
    }
}

fn sort_one(name: &str, opts: Option<&Value>) -> ApiResult<SortSpec> {
    let mut desc = name == "_score";
    let mut missing = Missing::Last;
    let mut format = None;
    let mut unmapped_type = None;
    match opts {
        None => {}
        Some(v @ Value::String(_)) => desc = parse_order(v)?,
        Some(Value::Object(o)) => {
            if let Some(ord) = o.get("order") {
                desc = parse_order(ord)?;
            }
            match o.get("missing") {
                Some(Value::String(s)) if s == "_last" => missing = Missing::Last,
                Some(Value::String(s)) if s == "_first" => missing = Missing::First,
                Some(Value::Null) | None => {}
                Some(v) => missing = Missing::Value(v.clone()),
            }
            format = o.get("format").and_then(Value::as_str).map(str::to_string);
            unmapped_type = o
                .get("unmapped_type")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Some(_) => return Err(ApiError::parsing(format!("malformed sort for [{name}]"))),
    }
    Ok(match name {
        "_score" => SortSpec::Score { desc },
        "_doc" => SortSpec::Doc { desc },
        "_shard_doc" => SortSpec::ShardDoc { desc },
        f => SortSpec::Field {
            field: f.to_string(),
            desc,
            missing,
            format,
            unmapped_type,
        },
    })
}

/// Parses a `sort` value (string, object or array of them).
pub fn parse_sort(v: &Value) -> ApiResult<Vec<SortSpec>> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for it in items {
        match it {
            Value::String(s) => out.push(sort_one(s, None)?),
            Value::Object(o) => {
                for (k, v) in o {
                    out.push(sort_one(k, Some(v))?);
                }
            }
            _ => return Err(ApiError::parsing("malformed sort format")),
        }
    }
    Ok(out)
}

/// `track_total_hits`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrackTotal {
    /// Omit `hits.total`.
    Off,
    /// Count up to N, then `gte`.
    UpTo(u64),
    /// Exact.
    Exact,
}

/// PIT reference in a request.
#[derive(Debug, Clone, PartialEq)]
pub struct PitRef {
    /// Id as sent.
    pub id: String,
    /// Optional keep-alive extension.
    pub keep_alive: Option<String>,
}

/// A parsed search request.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// Query.
    pub query: Query,
    /// Canonical text of the query (cache key).
    pub query_key: String,
    /// Page size.
    pub size: usize,
    /// Offset.
    pub from: usize,
    /// Sort clauses as requested.
    pub sort: Vec<SortSpec>,
    /// Whether the request had a sort.
    pub explicit_sort: bool,
    /// `search_after`.
    pub search_after: Option<Vec<Value>>,
    /// `_source` filtering.
    pub source: SourceFilter,
    /// `stored_fields` without `_source`: no `_source` in hits.
    pub no_source: bool,
    /// `stored_fields: _none_`: no `_id` either.
    pub stored_none: bool,
    /// `docvalue_fields` with optional format.
    pub docvalue_fields: Vec<(String, Option<String>)>,
    /// `track_total_hits`.
    pub track_total: TrackTotal,
    /// `rest_total_hits_as_int`.
    pub total_as_int: bool,
    /// Aggregations.
    pub aggs: Option<Map<String, Value>>,
    /// PIT.
    pub pit: Option<PitRef>,
    /// Slice.
    pub slice: Option<Slice>,
    /// Scroll keep-alive.
    pub scroll: Option<String>,
    /// Add `_version`.
    pub version: bool,
    /// Add `_seq_no` and `_primary_term`.
    pub seq_no_primary_term: bool,
    /// `request_cache` param.
    pub request_cache: Option<bool>,
}

fn param_bool(params: &HashMap<String, String>, k: &str) -> Option<bool> {
    params.get(k).map(|v| v != "false")
}

fn usize_of(v: &Value, name: &str) -> ApiResult<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| ApiError::parsing(format!("[{name}] must be an integer"))),
        Value::String(s) => s
            .parse()
            .map_err(|_| ApiError::parsing(format!("[{name}] must be an integer"))),
        _ => Err(ApiError::parsing(format!("[{name}] must be an integer"))),
    }
}

impl SearchRequest {
    /// Parses from query-string parameters and an optional JSON body.
    pub fn parse(params: &HashMap<String, String>, body: Option<&Value>) -> ApiResult<Self> {
        let empty = Map::new();
        let b = match body {
            Some(Value::Object(o)) => o,
            Some(Value::Null) | None => &empty,
            Some(_) => return Err(ApiError::parsing("request body must be an object")),
        };
        const KNOWN: &[&str] = &[
            "query",
            "size",
            "from",
            "sort",
            "search_after",
            "_source",
            "stored_fields",
            "docvalue_fields",
            "track_total_hits",
            "aggs",
            "aggregations",
            "pit",
            "slice",
            "version",
            "seq_no_primary_term",
            "timeout",
            "terminate_after",
            "track_scores",
            "min_score",
            "explain",
            "highlight",
            "fields",
            "post_filter",
            "collapse",
            "profile",
            "stats",
            "script_fields",
            "indices_boost",
            "rescore",
            "suggest",
            "ext",
            "runtime_mappings",
        ];
        for (k, v) in b {
            if !KNOWN.contains(&k.as_str()) {
                return Err(if v.is_object() {
                    ApiError::parsing(format!("Unknown key for a START_OBJECT in [{k}]."))
                } else if v.is_array() {
                    ApiError::parsing(format!("Unknown key for a START_ARRAY in [{k}]."))
                } else {
                    ApiError::parsing(format!("Unknown key for a VALUE_STRING in [{k}]."))
                });
            }
        }
        let mut query = match b.get("query") {
            Some(q) => Query::parse(q)?,
            None => Query::MatchAll,
        };
        if let Some(pf) = b.get("post_filter") {
            query = Query::Bool {
                must: vec![query],
                filter: vec![Query::parse(pf)?],
                should: vec![],
                must_not: vec![],
                msm: None,
            };
        }
        if let Some(q) = params.get("q") {
            let parsed = match q.split_once(':') {
                Some((f, v)) => Query::Match {
                    field: f.to_string(),
                    query: json!(v),
                    and: false,
                    phrase: false,
                },
                None if q == "*" || q == "*:*" => Query::MatchAll,
                None => Query::MatchNone,
            };
            query = Query::Bool {
                must: vec![query, parsed],
                filter: vec![],
                should: vec![],
                must_not: vec![],
                msm: None,
            };
        }
        let query_key = format!(
            "{:?}|{}",
            b.get("query"),
            params.get("q").cloned().unwrap_or_default()
        );
        let mut size: i64 = match (params.get("size"), b.get("size")) {
            (_, Some(v)) => usize_of(v, "size")?,
            (Some(s), None) => s.parse().map_err(|_| {
                ApiError::illegal(format!(
                    "Failed to parse int parameter [size] with value [{s}]"
                ))
            })?,
            _ => 10,
        };
        if size < -1 {
            return Err(ApiError::illegal(format!(
                "[size] parameter cannot be negative, found [{size}]"
            )));
        }
        if size == -1 {
            size = 10;
        }
        let from: i64 = match (params.get("from"), b.get("from")) {
            (_, Some(v)) => usize_of(v, "from")?,
            (Some(s), None) => s.parse().map_err(|_| {
                ApiError::illegal(format!(
                    "Failed to parse int parameter [from] with value [{s}]"
                ))
            })?,
            _ => 0,
        };
        if from < -1 {
            return Err(ApiError::illegal(format!(
                "[from] parameter cannot be negative but was [{from}]"
            )));
        }
        let sort = match (params.get("sort"), b.get("sort")) {
            (Some(s), _) => {
                let mut v = Vec::new();
                for part in s.split(',') {
                    match part.split_once(':') {
                        Some((f, o)) => v.push(sort_one(f, Some(&json!(o)))?),
                        None => v.push(sort_one(part, None)?),
                    }
                }
                v
            }
            (None, Some(s)) => parse_sort(s)?,
            _ => Vec::new(),
        };
        let explicit_sort = !sort.is_empty();
        let search_after = match b.get("search_after") {
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(ApiError::parsing("[search_after] must be an array")),
            None => None,
        };
        let mut source = match b.get("_source") {
            Some(v) => SourceFilter::parse(v)?,
            None => SourceFilter::default(),
        };
        if let Some(v) = params.get("_source") {
            source = match v.as_str() {
                "true" => SourceFilter::default(),
                "false" => SourceFilter {
                    disabled: true,
                    ..SourceFilter::default()
                },
                list => SourceFilter {
                    includes: list.split(',').map(str::to_string).collect(),
                    ..SourceFilter::default()
                },
            };
        }
        if let Some(v) = params
            .get("_source_includes")
            .or_else(|| params.get("_source_include"))
        {
            source.disabled = false;
            source.includes = v.split(',').map(str::to_string).collect();
        }
        if let Some(v) = params
            .get("_source_excludes")
            .or_else(|| params.get("_source_exclude"))
        {
            source.disabled = false;
            source.excludes = v.split(',').map(str::to_string).collect();
        }
        let stored: Option<Vec<String>> =
            match (b.get("stored_fields"), params.get("stored_fields")) {
                (Some(Value::String(s)), _) => Some(vec![s.clone()]),
                (Some(Value::Array(a)), _) => Some(
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                ),
                (_, Some(s)) => Some(s.split(',').map(str::to_string).collect()),
                _ => None,
            };
        let stored_none = stored
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == "_none_"));
        let no_source = stored
            .as_ref()
            .is_some_and(|s| !s.iter().any(|x| x == "_source"))
            && b.get("_source").is_none();
        let mut docvalue_fields = Vec::new();
        match b.get("docvalue_fields") {
            Some(Value::Array(a)) => {
                for it in a {
                    match it {
                        Value::String(s) => docvalue_fields.push((s.clone(), None)),
                        Value::Object(o) => {
                            if let Some(f) = o.get("field").and_then(Value::as_str) {
                                docvalue_fields.push((
                                    f.to_string(),
                                    o.get("format").and_then(Value::as_str).map(str::to_string),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                if let Some(s) = params.get("docvalue_fields") {
                    docvalue_fields.extend(s.split(',').map(|f| (f.to_string(), None)));
                }
            }
        }
        let total_as_int = param_bool(params, "rest_total_hits_as_int").unwrap_or(false);
        let tth = b.get("track_total_hits").cloned().or_else(|| {
            params.get("track_total_hits").map(|s| {
                s.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::Bool(s != "false"))
            })
        });
        let track_total = match tth {
            None => {
                // scrolls count their total exactly (it is kept in the scroll context)
                if total_as_int || params.contains_key("scroll") {
                    TrackTotal::Exact
                } else {
                    TrackTotal::UpTo(10_000)
                }
            }
            Some(Value::Bool(true)) => TrackTotal::Exact,
            Some(Value::Bool(false)) => TrackTotal::Off,
            Some(Value::Number(n)) => {
                let v = n.as_i64().unwrap_or(10_000);
                if v == -1 {
                    TrackTotal::Exact
                } else if v < 0 {
                    return Err(ApiError::illegal(format!(
                        "[track_total_hits] parameter must be positive or equals to -1, got {v}"
                    )));
                } else {
                    TrackTotal::UpTo(v as u64)
                }
            }
            Some(_) => {
                return Err(ApiError::parsing(
                    "[track_total_hits] must be a boolean or an integer",
                ));
            }
        };
        if total_as_int
            && matches!(track_total, TrackTotal::UpTo(n) if n != 10_000 || b.get("track_total_hits").is_some())
        {
            return Err(ApiError::validation(&["[rest_total_hits_as_int] cannot be used if the tracking of total hits is not accurate, got 10000".into()]));
        }
        let aggs = b
            .get("aggs")
            .or_else(|| b.get("aggregations"))
            .and_then(Value::as_object)
            .cloned();
        let pit = match b.get("pit") {
            Some(Value::Object(p)) => {
                for k in p.keys() {
                    if k != "id" && k != "keep_alive" {
                        return Err(ApiError::new(
                            400,
                            "x_content_parse_exception",
                            format!("[1:9] [pit] unknown field [{k}]"),
                        ));
                    }
                }
                let id = p
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::parsing("[pit] requires [id]"))?;
                Some(PitRef {
                    id: id.to_string(),
                    keep_alive: p
                        .get("keep_alive")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            }
            Some(_) => return Err(ApiError::parsing("[pit] must be an object")),
            None => None,
        };
        let slice = match b.get("slice") {
            Some(Value::Object(s)) => {
                let id = s
                    .get("id")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| ApiError::parsing("[slice] requires [id]"))?;
                let max = s
                    .get("max")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| ApiError::parsing("[slice] requires [max]"))?;
                if id < 0 {
                    return Err(ApiError::illegal("id must be greater than or equal to 0"));
                }
                if max <= 1 {
                    return Err(ApiError::illegal("max must be greater than 1"));
                }
                if id >= max {
                    return Err(ApiError::illegal("max must be greater than id"));
                }
                if let Some(f) = s.get("field").and_then(Value::as_str)
                    && f != "_id"
                {
                    return Err(ApiError::illegal(format!(
                        "slicing on field [{f}] is not supported by this server; use _id"
                    )));
                }
                Some(Slice {
                    id: id as u32,
                    max: max as u32,
                })
            }
            Some(_) => return Err(ApiError::parsing("[slice] must be an object")),
            None => None,
        };
        Ok(Self {
            query,
            query_key,
            size: size as usize,
            from: from.max(0) as usize,
            sort,
            explicit_sort,
            search_after,
            source,
            no_source,
            stored_none,
            docvalue_fields,
            track_total,
            total_as_int,
            aggs,
            pit,
            slice,
            scroll: params.get("scroll").cloned(),
            version: param_bool(params, "version")
                .or_else(|| b.get("version").and_then(Value::as_bool))
                .unwrap_or(false),
            seq_no_primary_term: param_bool(params, "seq_no_primary_term")
                .or_else(|| b.get("seq_no_primary_term").and_then(Value::as_bool))
                .unwrap_or(false),
            request_cache: param_bool(params, "request_cache"),
        })
    }
}

/// One matching document in a sorted list.
#[derive(Debug)]
pub struct Entry {
    /// Sort keys (None = missing).
    pub keys: Box<[Option<Dv>]>,
    /// `(shardRequestIndex << 32) | ordinal`.
    pub sd: u64,
    /// Score.
    pub score: f32,
}

/// How sort values of a clause are written.
#[derive(Debug, Clone)]
enum OutKind {
    Long {
        date_format: Option<DateFormat>,
        nanos: bool,
    },
    Unsigned,
    Float {
        single: bool,
    },
    Str,
    Score,
    Doc,
    ShardDoc,
}

/// The sorted matches of a request on a snapshot.
#[derive(Debug)]
pub struct SortedCache {
    /// Entries in sort order.
    pub entries: Vec<Entry>,
    /// shardRequestIndex → (target position, shard number).
    pub shard_map: Vec<(u32, u32)>,
    /// Index names of the targets.
    pub target_names: Vec<String>,
    /// Effective sort clauses.
    specs: Vec<SortSpec>,
    out: Vec<OutKind>,
    /// Aggregation results.
    pub aggs: Option<Map<String, Value>>,
    /// Total shards.
    pub total_shards: usize,
    /// Whether scores are null (field sort).
    score_null: bool,
    max_score: Option<f32>,
}

/// Cache key of a sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// PIT key.
    pub ctx: u64,
    key: String,
}

/// Cache context of plain (non-PIT) `search_after` paging.
const PLAIN_CTX: u64 = u64::MAX;
/// Upper bound of hits kept in all cached lists together.
const MAX_CACHED_ENTRIES: usize = 16_000_000;

/// A small LRU of sorted lists for PIT pages.
#[derive(Debug)]
pub struct Lru {
    cap: usize,
    tick: u64,
    items: Vec<(CacheKey, Arc<SortedCache>, u64)>,
}

impl Lru {
    /// New cache with capacity `cap`.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            tick: 0,
            items: Vec::new(),
        }
    }

    fn get(&mut self, k: &CacheKey) -> Option<Arc<SortedCache>> {
        self.tick += 1;
        let t = self.tick;
        self.items
            .iter_mut()
            .find(|(key, _, _)| key == k)
            .map(|(_, v, tick)| {
                *tick = t;
                v.clone()
            })
    }

    fn put(&mut self, k: CacheKey, v: Arc<SortedCache>) {
        self.tick += 1;
        let entries = |items: &[(CacheKey, Arc<SortedCache>, u64)]| {
            items.iter().map(|(_, v, _)| v.entries.len()).sum::<usize>()
        };
        // bounded by count and by the total number of cached hits
        while !self.items.is_empty()
            && (self.items.len() >= self.cap
                || entries(&self.items) + v.entries.len() > MAX_CACHED_ENTRIES)
        {
            let Some(pos) = self
                .items
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, _, t))| *t)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.items.swap_remove(pos);
        }
        self.items.push((k, v, self.tick));
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Keeps entries whose key passes.
    pub fn retain(&mut self, f: impl Fn(&CacheKey) -> bool) {
        self.items.retain(|(k, _, _)| f(k));
    }
}

/// The resolved targets of a search.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Snapshot per index, sorted by name.
    pub list: Vec<SnapTarget>,
}

fn cmp_key(a: &Option<Dv>, b: &Option<Dv>, desc: bool, missing_last: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if missing_last {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(_), None) => {
            if missing_last {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(x), Some(y)) => {
            let o = dv_cmp(x.as_ref(), y.as_ref());
            if desc { o.reverse() } else { o }
        }
    }
}

fn cmp_keys(a: &[Option<Dv>], b: &[Option<Dv>], specs: &[SortSpec]) -> Ordering {
    for (i, s) in specs.iter().enumerate() {
        let o = cmp_key(&a[i], &b[i], s.desc(), s.missing_last());
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

const ID_FIELD_DATA: &str = "Fielddata access on the _id field is disallowed, you can re-enable it by updating the dynamic cluster setting: indices.id_field_data.enabled";

const TEXT_SORT: &str = "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{}] in order to load field data by uninverting the inverted index. Note that this can use significant memory.";

impl Cluster {
    /// Whether `_id` has field data (sorting, aggregating on `_id`): the cluster setting
    /// `indices.id_field_data.enabled`, which defaults to true on OpenSearch and
    /// Elasticsearch 7 and to false from Elasticsearch 8.0.
    fn id_field_data_enabled(&self, st: &State) -> bool {
        let default = match self.flavor() {
            crate::Flavor::OpenSearch => true,
            crate::Flavor::Elasticsearch => !version_at_least(self.version(), 8, 0),
        };
        match st.cluster_setting("indices.id_field_data.enabled") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.parse().unwrap_or(default),
            _ => default,
        }
    }

    /// Validates a request against the flavor's rules before running it.
    fn validate(&self, req: &SearchRequest, has_indices_in_path: bool) -> ApiResult<Vec<SortSpec>> {
        let flavor = self.flavor();
        let mut msgs = Vec::new();
        if req.pit.is_some() && has_indices_in_path {
            msgs.push(match flavor {
                crate::Flavor::OpenSearch => "[indices] cannot be used with point in time".to_string(),
                crate::Flavor::Elasticsearch => "[indices] cannot be used with point in time. Do not specify any index with point in time.".to_string(),
            });
        }
        if req.scroll.is_some() {
            if req.pit.is_some() {
                msgs.push("using [point in time] is not allowed in a scroll context".into());
            }
            if req.size == 0 {
                msgs.push("[size] cannot be [0] in a scroll context".into());
            }
            if req.from > 0 {
                msgs.push("using [from] is not allowed in a scroll context".into());
            }
            if req.request_cache == Some(true) {
                msgs.push("[request_cache] cannot be used in a scroll context".into());
            }
        }
        let shard_docs = req
            .sort
            .iter()
            .filter(|s| matches!(s, SortSpec::ShardDoc { .. }))
            .count();
        if shard_docs > 0 {
            match flavor {
                crate::Flavor::OpenSearch if version_at_least(self.version(), 3, 3) => {
                    if req.pit.is_none() && req.scroll.is_none() {
                        msgs.push("_shard_doc is only supported with point-in-time (PIT). Add a PIT or remove _shard_doc.".into());
                    }
                    if req.scroll.is_some() {
                        msgs.push("_shard_doc cannot be used with scroll. Use PIT + search_after instead.".into());
                    }
                    if shard_docs > 1 {
                        msgs.push(
                            "duplicate _shard_doc sort detected. Specify it at most once.".into(),
                        );
                    }
                }
                crate::Flavor::OpenSearch => {
                    return Err(ApiError::shard_failure(
                        400,
                        "query_shard_exception",
                        "No mapping found for [_shard_doc] in order to sort on",
                        None,
                    ));
                }
                crate::Flavor::Elasticsearch => {
                    if req.pit.is_none() {
                        msgs.push(
                            "[_shard_doc] sort field cannot be used without [point in time]".into(),
                        );
                    }
                }
            }
        }
        if !msgs.is_empty() {
            return Err(ApiError::validation(&msgs));
        }
        if req.slice.is_some() && req.pit.is_none() && req.scroll.is_none() {
            return Err(ApiError::shard_failure(
                400,
                "search_exception",
                "`slice` cannot be used outside of a scroll context or PIT context",
                None,
            ));
        }
        if req.search_after.is_some() {
            if req.scroll.is_some() {
                return Err(ApiError::shard_failure(
                    400,
                    "search_exception",
                    "`search_after` cannot be used in a scroll context.",
                    None,
                ));
            }
            if req.from > 0 {
                return Err(ApiError::shard_failure(
                    400,
                    "search_exception",
                    "`from` parameter must be set to 0 when `search_after` is used.",
                    None,
                ));
            }
            if !(req.explicit_sort || flavor == crate::Flavor::Elasticsearch && req.pit.is_some()) {
                return Err(ApiError::shard_failure(
                    400,
                    "search_exception",
                    "Sort must contain at least one field.",
                    None,
                ));
            }
        }
        let mut specs = req.sort.clone();
        if flavor == crate::Flavor::Elasticsearch
            && req.pit.is_some()
            && shard_docs == 0
            && (!specs.is_empty() || req.search_after.is_some())
        {
            specs.push(SortSpec::ShardDoc { desc: false });
        }
        Ok(specs)
    }

    fn index_limits(
        &self,
        st: &State,
        targets: &[SnapTarget],
        req: &SearchRequest,
    ) -> ApiResult<()> {
        for t in targets {
            let Some(idx) = st.indices.get(&t.index) else {
                continue;
            };
            let window = idx.setting_u64("max_result_window", 10_000);
            if req.scroll.is_some() {
                if req.size as u64 > window {
                    return Err(ApiError::shard_failure(
                        400,
                        "illegal_argument_exception",
                        format!(
                            "Batch size is too large, size must be less than or equal to: [{window}] but was [{}]. Scroll batch sizes cost as much memory as result windows so they are controlled by the [index.max_result_window] index level setting.",
                            req.size
                        ),
                        Some(&t.index),
                    ));
                }
            } else if (req.from + req.size) as u64 > window {
                return Err(ApiError::shard_failure(
                    400,
                    "illegal_argument_exception",
                    format!(
                        "Result window is too large, from + size must be less than or equal to: [{window}] but was [{}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting.",
                        req.from + req.size
                    ),
                    Some(&t.index),
                ));
            }
            if let Some(slice) = req.slice {
                if req.scroll.is_some() {
                    let lim = idx.setting_u64("max_slices_per_scroll", 1024);
                    if u64::from(slice.max) > lim {
                        return Err(ApiError::shard_failure(
                            400,
                            "illegal_argument_exception",
                            format!(
                                "The number of slices [{}] is too large. It must be less than [{lim}]. This limit can be set by changing the [index.max_slices_per_scroll] index level setting.",
                                slice.max
                            ),
                            Some(&t.index),
                        ));
                    }
                } else if self.flavor() == crate::Flavor::OpenSearch {
                    let lim = idx.setting_u64("max_slices_per_pit", 1024);
                    if u64::from(slice.max) > lim {
                        let ty = "rejected_execution_exception";
                        return Err(ApiError::shard_failure(
                            429,
                            ty,
                            format!(
                                "The number of slices [{}] is too large. It must be less than [{lim}]. This limit can be set by changing the [index.max_slices_per_pit] index level setting.",
                                slice.max
                            ),
                            Some(&t.index),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Collects, sorts and aggregates the matches of `req` on `targets`.
    fn collect(
        &self,
        st: &State,
        targets: &[SnapTarget],
        req: &SearchRequest,
        specs: &[SortSpec],
    ) -> ApiResult<SortedCache> {
        let now = chrono::Utc::now().timestamp_millis();
        let score = if req.query.scoring() { 1.0f32 } else { 0.0 };
        let mut indices: Vec<&Index> = Vec::new();
        for t in targets {
            match st.indices.get(&t.index) {
                Some(i) => indices.push(i),
                None => return Err(ApiError::index_not_found(&t.index)),
            }
        }
        // per-spec output kind, from the first index that maps the field
        let mut out = Vec::new();
        for s in specs {
            out.push(match s {
                SortSpec::Score { .. } => OutKind::Score,
                SortSpec::Doc { .. } => OutKind::Doc,
                SortSpec::ShardDoc { .. } => OutKind::ShardDoc,
                SortSpec::Field { field, .. } if field == "_index" => OutKind::Str,
                SortSpec::Field { field, .. } if field == "_id" => {
                    if !self.id_field_data_enabled(st) {
                        return Err(ApiError::shard_failure(
                            400,
                            "illegal_argument_exception",
                            ID_FIELD_DATA,
                            indices.first().map(|i| i.name.as_str()),
                        ));
                    }
                    OutKind::Str
                }
                SortSpec::Field {
                    field,
                    format,
                    unmapped_type,
                    ..
                } => {
                    let info = indices.iter().find_map(|i| i.mapping.fields.get(field));
                    match info {
                        Some(i) if i.ty == FieldType::Text => {
                            return Err(ApiError::shard_failure(
                                400,
                                "illegal_argument_exception",
                                TEXT_SORT.replace("{}", field),
                                Some(&indices[0].name),
                            ));
                        }
                        Some(i) => match i.ty {
                            FieldType::Date | FieldType::DateNanos => OutKind::Long {
                                date_format: format.as_ref().map(|f| DateFormat::new(f)),
                                nanos: i.ty == FieldType::DateNanos,
                            },
                            FieldType::Long | FieldType::Boolean => OutKind::Long {
                                date_format: None,
                                nanos: false,
                            },
                            FieldType::UnsignedLong => OutKind::Unsigned,
                            FieldType::Double => OutKind::Float { single: false },
                            FieldType::Float | FieldType::HalfFloat => {
                                OutKind::Float { single: true }
                            }
                            FieldType::Keyword | FieldType::Ip => OutKind::Str,
                            _ => {
                                return Err(ApiError::shard_failure(
                                    400,
                                    "illegal_argument_exception",
                                    format!(
                                        "Sorting on field [{field}] of this type is not supported"
                                    ),
                                    Some(&indices[0].name),
                                ));
                            }
                        },
                        None if unmapped_type.is_some() || indices.is_empty() => OutKind::Str,
                        None => {
                            return Err(ApiError::shard_failure(
                                400,
                                "query_shard_exception",
                                format!("No mapping found for [{field}] in order to sort on"),
                                Some(&indices[0].name),
                            ));
                        }
                    }
                }
            });
        }
        let mut entries = Vec::new();
        let mut shard_map = Vec::new();
        let mut matched_docs: Vec<(&Index, &DocVersion)> = Vec::new();
        let want_aggs = req.aggs.is_some();
        for (ti, (t, idx)) in targets.iter().zip(&indices).enumerate() {
            let pred = req.query.compile(&idx.name, &idx.mapping, now);
            // per-spec resolution for this index: (slot, missing substitute); `_id` has
            // neither (every document has one)
            let resolved: Vec<(Option<u32>, Option<Dv>)> = specs
                .iter()
                .map(|s| match s {
                    SortSpec::Field { field, .. } if field == "_id" || field == "_index" => {
                        (None, None)
                    }
                    SortSpec::Field { field, missing, .. } => {
                        let info = idx.mapping.fields.get(field);
                        let slot = info.and_then(|i| i.slot);
                        let subst = match (missing, info) {
                            (Missing::Value(v), Some(i)) => query_dv(i, v, None, now, false),
                            _ => None,
                        };
                        (slot, subst)
                    }
                    _ => (None, None),
                })
                .collect();
            let num_shards = idx.num_shards();
            for (sno, shard) in idx.shards.iter().enumerate() {
                let sri = shard_map.len() as u64;
                shard_map.push((ti as u32, sno as u32));
                let slice = match req.slice {
                    Some(s) => s.for_shard(sno as u32, num_shards),
                    None => ShardSlice::All,
                };
                if slice == ShardSlice::None || !pred.may_match(&shard.bounds) {
                    continue;
                }
                let w = t.watermarks.get(sno).copied().unwrap_or(0);
                for (ord, doc) in shard.docs.iter().enumerate() {
                    if !doc.visible(w) {
                        continue;
                    }
                    if let ShardSlice::Hash { id, n } = slice
                        && !id_in_hash_slice(&doc.id, id, n)
                    {
                        continue;
                    }
                    if !pred.matches(&EvalDoc::new(doc)) {
                        continue;
                    }
                    let sd = (sri << 32) | ord as u64;
                    let keys: Box<[Option<Dv>]> = specs
                        .iter()
                        .zip(&resolved)
                        .map(|(s, (slot, subst))| match s {
                            SortSpec::Score { .. } => Some(Dv::F(f64::from(score))),
                            SortSpec::Doc { .. } => Some(Dv::I(ord as i64)),
                            SortSpec::ShardDoc { .. } => Some(Dv::I(sd as i64)),
                            SortSpec::Field { field, .. } if field == "_id" => {
                                Some(Dv::S(doc.id.clone()))
                            }
                            SortSpec::Field { field, .. } if field == "_index" => {
                                Some(Dv::S(idx.name.as_str().into()))
                            }
                            SortSpec::Field { desc, .. } => {
                                let mut best: Option<DvRef<'_>> = None;
                                if let Some(slot) = slot {
                                    for v in doc.values(*slot) {
                                        best = match best {
                                            None => Some(v),
                                            Some(b) => {
                                                let o = dv_cmp(v, b);
                                                if (*desc && o.is_gt()) || (!*desc && o.is_lt()) {
                                                    Some(v)
                                                } else {
                                                    Some(b)
                                                }
                                            }
                                        };
                                    }
                                }
                                best.map(DvRef::to_owned).or_else(|| subst.clone())
                            }
                        })
                        .collect();
                    entries.push(Entry { keys, sd, score });
                    if want_aggs {
                        matched_docs.push((idx, doc));
                    }
                }
            }
        }
        let sorted_by_score = specs.is_empty();
        if sorted_by_score {
            entries.sort_by(|a, b| {
                b.score
                    .partial_cmp(&a.score)
                    .unwrap_or(Ordering::Equal)
                    .then(a.sd.cmp(&b.sd))
            });
        } else {
            entries.sort_by(|a, b| cmp_keys(&a.keys, &b.keys, specs).then(a.sd.cmp(&b.sd)));
        }
        let aggs = match &req.aggs {
            Some(spec) => Some(crate::aggs::compute(&matched_docs, spec)?),
            None => None,
        };
        let score_null =
            !specs.is_empty() && !specs.iter().any(|s| matches!(s, SortSpec::Score { .. }));
        let max_score = if score_null || entries.is_empty() {
            None
        } else {
            Some(score)
        };
        Ok(SortedCache {
            entries,
            total_shards: shard_map.len(),
            shard_map,
            target_names: targets.iter().map(|t| t.index.clone()).collect(),
            specs: specs.to_vec(),
            out,
            aggs,
            score_null,
            max_score,
        })
    }

    /// Parses `search_after` values against the cached sort; `st` is the state the caller
    /// already holds (never locked again here: a second read lock behind a waiting writer
    /// would deadlock).
    fn parse_after(
        &self,
        st: &State,
        cache: &SortedCache,
        after: &[Value],
    ) -> ApiResult<Vec<Option<Dv>>> {
        if after.len() != cache.specs.len() {
            return Err(ApiError::shard_failure(
                400,
                "illegal_argument_exception",
                format!(
                    "search_after has {} value(s) but sort has {}.",
                    after.len(),
                    cache.specs.len()
                ),
                None,
            ));
        }
        let mut keys = Vec::new();
        for ((v, spec), out) in after.iter().zip(&cache.specs).zip(&cache.out) {
            if v.is_null() {
                keys.push(None);
                continue;
            }
            let bad = || {
                ApiError::shard_failure(
                    400,
                    "illegal_argument_exception",
                    format!(
                        "Failed to parse search_after value for field [{}].",
                        match spec {
                            SortSpec::Field { field, .. } => field.as_str(),
                            _ => "_doc",
                        }
                    ),
                    None,
                )
            };
            let k = match out {
                OutKind::Long { nanos, .. } => match v {
                    Value::Number(n) => {
                        let x = n
                            .as_i64()
                            .or_else(|| n.as_f64().map(|f| f as i64))
                            .ok_or_else(bad)?;
                        let sentinel = if spec.desc() != spec.missing_last() {
                            i64::MAX
                        } else {
                            i64::MIN
                        };
                        if x == sentinel
                            && !matches!(
                                spec,
                                SortSpec::Field {
                                    missing: Missing::Value(_),
                                    ..
                                }
                            )
                        {
                            None
                        } else {
                            Some(Dv::I(x))
                        }
                    }
                    Value::String(s) => {
                        let fmt = match spec {
                            SortSpec::Field { field, format, .. } => format
                                .as_ref()
                                .map(|f| DateFormat::new(f))
                                .or_else(|| field_format(st, cache, field)),
                            _ => None,
                        }
                        .unwrap_or_default();
                        if let Some(n) = fmt
                            .parse_nanos(s)
                            .or_else(|| DateFormat::default().parse_nanos(s))
                        {
                            Some(Dv::I(if *nanos {
                                n as i64
                            } else {
                                n.div_euclid(1_000_000) as i64
                            }))
                        } else {
                            Some(Dv::I(s.parse::<i64>().map_err(|_| bad())?))
                        }
                    }
                    Value::Bool(b) => Some(Dv::I(i64::from(*b))),
                    _ => return Err(bad()),
                },
                OutKind::Unsigned => match v {
                    Value::Number(n) => Some(
                        n.as_u64()
                            .map(Dv::U)
                            .or_else(|| n.as_f64().map(Dv::F))
                            .ok_or_else(bad)?,
                    ),
                    Value::String(s) => Some(Dv::U(s.parse().map_err(|_| bad())?)),
                    _ => return Err(bad()),
                },
                OutKind::Float { .. } | OutKind::Score => match v {
                    Value::Number(n) => Some(Dv::F(n.as_f64().ok_or_else(bad)?)),
                    Value::String(s) => Some(Dv::F(s.parse().map_err(|_| bad())?)),
                    _ => return Err(bad()),
                },
                OutKind::Str => Some(Dv::S(match v {
                    Value::String(s) => s.clone().into_boxed_str(),
                    other => other.to_string().into_boxed_str(),
                })),
                OutKind::Doc | OutKind::ShardDoc => match v {
                    Value::Number(n) => Some(Dv::I(n.as_i64().ok_or_else(bad)?)),
                    Value::String(s) => Some(Dv::I(s.parse().map_err(|_| bad())?)),
                    _ => return Err(bad()),
                },
            };
            keys.push(k);
        }
        Ok(keys)
    }

    /// Returns (and caches, for PITs) the sorted matches.
    fn sorted(
        &self,
        st: &State,
        ctx: Option<u64>,
        targets: &[SnapTarget],
        req: &SearchRequest,
        specs: &[SortSpec],
    ) -> ApiResult<Arc<SortedCache>> {
        // Plain searches are cached only when paging with search_after; a snapshot
        // (index uuids + refresh watermarks) never changes, so it keys the list safely.
        let (ctx, snapshot) = match ctx {
            Some(c) => (c, String::new()),
            None if req.search_after.is_some() => (
                PLAIN_CTX,
                targets
                    .iter()
                    .map(|t| format!("{}/{}/{:?}", t.index, t.uuid, t.watermarks))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => return Ok(Arc::new(self.collect(st, targets, req, specs)?)),
        };
        let key = CacheKey {
            ctx,
            key: format!(
                "{snapshot}|{}|{:?}|{:?}|{:?}",
                req.query_key,
                specs,
                req.slice,
                req.aggs
                    .as_ref()
                    .map(|a| Value::Object(a.clone()).to_string())
            ),
        };
        if let Some(hit) = self.inner.cache.lock().get(&key) {
            return Ok(hit);
        }
        let fresh = Arc::new(self.collect(st, targets, req, specs)?);
        self.inner.cache.lock().put(key, fresh.clone());
        Ok(fresh)
    }
}

/// The mapped date format of `field` in the first target that maps it.
fn field_format(st: &State, cache: &SortedCache, field: &str) -> Option<DateFormat> {
    cache.target_names.iter().find_map(|n| {
        st.indices
            .get(n)
            .and_then(|i| i.mapping.fields.get(field))
            .map(|i| i.format.clone())
    })
}

/// Page selection and rendering options.
pub struct PageOpts<'a> {
    /// Prefix fields (`_scroll_id`, `pit_id`) as (name, value).
    pub prefix: Vec<(&'a str, String)>,
    /// Start position in the sorted list.
    pub start: usize,
    /// Number of hits.
    pub count: usize,
    /// Hits silently left out of the middle of the page (the `short_page` fault): the first
    /// and the last hit stay, so a `search_after` cursor moves past the missing ones and only
    /// a client that checks `hits.total` against what it received notices.
    pub omit: usize,
    /// Request for rendering options.
    pub req: &'a SearchRequest,
    /// Elapsed ms.
    pub took: u64,
}

fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn write_sort_value(buf: &mut Vec<u8>, k: &Option<Dv>, out: &OutKind, spec: &SortSpec) {
    match (k, out) {
        (
            None,
            OutKind::Long {
                date_format: None, ..
            },
        ) => {
            let v = if spec.desc() != spec.missing_last() {
                i64::MAX
            } else {
                i64::MIN
            };
            buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        }
        (None, _) => buf.extend_from_slice(b"null"),
        (
            Some(Dv::I(v)),
            OutKind::Long {
                date_format: Some(f),
                nanos,
            },
        ) => {
            let s = if *nanos {
                f.format_nanos(i128::from(*v))
            } else {
                f.format_millis(*v)
            };
            write_json_str(buf, &s);
        }
        (Some(Dv::I(v)), _) => buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        (Some(Dv::U(v)), _) => buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        (Some(Dv::F(v)), OutKind::Float { single: true }) | (Some(Dv::F(v)), OutKind::Score) => {
            let _ = serde_json::to_writer(&mut *buf, &(*v as f32));
        }
        (Some(Dv::F(v)), _) => {
            let _ = serde_json::to_writer(&mut *buf, v);
        }
        (Some(Dv::S(s)), _) => write_json_str(buf, s),
    }
}

fn docvalue_json(
    idx: &Index,
    doc: &DocVersion,
    field: &str,
    format: Option<&str>,
) -> Option<Value> {
    let info = idx.mapping.fields.get(field)?;
    let slot = info.slot?;
    let vals: Vec<Value> = doc
        .values(slot)
        .map(|v| match (v, format) {
            (DvRef::I(x), _) if info.ty.is_date() => {
                let f = format
                    .filter(|f| *f != "use_field_mapping")
                    .map(DateFormat::new)
                    .unwrap_or_else(|| info.format.clone());
                json!(if info.ty == FieldType::DateNanos {
                    f.format_nanos(i128::from(x))
                } else {
                    f.format_millis(x)
                })
            }
            (DvRef::I(x), _) if info.ty == FieldType::Boolean => json!(x == 1),
            (v, Some(f)) if f.starts_with('#') || f.starts_with('0') => {
                let decimals = f.split_once('.').map(|(_, d)| d.len()).unwrap_or(0);
                let n = match v {
                    DvRef::I(x) => x as f64,
                    DvRef::U(x) => x as f64,
                    DvRef::F(x) => x,
                    DvRef::S(s) => return json!(s),
                };
                json!(format!("{n:.decimals$}"))
            }
            (DvRef::I(x), _) => json!(x),
            (DvRef::U(x), _) => json!(x),
            (DvRef::F(x), _) => json!(x),
            (DvRef::S(s), _) => json!(s),
        })
        .collect();
    if vals.is_empty() {
        None
    } else {
        Some(Value::Array(vals))
    }
}

impl SortedCache {
    /// Start position for a `search_after` key.
    fn after_pos(&self, after: &[Option<Dv>]) -> usize {
        self.entries
            .partition_point(|e| cmp_keys(&e.keys, after, &self.specs) != Ordering::Greater)
    }

    /// Renders a search response body.
    pub fn render(&self, st: &State, o: &PageOpts<'_>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256 + o.count * 512);
        buf.push(b'{');
        for (k, v) in &o.prefix {
            write_json_str(&mut buf, k);
            buf.push(b':');
            write_json_str(&mut buf, v);
            buf.push(b',');
        }
        buf.extend_from_slice(b"\"took\":");
        buf.extend_from_slice(itoa::Buffer::new().format(o.took).as_bytes());
        let shards = itoa::Buffer::new().format(self.total_shards).to_string();
        buf.extend_from_slice(format!(",\"timed_out\":false,\"_shards\":{{\"total\":{shards},\"successful\":{shards},\"skipped\":0,\"failed\":0}},\"hits\":{{").as_bytes());
        let total = self.entries.len() as u64;
        match o.req.track_total {
            TrackTotal::Off => {
                if o.req.total_as_int {
                    buf.extend_from_slice(b"\"total\":-1,");
                }
            }
            t => {
                let (v, rel) = match t {
                    TrackTotal::UpTo(n) if total > n => (n, "gte"),
                    _ => (total, "eq"),
                };
                if o.req.total_as_int {
                    buf.extend_from_slice(format!("\"total\":{v},").as_bytes());
                } else {
                    buf.extend_from_slice(
                        format!("\"total\":{{\"value\":{v},\"relation\":\"{rel}\"}},").as_bytes(),
                    );
                }
            }
        }
        buf.extend_from_slice(b"\"max_score\":");
        match self.max_score {
            Some(s) => {
                let _ = serde_json::to_writer(&mut buf, &s);
            }
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"hits\":[");
        let end = (o.start + o.count).min(self.entries.len());
        let start = o.start.min(end);
        let omit = o.omit.min((end - start).saturating_sub(2));
        let mut n = 0usize;
        for (i, e) in self.entries[start..end].iter().enumerate() {
            if omit > 0 && i >= 1 && i < 1 + omit {
                continue;
            }
            let (ti, sno) = self.shard_map[(e.sd >> 32) as usize];
            let Some(idx) = st.indices.get(&self.target_names[ti as usize]) else {
                continue;
            };
            let Some(doc) = idx
                .shards
                .get(sno as usize)
                .and_then(|s| s.docs.get((e.sd & 0xFFFF_FFFF) as usize))
            else {
                continue;
            };
            if n > 0 {
                buf.push(b',');
            }
            n += 1;
            buf.extend_from_slice(b"{\"_index\":");
            write_json_str(&mut buf, &idx.name);
            if !o.req.stored_none {
                buf.extend_from_slice(b",\"_id\":");
                write_json_str(&mut buf, &doc.id);
            }
            if o.req.version {
                buf.extend_from_slice(format!(",\"_version\":{}", doc.version).as_bytes());
            }
            if o.req.seq_no_primary_term {
                buf.extend_from_slice(
                    format!(",\"_seq_no\":{},\"_primary_term\":1", doc.born).as_bytes(),
                );
            }
            buf.extend_from_slice(b",\"_score\":");
            if self.score_null {
                buf.extend_from_slice(b"null");
            } else {
                let _ = serde_json::to_writer(&mut buf, &e.score);
            }
            if !o.req.source.disabled && !o.req.no_source && !o.req.stored_none {
                buf.extend_from_slice(b",\"_source\":");
                if o.req.source.passthrough() {
                    buf.extend_from_slice(&doc.source);
                } else {
                    let parsed: Value = serde_json::from_slice(&doc.source).unwrap_or(Value::Null);
                    let _ = serde_json::to_writer(&mut buf, &o.req.source.apply(&parsed));
                }
            }
            if !o.req.docvalue_fields.is_empty() {
                let mut fields = Map::new();
                for (f, fmt) in &o.req.docvalue_fields {
                    if let Some(v) = docvalue_json(idx, doc, f, fmt.as_deref()) {
                        fields.insert(f.clone(), v);
                    }
                }
                if !fields.is_empty() {
                    buf.extend_from_slice(b",\"fields\":");
                    let _ = serde_json::to_writer(&mut buf, &fields);
                }
            }
            if !self.specs.is_empty() {
                buf.extend_from_slice(b",\"sort\":[");
                for (i, ((k, out), spec)) in
                    e.keys.iter().zip(&self.out).zip(&self.specs).enumerate()
                {
                    if i > 0 {
                        buf.push(b',');
                    }
                    write_sort_value(&mut buf, k, out, spec);
                }
                buf.push(b']');
            }
            buf.push(b'}');
        }
        buf.extend_from_slice(b"]}");
        if let Some(a) = &self.aggs {
            buf.extend_from_slice(b",\"aggregations\":");
            let _ = serde_json::to_writer(&mut buf, a);
        }
        buf.push(b'}');
        buf
    }
}

/// Faults that change a search response.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchFaults {
    /// Return fewer hits than the page should have.
    pub short_page: bool,
    /// Rotate the PIT id (ES).
    pub rotate_pit: bool,
}

fn encode_ctx(magic: &[u8; 4], key: u64) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut payload = Vec::with_capacity(28);
    payload.extend_from_slice(magic);
    payload.extend_from_slice(&key.to_le_bytes());
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    payload.extend_from_slice(&salt);
    base64::engine::general_purpose::URL_SAFE.encode(payload)
}

/// Decodes a context id; `None` when it is not one of ours.
pub fn decode_ctx(magic: &[u8; 4], id: &str) -> Option<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(id.trim())
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id.trim().trim_end_matches('='))
        })
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(id.trim()))
        .ok()?;
    if bytes.len() < 12 || &bytes[..4] != magic {
        return None;
    }
    Some(u64::from_le_bytes(bytes[4..12].try_into().ok()?))
}

/// Magic of PIT ids.
pub const PIT_MAGIC: &[u8; 4] = b"sPIT";
/// Magic of scroll ids.
pub const SCROLL_MAGIC: &[u8; 4] = b"sSCR";

/// Result of a search: status and body.
pub type Rendered = (u16, Vec<u8>);

impl Cluster {
    fn keep_alive_check(
        &self,
        st: &State,
        ka: &str,
        setting: &str,
        default_max: i64,
    ) -> ApiResult<i64> {
        let ms = crate::timeval::parse_time_millis(ka).ok_or_else(|| {
            ApiError::illegal(format!("failed to parse setting [keep_alive] with value [{ka}] as a time value: unit is missing or unrecognized"))
        })?;
        let max = st.cluster_time_ms(setting, default_max);
        if ms > max {
            return Err(ApiError::shard_failure(
                400,
                "illegal_argument_exception",
                format!(
                    "Keep alive for request ({}) is too large. It must be less than ({}). This limit can be set by changing the [{setting}] cluster level setting.",
                    crate::timeval::format_time(ms),
                    crate::timeval::format_time(max)
                ),
                None,
            ));
        }
        Ok(ms)
    }

    /// Resolves a PIT id to its key, or the 400/404 the servers answer.
    pub(crate) fn pit_key(&self, st: &State, id: &str) -> ApiResult<u64> {
        let Some(raw) = decode_ctx(PIT_MAGIC, id) else {
            return Err(ApiError::illegal(format!("invalid id: [{id}]")));
        };
        let now = std::time::Instant::now();
        match st.pit_ids.get(id).and_then(|k| st.pits.get(k)) {
            Some(p) if p.expires > now => Ok(p.key),
            _ => Err(ApiError::context_missing(&raw.to_string())),
        }
    }

    /// `_search` (with or without PIT, opening a scroll when `scroll` is set).
    pub fn search(
        &self,
        path_indices: Option<&str>,
        params: &HashMap<String, String>,
        body: Option<&Value>,
        faults: SearchFaults,
    ) -> ApiResult<Rendered> {
        let started = std::time::Instant::now();
        self.reap();
        let req = SearchRequest::parse(params, body)?;
        let specs = self.validate(&req, path_indices.is_some_and(|p| !p.is_empty()))?;
        if let Some(pit) = req.pit.clone() {
            return self.search_pit(&req, &specs, &pit, faults, started);
        }
        let opts = crate::cluster::IndicesOptions::from_params(params, Default::default());
        let st = self.inner.state.read();
        let names = st.resolve(path_indices.unwrap_or("_all"), opts)?;
        let targets: Vec<SnapTarget> = names
            .iter()
            .filter_map(|n| st.indices.get(n))
            .map(|i| SnapTarget {
                index: i.name.clone(),
                uuid: i.uuid.clone(),
                watermarks: i.shards.iter().map(|s| s.refreshed).collect(),
            })
            .collect();
        self.index_limits(&st, &targets, &req)?;
        if let Some(ka) = &req.scroll {
            let ka_ms = self.keep_alive_check(&st, ka, "search.max_keep_alive", 86_400_000)?;
            let max_open = st.cluster_u64("search.max_open_scroll_context", 500) as usize;
            if st.scrolls.len() >= max_open {
                let ty = self.rejected_type();
                return Err(ApiError::new(
                    429,
                    ty,
                    format!(
                        "Trying to create too many scroll contexts. Must be less than or equal to: [{max_open}]. This limit can be set by changing the [search.max_open_scroll_context] setting."
                    ),
                ));
            }
            let sorted = Arc::new(self.collect(&st, &targets, &req, &specs)?);
            let key = self.next_key();
            let id = encode_ctx(SCROLL_MAGIC, key);
            let count = req.size;
            let omit = self.short_page_omit(faults.short_page, count, sorted.entries.len());
            let body = sorted.render(
                &st,
                &PageOpts {
                    prefix: vec![("_scroll_id", id.clone())],
                    start: 0,
                    count,
                    omit,
                    req: &req,
                    took: started.elapsed().as_millis() as u64,
                },
            );
            drop(st);
            let mut stw = self.inner.state.write();
            stw.scrolls.insert(
                key,
                crate::cluster::Scroll {
                    key,
                    targets,
                    hits: sorted,
                    pos: count,
                    size: req.size,
                    request: Arc::new(req),
                    expires: std::time::Instant::now()
                        + std::time::Duration::from_millis(ka_ms.max(0) as u64),
                },
            );
            return Ok((200, body));
        }
        let sorted = self.sorted(&st, None, &targets, &req, &specs)?;
        let start = self.page_start(&st, &sorted, req.search_after.as_ref(), req.from)?;
        let count = req.size;
        let omit = self.short_page_omit(
            faults.short_page,
            count,
            sorted.entries.len().saturating_sub(start),
        );
        let body = sorted.render(
            &st,
            &PageOpts {
                prefix: vec![],
                start,
                count,
                omit,
                req: &req,
                took: started.elapsed().as_millis() as u64,
            },
        );
        Ok((200, body))
    }

    fn parse_after_locked(
        &self,
        st: &State,
        cache: &SortedCache,
        after: &[Value],
    ) -> ApiResult<Vec<Option<Dv>>> {
        // field formats need the mapping; resolve them from the locked state
        let mut fixed: Vec<Value> = after.to_vec();
        for (i, spec) in cache.specs.iter().enumerate() {
            if let (
                SortSpec::Field {
                    field,
                    format: None,
                    ..
                },
                Some(Value::String(s)),
                OutKind::Long { nanos, .. },
            ) = (spec, fixed.get(i).cloned(), &cache.out[i])
            {
                let fmt = cache.target_names.iter().find_map(|n| {
                    st.indices
                        .get(n)
                        .and_then(|x| x.mapping.fields.get(field))
                        .map(|x| x.format.clone())
                });
                if let Some(n) = fmt.and_then(|f| f.parse_nanos(&s)) {
                    fixed[i] = json!(if *nanos {
                        n as i64
                    } else {
                        n.div_euclid(1_000_000) as i64
                    });
                }
            }
        }
        self.parse_after(st, cache, &fixed)
    }

    fn rejected_type(&self) -> &'static str {
        match self.flavor() {
            crate::Flavor::OpenSearch => "rejected_execution_exception",
            crate::Flavor::Elasticsearch => "es_rejected_execution_exception",
        }
    }

    fn search_pit(
        &self,
        req: &SearchRequest,
        specs: &[SortSpec],
        pit: &PitRef,
        faults: SearchFaults,
        started: std::time::Instant,
    ) -> ApiResult<Rendered> {
        let (key, targets, ka_ms) = {
            let st = self.inner.state.read();
            let key = self.pit_key(&st, &pit.id)?;
            let ka_ms = match &pit.keep_alive {
                Some(ka) => Some(self.keep_alive_check(
                    &st,
                    ka,
                    self.pit_keep_alive_setting(),
                    86_400_000,
                )?),
                None => None,
            };
            let p = &st.pits[&key];
            for t in &p.targets {
                match st.indices.get(&t.index) {
                    Some(i) if i.uuid == t.uuid => {}
                    _ => return Err(ApiError::context_missing(&key.to_string())),
                }
            }
            (key, p.targets.clone(), ka_ms)
        };
        let mut response_id = pit.id.clone();
        {
            let mut st = self.inner.state.write();
            if let Some(p) = st.pits.get_mut(&key) {
                // like ReaderContext.keepAlive: the keep-alive only grows; every access restarts it
                if let Some(ka) = ka_ms {
                    p.keep_alive_ms = p.keep_alive_ms.max(ka);
                }
                p.expires = std::time::Instant::now()
                    + std::time::Duration::from_millis(p.keep_alive_ms.max(0) as u64);
            }
            if faults.rotate_pit && self.flavor() == crate::Flavor::Elasticsearch {
                response_id = encode_ctx(PIT_MAGIC, key);
                st.pit_ids.insert(response_id.clone(), key);
                self.count_fault("pit_id_rotation");
            }
        }
        let st = self.inner.state.read();
        self.index_limits(&st, &targets, req)?;
        let sorted = self.sorted(&st, Some(key), &targets, req, specs)?;
        let start = self.page_start(&st, &sorted, req.search_after.as_ref(), req.from)?;
        let count = req.size;
        let omit = self.short_page_omit(
            faults.short_page,
            count,
            sorted.entries.len().saturating_sub(start),
        );
        let body = sorted.render(
            &st,
            &PageOpts {
                prefix: vec![("pit_id", response_id)],
                start,
                count,
                omit,
                req,
                took: started.elapsed().as_millis() as u64,
            },
        );
        Ok((200, body))
    }

    /// Where a page starts: after the `search_after` key, else at `from`.
    fn page_start(
        &self,
        st: &State,
        sorted: &SortedCache,
        search_after: Option<&Vec<Value>>,
        from: usize,
    ) -> ApiResult<usize> {
        Ok(match search_after {
            Some(after) => {
                let keys = self.parse_after_locked(st, sorted, after)?;
                sorted.after_pos(&keys)
            }
            None => from,
        })
    }

    /// Hits the `short_page` fault leaves out of a page of `count` with `remaining` hits left
    /// (0 when the fault did not fire or the page is too small to have a middle).
    fn short_page_omit(&self, fired: bool, count: usize, remaining: usize) -> usize {
        if fired && count.min(remaining) > 2 {
            self.count_fault("short_page");
            count.min(remaining) / 2
        } else {
            0
        }
    }

    fn pit_keep_alive_setting(&self) -> &'static str {
        match self.flavor() {
            crate::Flavor::OpenSearch => "point_in_time.max_keep_alive",
            crate::Flavor::Elasticsearch => "search.max_keep_alive",
        }
    }

    /// `_search/scroll`: the next page of a scroll.
    pub fn scroll(
        &self,
        scroll_id: &str,
        keep_alive: Option<&str>,
        total_as_int: Option<bool>,
        faults: SearchFaults,
    ) -> ApiResult<Rendered> {
        let started = std::time::Instant::now();
        self.reap();
        let Some(key) = decode_ctx(SCROLL_MAGIC, scroll_id) else {
            return Err(ApiError::illegal("Cannot parse scroll id"));
        };
        let mut st = self.inner.state.write();
        let ka_ms = match keep_alive {
            Some(ka) => {
                Some(self.keep_alive_check(&st, ka, "search.max_keep_alive", 86_400_000)?)
            }
            None => None,
        };
        let Some(sc) = st.scrolls.get_mut(&key) else {
            return Err(ApiError::context_missing(&key.to_string()));
        };
        if let Some(ka) = ka_ms {
            sc.expires =
                std::time::Instant::now() + std::time::Duration::from_millis(ka.max(0) as u64);
        }
        let start = sc.pos;
        let count = sc.size;
        let mut omit = 0;
        if faults.short_page && count.min(sc.hits.entries.len().saturating_sub(start)) > 2 {
            omit = count.min(sc.hits.entries.len() - start) / 2;
        }
        sc.pos = (start + count).min(sc.hits.entries.len().max(start));
        let hits = sc.hits.clone();
        let mut req = (*sc.request).clone();
        if let Some(b) = total_as_int {
            req.total_as_int = b;
            if b {
                req.track_total = TrackTotal::Exact;
            }
        }
        drop(st);
        if omit > 0 {
            self.count_fault("short_page");
        }
        let st = self.inner.state.read();
        let body = hits.render(
            &st,
            &PageOpts {
                prefix: vec![("_scroll_id", scroll_id.to_string())],
                start,
                count,
                omit,
                req: &req,
                took: started.elapsed().as_millis() as u64,
            },
        );
        Ok((200, body))
    }

    /// Clears scrolls; `None` clears all. Returns (status, body).
    pub fn clear_scroll(&self, ids: Option<Vec<String>>) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let freed = match ids {
            None => {
                let n = st.scrolls.len();
                st.scrolls.clear();
                n
            }
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    let Some(k) = decode_ctx(SCROLL_MAGIC, &id) else {
                        return Err(ApiError::illegal("Cannot parse scroll id"));
                    };
                    if st.scrolls.remove(&k).is_some() {
                        n += 1;
                    }
                }
                n
            }
        };
        Ok(json!({"succeeded": true, "num_freed": freed}))
    }

    /// Opens a PIT on `index_expr`.
    pub fn open_pit(&self, index_expr: &str, params: &HashMap<String, String>) -> ApiResult<Value> {
        self.reap();
        let Some(ka) = params.get("keep_alive") else {
            return Err(ApiError::validation(&["keep alive not specified".into()]));
        };
        let mut st = self.inner.state.write();
        let ka_ms = self
            .keep_alive_check(&st, ka, self.pit_keep_alive_setting(), 86_400_000)
            .map_err(|e| {
                // PIT creation reports the keep-alive problem directly
                let reason = e.body["error"]["root_cause"][0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ApiError::illegal(reason)
            })?;
        let limit = self
            .faults()
            .max_open_pits
            .unwrap_or_else(|| st.cluster_u64("search.max_open_pit_context", 300) as usize);
        if st.pits.len() >= limit {
            if self.faults().max_open_pits.is_some() {
                self.count_fault("max_open_pits");
            }
            let ty = self.rejected_type();
            let msg = match self.flavor() {
                crate::Flavor::OpenSearch => format!(
                    "Trying to create too many Point In Time contexts. Must be less than or equal to: [{limit}]. This limit can be set by changing the [search.max_open_pit_context] setting."
                ),
                crate::Flavor::Elasticsearch => format!(
                    "Trying to create too many search contexts. Must be less than or equal to: [{limit}]. This limit can be set by changing the [search.max_open_pit_context] setting."
                ),
            };
            return Err(ApiError::new(429, ty, msg));
        }
        let opts = crate::cluster::IndicesOptions::from_params(params, Default::default());
        let names = st.resolve(index_expr, opts)?;
        let targets: Vec<SnapTarget> = names
            .iter()
            .filter_map(|n| st.indices.get(n))
            .map(|i| SnapTarget {
                index: i.name.clone(),
                uuid: i.uuid.clone(),
                watermarks: i.shards.iter().map(|s| s.refreshed).collect(),
            })
            .collect();
        let shards: usize = targets.iter().map(|t| t.watermarks.len()).sum();
        let key = self.next_key();
        let id = encode_ctx(PIT_MAGIC, key);
        let created_ms = chrono::Utc::now().timestamp_millis();
        st.pits.insert(
            key,
            crate::cluster::Pit {
                key,
                id: id.clone(),
                targets,
                keep_alive_ms: ka_ms,
                expires: std::time::Instant::now()
                    + std::time::Duration::from_millis(ka_ms.max(0) as u64),
                created_ms,
            },
        );
        st.pit_ids.insert(id.clone(), key);
        let shards_json = json!({"total": shards, "successful": shards, "skipped": 0, "failed": 0});
        Ok(match self.flavor() {
            crate::Flavor::OpenSearch => {
                json!({"pit_id": id, "_shards": shards_json, "creation_time": created_ms})
            }
            crate::Flavor::Elasticsearch => json!({"id": id, "_shards": shards_json}),
        })
    }

    /// Closes PITs by id; returns the ids that existed (and whether each was one of ours).
    pub fn close_pits(&self, ids: &[String]) -> ApiResult<Vec<(String, bool)>> {
        let mut st = self.inner.state.write();
        let mut out = Vec::new();
        let mut removed = Vec::new();
        for id in ids {
            if decode_ctx(PIT_MAGIC, id).is_none() {
                return Err(ApiError::illegal(format!("invalid id: [{id}]")));
            }
            let freed = match st.pit_ids.get(id).copied() {
                Some(k) => {
                    let existed = st.pits.remove(&k).is_some();
                    st.pit_ids.retain(|_, v| *v != k);
                    removed.push(k);
                    existed
                }
                None => false,
            };
            out.push((id.clone(), freed));
        }
        drop(st);
        self.inner
            .cache
            .lock()
            .retain(|k| !removed.contains(&k.ctx));
        Ok(out)
    }

    /// Closes every PIT; returns their ids.
    pub fn close_all_pits(&self) -> Vec<String> {
        let mut st = self.inner.state.write();
        let ids: Vec<String> = st.pits.values().map(|p| p.id.clone()).collect();
        st.pits.clear();
        st.pit_ids.clear();
        drop(st);
        self.inner.cache.lock().clear();
        ids
    }

    /// Lists open PITs (OpenSearch `GET /_search/point_in_time/_all`).
    pub fn list_pits(&self) -> Value {
        self.reap();
        let st = self.inner.state.read();
        let mut pits: Vec<&crate::cluster::Pit> = st.pits.values().collect();
        pits.sort_by_key(|p| p.key);
        json!({"pits": pits.iter().map(|p| json!({"pit_id": p.id, "creation_time": p.created_ms, "keep_alive": p.keep_alive_ms})).collect::<Vec<_>>()})
    }

    /// `_count`.
    pub fn count(
        &self,
        path_indices: Option<&str>,
        params: &HashMap<String, String>,
        body: Option<&Value>,
    ) -> ApiResult<Value> {
        let mut query = Query::MatchAll;
        if let Some(Value::Object(b)) = body {
            for (k, v) in b {
                match k.as_str() {
                    "query" => query = Query::parse(v)?,
                    other => {
                        return Err(ApiError::parsing(format!(
                            "request does not support [{other}]"
                        )));
                    }
                }
            }
        }
        if let Some(q) = params.get("q")
            && let Some((f, v)) = q.split_once(':')
        {
            query = Query::Match {
                field: f.to_string(),
                query: json!(v),
                and: false,
                phrase: false,
            };
        }
        let now = chrono::Utc::now().timestamp_millis();
        let opts = crate::cluster::IndicesOptions::from_params(params, Default::default());
        let st = self.inner.state.read();
        let names = st.resolve(path_indices.unwrap_or("_all"), opts)?;
        let mut count = 0u64;
        let mut shards = 0usize;
        for n in &names {
            let Some(idx) = st.indices.get(n) else {
                continue;
            };
            let pred = query.compile(&idx.name, &idx.mapping, now);
            for s in &idx.shards {
                shards += 1;
                if !pred.may_match(&s.bounds) {
                    continue;
                }
                count += s
                    .docs
                    .iter()
                    .filter(|d| d.visible(s.refreshed) && pred.matches(&EvalDoc::new(d)))
                    .count() as u64;
            }
        }
        Ok(
            json!({"count": count, "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_filtering_like_upstream() {
        let src = json!({"include": {"field1": "v1", "field2": "v2"}, "count": 1});
        let f = SourceFilter {
            includes: vec!["include.field1".into()],
            ..Default::default()
        };
        assert_eq!(f.apply(&src), json!({"include": {"field1": "v1"}}));
        let f = SourceFilter {
            excludes: vec!["count".into()],
            ..Default::default()
        };
        assert_eq!(
            f.apply(&src),
            json!({"include": {"field1": "v1", "field2": "v2"}})
        );
        let f = SourceFilter {
            includes: vec!["include".into()],
            excludes: vec!["*.field2".into()],
            ..Default::default()
        };
        assert_eq!(f.apply(&src), json!({"include": {"field1": "v1"}}));
        let f = SourceFilter {
            includes: vec!["include.field1".into(), "include.field2".into()],
            ..Default::default()
        };
        assert_eq!(
            f.apply(&src),
            json!({"include": {"field1": "v1", "field2": "v2"}})
        );
    }

    #[test]
    fn sort_parsing() {
        let s = parse_sort(&json!([{"age": "desc"}, {"id": {"order": "asc", "missing": "_first"}}, "_doc", "_shard_doc", "_score"])).unwrap();
        assert_eq!(s.len(), 5);
        assert!(matches!(&s[0], SortSpec::Field { desc: true, .. }));
        assert!(matches!(
            &s[1],
            SortSpec::Field {
                desc: false,
                missing: Missing::First,
                ..
            }
        ));
        assert!(matches!(s[2], SortSpec::Doc { desc: false }));
        assert!(matches!(s[3], SortSpec::ShardDoc { desc: false }));
        assert!(matches!(s[4], SortSpec::Score { desc: true }));
    }

    #[test]
    fn missing_ordering() {
        let a = Some(Dv::I(1));
        assert_eq!(cmp_key(&None, &a, false, true), Ordering::Greater);
        assert_eq!(cmp_key(&None, &a, true, true), Ordering::Greater);
        assert_eq!(cmp_key(&None, &a, false, false), Ordering::Less);
        assert_eq!(cmp_key(&Some(Dv::I(2)), &a, true, true), Ordering::Less);
    }

    #[test]
    fn ctx_ids_round_trip() {
        let id = encode_ctx(PIT_MAGIC, 42);
        assert_eq!(decode_ctx(PIT_MAGIC, &id), Some(42));
        assert_eq!(decode_ctx(SCROLL_MAGIC, &id), None);
        assert_eq!(decode_ctx(PIT_MAGIC, "not-an-id!"), None);
    }
}

#[cfg(test)]
mod paging_tests {
    use super::*;
    use crate::Config;

    fn cluster(config: Config) -> Cluster {
        let c = Cluster::new(config);
        c.create_index(
            "p",
            json!({"settings": {"number_of_shards": 3}, "mappings": {"properties": {
                "a": {"type": "long"}, "k": {"type": "keyword"}, "d": {"type": "date"}}}}),
        )
        .unwrap();
        for i in 0..300u64 {
            // a: many ties and some missing values; k: keyword with missing values
            let mut doc = json!({"d": 1_709_251_200_000u64 + (i % 17) * 1000});
            if i % 7 != 0 {
                doc["a"] = json!((i * 31) % 13);
            }
            if i % 5 != 0 {
                doc["k"] = json!(format!("k{}", (i * 7) % 11));
            }
            c.index_doc(
                "p",
                Some(&format!("id{i}")),
                serde_json::to_vec(&doc).unwrap(),
            )
            .unwrap();
        }
        c.refresh_all();
        c
    }

    fn run(c: &Cluster, path: Option<&str>, body: Value) -> Value {
        let (st, b) = c
            .search(path, &HashMap::new(), Some(&body), SearchFaults::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st, 200);
        serde_json::from_slice(&b).unwrap()
    }

    fn page_all(c: &Cluster, pit: &str, sort: &Value, size: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({"pit": {"id": pit}, "size": size, "sort": sort});
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let r = run(c, None, body);
            let hits = r["hits"]["hits"].as_array().unwrap();
            if hits.is_empty() {
                return out;
            }
            out.extend(hits.iter().map(|h| h["_id"].as_str().unwrap().to_string()));
            after = Some(hits.last().unwrap()["sort"].clone());
        }
    }

    #[test]
    fn search_after_paging_equals_one_full_sort() {
        let sorts = [
            json!([{"a": "asc"}, "_shard_doc"]),
            json!([{"a": {"order": "desc", "missing": "_first"}}, {"k": "asc"}, "_shard_doc"]),
            json!([{"k": {"order": "desc"}}, {"d": "asc"}, {"_shard_doc": {"order": "desc"}}]),
            json!([{"d": {"order": "asc", "format": "strict_date_optional_time"}}, "_shard_doc"]),
        ];
        let c = cluster(Config::opensearch_3());
        let pit = c
            .open_pit(
                "p",
                &HashMap::from([("keep_alive".to_string(), "1m".to_string())]),
            )
            .unwrap();
        let pit = pit["pit_id"].as_str().unwrap().to_string();
        for sort in &sorts {
            let full = run(
                &c,
                None,
                json!({"pit": {"id": pit}, "size": 1000, "sort": sort}),
            );
            let expected: Vec<String> = full["hits"]["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(expected.len(), 300);
            for size in [1, 7, 64] {
                assert_eq!(
                    page_all(&c, &pit, sort, size),
                    expected,
                    "sort {sort} size {size}"
                );
            }
        }
        // the same on Elasticsearch, where the tiebreaker is implicit
        let c = cluster(Config::elasticsearch());
        let pit = c
            .open_pit(
                "p",
                &HashMap::from([("keep_alive".to_string(), "1m".to_string())]),
            )
            .unwrap();
        let pit = pit["id"].as_str().unwrap().to_string();
        let sort = json!([{"a": "asc"}, {"k": "desc"}]);
        let full = run(
            &c,
            None,
            json!({"pit": {"id": pit}, "size": 1000, "sort": sort}),
        );
        let expected: Vec<String> = full["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(page_all(&c, &pit, &sort, 9), expected);
        // a full sort really is sorted: `a` ascending with missing last
        let a_vals: Vec<Option<i64>> = full["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_source"]["a"].as_i64())
            .collect();
        let firsts: Vec<i64> = a_vals.iter().flatten().copied().collect();
        assert!(firsts.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            a_vals
                .iter()
                .skip_while(|v| v.is_some())
                .all(Option::is_none)
        );
    }

    #[test]
    fn sort_on_id_pages_in_byte_order_on_opensearch() {
        let c = cluster(Config::opensearch());
        let mut all: Vec<String> = (0..300).map(|i| format!("id{i}")).collect();
        all.sort();
        // plain search: sort values are the ids
        let r = run(
            &c,
            Some("p"),
            json!({"size": 3, "sort": [{"_id": "asc"}], "track_total_hits": true}),
        );
        assert_eq!(r["hits"]["total"]["value"], json!(300));
        let hits = r["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits[0]["sort"], json!(["id0"]));
        assert_eq!(hits[1]["sort"], json!(["id1"]));
        assert_eq!(hits[2]["sort"], json!(["id10"]));
        let pit = c
            .open_pit(
                "p",
                &HashMap::from([("keep_alive".to_string(), "1m".to_string())]),
            )
            .unwrap();
        let pit = pit["pit_id"].as_str().unwrap().to_string();
        for size in [1, 7, 100] {
            assert_eq!(page_all(&c, &pit, &json!([{"_id": "asc"}]), size), all);
        }
        let mut desc = all.clone();
        desc.reverse();
        assert_eq!(page_all(&c, &pit, &json!([{"_id": "desc"}]), 13), desc);
        // combined with another field: k first (missing last), then _id
        let full = run(
            &c,
            None,
            json!({"pit": {"id": pit}, "size": 1000, "sort": [{"k": "asc"}, {"_id": "asc"}]}),
        );
        let expected: Vec<String> = full["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(expected.len(), 300);
        let keys: Vec<(Option<String>, String)> = full["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["sort"][0].as_str().map(str::to_string),
                    h["sort"][1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y).then(a.1.cmp(&b.1)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        assert_eq!(keys, sorted);
        assert_eq!(
            page_all(&c, &pit, &json!([{"k": "asc"}, {"_id": "asc"}]), 9),
            expected
        );
        // slices partition the ids
        let mut union = Vec::new();
        for id in 0..3 {
            let r = run(
                &c,
                None,
                json!({"pit": {"id": pit}, "size": 1000, "slice": {"id": id, "max": 3}, "sort": [{"_id": "asc"}]}),
            );
            let ids: Vec<String> = r["hits"]["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["_id"].as_str().unwrap().to_string())
                .collect();
            let mut s = ids.clone();
            s.sort();
            assert_eq!(ids, s, "slice {id} is in _id order");
            union.extend(ids);
        }
        union.sort();
        assert_eq!(union, all);
    }

    #[test]
    fn sort_on_id_is_refused_on_elasticsearch_8_unless_enabled() {
        let c = cluster(Config::elasticsearch());
        let err = c
            .search(
                Some("p"),
                &HashMap::new(),
                Some(&json!({"sort": [{"_id": "asc"}]})),
                SearchFaults::default(),
            )
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(
            err.body["error"]["root_cause"][0]["type"],
            json!("illegal_argument_exception")
        );
        assert_eq!(
            err.body["error"]["root_cause"][0]["reason"],
            json!(ID_FIELD_DATA)
        );
        c.put_cluster_settings_api(&json!({"persistent": {"indices.id_field_data.enabled": true}}))
            .unwrap();
        let r = run(&c, Some("p"), json!({"size": 2, "sort": [{"_id": "asc"}]}));
        assert_eq!(r["hits"]["hits"][0]["sort"], json!(["id0"]));
        assert_eq!(r["hits"]["hits"][1]["sort"], json!(["id1"]));
        // and OpenSearch refuses once the setting is turned off
        let os = cluster(Config::opensearch());
        os.put_cluster_settings_api(
            &json!({"transient": {"indices": {"id_field_data": {"enabled": "false"}}}}),
        )
        .unwrap();
        let err = os
            .search(
                Some("p"),
                &HashMap::new(),
                Some(&json!({"sort": [{"_id": "asc"}]})),
                SearchFaults::default(),
            )
            .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn pit_pages_reuse_the_cached_sorted_list() {
        let c = cluster(Config::opensearch_3());
        let pit = c
            .open_pit(
                "p",
                &HashMap::from([("keep_alive".to_string(), "1m".to_string())]),
            )
            .unwrap();
        let pit = pit["pit_id"].as_str().unwrap().to_string();
        let body = json!({"pit": {"id": pit}, "size": 5, "sort": ["_shard_doc"]});
        run(&c, None, body.clone());
        assert_eq!(c.inner.cache.lock().items.len(), 1);
        let first = c.inner.cache.lock().items[0].1.clone();
        run(&c, None, body);
        assert!(
            Arc::ptr_eq(&first, &c.inner.cache.lock().items[0].1),
            "second page hit the cache"
        );
        c.close_all_pits();
        assert!(
            c.inner.cache.lock().items.is_empty(),
            "closing the PIT drops its cache"
        );
    }
}
