//! The query DSL subset: parsing (`match_all`, `match_none`, `term`, `terms`, `range`, `bool`,
//! `exists`, `ids`, `match`, `match_phrase`, `prefix`, `wildcard`, `constant_score`), compiling
//! against one index's mapping, and evaluating on a document version — on doc values when the
//! field has them, on the lazily parsed `_source` otherwise.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::cluster::{DocVersion, SlotBounds, wildcard_match};
use crate::error::{ApiError, ApiResult};
use crate::mapping::{Dv, DvRef, FieldInfo, FieldType, Mapping, to_dv};
use crate::timeval::{DateFormat, parse_date_math};

/// A parsed query.
#[derive(Debug, Clone)]
pub enum Query {
    /// Every document.
    MatchAll,
    /// No document.
    MatchNone,
    /// Exact value.
    Term {
        field: String,
        value: Value,
        case_insensitive: bool,
    },
    /// Any of these values.
    Terms { field: String, values: Vec<Value> },
    /// Range.
    Range {
        field: String,
        gt: Option<Value>,
        gte: Option<Value>,
        lt: Option<Value>,
        lte: Option<Value>,
        format: Option<String>,
    },
    /// Boolean combination.
    Bool {
        must: Vec<Query>,
        filter: Vec<Query>,
        should: Vec<Query>,
        must_not: Vec<Query>,
        msm: Option<Value>,
    },
    /// Field has a value.
    Exists { field: String },
    /// `_id` in a set.
    Ids(Vec<String>),
    /// Full-text match (simple tokenizer).
    Match {
        field: String,
        query: Value,
        and: bool,
        phrase: bool,
    },
    /// Prefix on a keyword.
    Prefix { field: String, value: String },
    /// Wildcard on a keyword.
    Wildcard { field: String, value: String },
}

fn single_field<'a>(name: &str, v: &'a Value) -> ApiResult<(&'a String, &'a Value)> {
    let obj = v.as_object().ok_or_else(|| {
        ApiError::parsing(format!(
            "[{name}] query malformed, no start_object after query name"
        ))
    })?;
    let mut it = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "boost" && k.as_str() != "_name");
    let first = it
        .next()
        .ok_or_else(|| ApiError::parsing(format!("[{name}] query malformed, no field")))?;
    if it.next().is_some() {
        return Err(ApiError::parsing(format!(
            "[{name}] query doesn't support multiple fields, found [{}] and more",
            first.0
        )));
    }
    Ok(first)
}

fn clauses(v: Option<&Value>) -> ApiResult<Vec<Query>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(Query::parse).collect(),
        Some(o @ Value::Object(_)) => Ok(vec![Query::parse(o)?]),
        Some(_) => Err(ApiError::parsing("[bool] query malformed clause")),
    }
}

impl Query {
    /// Parses a query object such as `{"term":{"f":"v"}}`.
    pub fn parse(v: &Value) -> ApiResult<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::parsing("query malformed, must start with start_object"))?;
        if obj.len() != 1 {
            if obj.is_empty() {
                return Ok(Query::MatchAll);
            }
            let keys: Vec<&String> = obj.keys().collect();
            return Err(ApiError::parsing(format!(
                "[{}] malformed query, expected [END_OBJECT] but found [FIELD_NAME]",
                keys[0]
            )));
        }
        let (name, body) = obj.iter().next().expect("one key");
        Ok(match name.as_str() {
            "match_all" => Query::MatchAll,
            "match_none" => Query::MatchNone,
            "term" => {
                let (f, val) = single_field(name, body)?;
                let (value, ci) = match val {
                    Value::Object(o) => (
                        o.get("value").cloned().ok_or_else(|| {
                            ApiError::parsing("[term] query does not support value")
                        })?,
                        o.get("case_insensitive")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    ),
                    other => (other.clone(), false),
                };
                Query::Term {
                    field: f.clone(),
                    value,
                    case_insensitive: ci,
                }
            }
            "terms" => {
                let (f, val) = single_field(name, body)?;
                let values = val.as_array().cloned().ok_or_else(|| {
                    ApiError::parsing("[terms] query requires an array of values")
                })?;
                Query::Terms {
                    field: f.clone(),
                    values,
                }
            }
            "range" => {
                let (f, val) = single_field(name, body)?;
                let o = val
                    .as_object()
                    .ok_or_else(|| ApiError::parsing("[range] query malformed"))?;
                let mut q = (None, None, None, None);
                let mut format = None;
                let incl_lower = o
                    .get("include_lower")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let incl_upper = o
                    .get("include_upper")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                for (k, v) in o {
                    match k.as_str() {
                        "gt" => q.0 = Some(v.clone()),
                        "gte" => q.1 = Some(v.clone()),
                        "lt" => q.2 = Some(v.clone()),
                        "lte" => q.3 = Some(v.clone()),
                        "from" if !v.is_null() => {
                            if incl_lower {
                                q.1 = Some(v.clone())
                            } else {
                                q.0 = Some(v.clone())
                            }
                        }
                        "to" if !v.is_null() => {
                            if incl_upper {
                                q.3 = Some(v.clone())
                            } else {
                                q.2 = Some(v.clone())
                            }
                        }
                        "format" => format = v.as_str().map(str::to_string),
                        "from" | "to" | "include_lower" | "include_upper" | "boost"
                        | "time_zone" | "relation" | "_name" => {}
                        other => {
                            return Err(ApiError::parsing(format!(
                                "[range] query does not support [{other}]"
                            )));
                        }
                    }
                }
                let q = (
                    q.0.filter(|v| !v.is_null()),
                    q.1.filter(|v| !v.is_null()),
                    q.2.filter(|v| !v.is_null()),
                    q.3.filter(|v| !v.is_null()),
                );
                Query::Range {
                    field: f.clone(),
                    gt: q.0,
                    gte: q.1,
                    lt: q.2,
                    lte: q.3,
                    format,
                }
            }
            "bool" => {
                let o = body
                    .as_object()
                    .ok_or_else(|| ApiError::parsing("[bool] query malformed"))?;
                for k in o.keys() {
                    if ![
                        "must",
                        "filter",
                        "should",
                        "must_not",
                        "minimum_should_match",
                        "boost",
                        "_name",
                        "adjust_pure_negative",
                    ]
                    .contains(&k.as_str())
                    {
                        return Err(ApiError::parsing(format!(
                            "[bool] query does not support [{k}]"
                        )));
                    }
                }
                Query::Bool {
                    must: clauses(o.get("must"))?,
                    filter: clauses(o.get("filter"))?,
                    should: clauses(o.get("should"))?,
                    must_not: clauses(o.get("must_not"))?,
                    msm: o.get("minimum_should_match").cloned(),
                }
            }
            "constant_score" => {
                let f = body.get("filter").ok_or_else(|| {
                    ApiError::parsing("[constant_score] requires a 'filter' element")
                })?;
                Query::Bool {
                    must: vec![],
                    filter: vec![Query::parse(f)?],
                    should: vec![],
                    must_not: vec![],
                    msm: None,
                }
            }
            "exists" => {
                let f = body
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::parsing("[exists] must be provided with a [field]"))?;
                Query::Exists {
                    field: f.to_string(),
                }
            }
            "ids" => {
                let vals = body
                    .get("values")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                Query::Ids(
                    vals.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect(),
                )
            }
            "match" | "match_phrase" | "match_bool_prefix" => {
                let (f, val) = single_field(name, body)?;
                let (query, and) = match val {
                    Value::Object(o) => (
                        o.get("query").cloned().ok_or_else(|| {
                            ApiError::parsing(format!("[{name}] requires query value"))
                        })?,
                        o.get("operator")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s.eq_ignore_ascii_case("and")),
                    ),
                    other => (other.clone(), false),
                };
                Query::Match {
                    field: f.clone(),
                    query,
                    and: and || name == "match_phrase",
                    phrase: name == "match_phrase",
                }
            }
            "prefix" | "wildcard" => {
                let (f, val) = single_field(name, body)?;
                let value = match val {
                    Value::Object(o) => o
                        .get("value")
                        .or_else(|| o.get("wildcard"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if name == "prefix" {
                    Query::Prefix {
                        field: f.clone(),
                        value,
                    }
                } else {
                    Query::Wildcard {
                        field: f.clone(),
                        value,
                    }
                }
            }
            other => {
                return Err(ApiError::with_extra(
                    400,
                    "parsing_exception",
                    format!("unknown query [{other}]"),
                    Map::from_iter([
                        ("line".to_string(), Value::from(1)),
                        ("col".to_string(), Value::from(1)),
                    ]),
                ));
            }
        })
    }

    /// Whether the query contributes to scores (else hits score 0.0).
    pub fn scoring(&self) -> bool {
        match self {
            Query::Bool { must, should, .. } => !must.is_empty() || !should.is_empty(),
            Query::MatchNone => false,
            _ => true,
        }
    }
}

/// Compiled predicate for one index.
#[derive(Debug)]
pub enum Pred {
    /// Always.
    All,
    /// Never.
    None,
    /// Some doc value of `slot` passes.
    Dv { slot: u32, test: DvTest },
    /// Some source value at `path` passes.
    Src { path: String, test: SrcTest },
    /// `_id` in set.
    Ids(HashSet<String>),
    /// Boolean.
    Bool {
        must: Vec<Pred>,
        should: Vec<Pred>,
        must_not: Vec<Pred>,
        msm: usize,
    },
}

/// A `term`/`terms` query on `_index`: the index name is the same for all of its documents.
fn index_pred(matches: bool) -> Pred {
    if matches { Pred::All } else { Pred::None }
}

/// Test on a doc value.
#[derive(Debug)]
pub enum DvTest {
    /// Any value present.
    Exists,
    /// Equal to one of.
    In(Vec<Dv>),
    /// Case-insensitive keyword equality.
    EqIgnoreCase(String),
    /// Range bounds `(value, inclusive)`.
    Range {
        lo: Option<(Dv, bool)>,
        hi: Option<(Dv, bool)>,
    },
    /// Keyword prefix.
    Prefix(String),
    /// Keyword wildcard.
    Wildcard(String),
}

/// Test on source values.
#[derive(Debug)]
pub enum SrcTest {
    /// Path has a non-null value.
    Exists,
    /// Tokens; all (`and`) or any must be present.
    Tokens { tokens: Vec<String>, and: bool },
    /// Some token starts with.
    Prefix(String),
    /// Some token matches the wildcard.
    Wildcard(String),
}

/// Lower-cased alphanumeric tokens, like the standard analyzer (roughly).
pub fn tokenize(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Marks which of the (lower-case) `wanted` tokens occur in `text`, without allocating for
/// tokens that are already lower case.
fn mark_tokens(text: &str, wanted: &[String], found: &mut [bool]) {
    for tok in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        let lower = if tok.chars().any(char::is_uppercase) {
            std::borrow::Cow::Owned(tok.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(tok)
        };
        for (i, w) in wanted.iter().enumerate() {
            if !found[i] && *w == *lower {
                found[i] = true;
            }
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compares doc values of the same kind (numbers across kinds).
pub fn dv_cmp(a: DvRef<'_>, b: DvRef<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (DvRef::I(x), DvRef::I(y)) => x.cmp(&y),
        (DvRef::U(x), DvRef::U(y)) => x.cmp(&y),
        (DvRef::S(x), DvRef::S(y)) => x.cmp(y),
        (DvRef::S(_), _) => Ordering::Greater,
        (_, DvRef::S(_)) => Ordering::Less,
        (DvRef::I(x), DvRef::U(y)) => {
            if x < 0 {
                Ordering::Less
            } else {
                (x as u64).cmp(&y)
            }
        }
        (DvRef::U(x), DvRef::I(y)) => {
            if y < 0 {
                Ordering::Greater
            } else {
                x.cmp(&(y as u64))
            }
        }
        (x, y) => num(x).partial_cmp(&num(y)).unwrap_or(Ordering::Equal),
    }
}

fn num(d: DvRef<'_>) -> f64 {
    match d {
        DvRef::I(v) => v as f64,
        DvRef::U(v) => v as f64,
        DvRef::F(v) => v,
        DvRef::S(_) => f64::NAN,
    }
}

/// Converts a query value to a doc value for `info` (dates through date math).
pub fn query_dv(
    info: &FieldInfo,
    v: &Value,
    format: Option<&str>,
    now_ms: i64,
    round_up: bool,
) -> Option<Dv> {
    if info.ty.is_date() {
        let fmt = format
            .map(DateFormat::new)
            .unwrap_or_else(|| info.format.clone());
        let ms = match v {
            Value::Number(n) if format.is_none() => n.as_i64()?,
            Value::Number(n) => fmt.parse_millis(&n.to_string()).or_else(|| n.as_i64())?,
            Value::String(s) => parse_date_math(s, &fmt, now_ms, round_up)
                .or_else(|| info.format.parse_millis(s))
                .or_else(|| DateFormat::default().parse_millis(s))?,
            _ => return None,
        };
        return Some(Dv::I(if info.ty == FieldType::DateNanos {
            ms.saturating_mul(1_000_000)
        } else {
            ms
        }));
    }
    match info.ty {
        // query values are not rounded to the field precision for comparisons
        FieldType::Double | FieldType::Float | FieldType::HalfFloat => match v {
            Value::Number(n) => n.as_f64().map(Dv::F),
            Value::String(s) => s.parse().ok().map(Dv::F),
            _ => None,
        },
        FieldType::Long => match v {
            Value::Number(n) if n.is_i64() => n.as_i64().map(Dv::I),
            Value::Number(n) => n.as_f64().map(Dv::F),
            Value::String(s) => s
                .parse::<i64>()
                .ok()
                .map(Dv::I)
                .or_else(|| s.parse::<f64>().ok().map(Dv::F)),
            _ => None,
        },
        _ => to_dv(info, v),
    }
}

impl Query {
    /// Compiles the query for an index mapping.
    pub fn compile(&self, index: &str, mapping: &Mapping, now_ms: i64) -> Pred {
        let field = |f: &str| mapping.fields.get(f);
        match self {
            Query::MatchAll => Pred::All,
            Query::MatchNone => Pred::None,
            Query::Ids(ids) => Pred::Ids(ids.iter().cloned().collect()),
            Query::Exists { field: f } => match field(f) {
                Some(info) if info.slot.is_some() => Pred::Dv {
                    slot: info.slot.unwrap_or_default(),
                    test: DvTest::Exists,
                },
                Some(_) => Pred::Src {
                    path: f.clone(),
                    test: SrcTest::Exists,
                },
                None => {
                    // object paths: any sub-field
                    let prefix = format!("{f}.");
                    if mapping.fields.keys().any(|k| k.starts_with(&prefix)) {
                        Pred::Src {
                            path: f.clone(),
                            test: SrcTest::Exists,
                        }
                    } else {
                        Pred::None
                    }
                }
            },
            Query::Term {
                field: f,
                value,
                case_insensitive,
            } => match field(f) {
                Some(info) if info.ty == FieldType::Text => Pred::Src {
                    path: info.source_path.clone(),
                    test: SrcTest::Tokens {
                        tokens: vec![value_text(value)],
                        and: true,
                    },
                },
                Some(info) => match info.slot {
                    Some(slot) if *case_insensitive => Pred::Dv {
                        slot,
                        test: DvTest::EqIgnoreCase(value_text(value)),
                    },
                    Some(slot) => match query_dv(info, value, None, now_ms, false) {
                        Some(dv) => Pred::Dv {
                            slot,
                            test: DvTest::In(vec![dv]),
                        },
                        None => Pred::None,
                    },
                    None => Pred::None,
                },
                None if f == "_id" => Pred::Ids([value_text(value)].into_iter().collect()),
                None if f == "_index" => index_pred(index == value_text(value)),
                None => Pred::None,
            },
            Query::Terms { field: f, values } => match field(f) {
                Some(info) if info.ty == FieldType::Text => Pred::Bool {
                    must: vec![],
                    should: values
                        .iter()
                        .map(|v| Pred::Src {
                            path: info.source_path.clone(),
                            test: SrcTest::Tokens {
                                tokens: vec![value_text(v)],
                                and: true,
                            },
                        })
                        .collect(),
                    must_not: vec![],
                    msm: 1,
                },
                Some(info) => match info.slot {
                    Some(slot) => Pred::Dv {
                        slot,
                        test: DvTest::In(
                            values
                                .iter()
                                .filter_map(|v| query_dv(info, v, None, now_ms, false))
                                .collect(),
                        ),
                    },
                    None => Pred::None,
                },
                None if f == "_id" => Pred::Ids(values.iter().map(value_text).collect()),
                None if f == "_index" => index_pred(values.iter().any(|v| index == value_text(v))),
                None => Pred::None,
            },
            Query::Range {
                field: f,
                gt,
                gte,
                lt,
                lte,
                format,
            } => match field(f).and_then(|i| i.slot.map(|s| (i, s))) {
                Some((info, slot)) => {
                    let fmt = format.as_deref();
                    let lo = match (gt, gte) {
                        (Some(v), _) => query_dv(info, v, fmt, now_ms, true).map(|d| (d, false)),
                        (None, Some(v)) => query_dv(info, v, fmt, now_ms, false).map(|d| (d, true)),
                        _ => None,
                    };
                    let hi = match (lt, lte) {
                        (Some(v), _) => query_dv(info, v, fmt, now_ms, false).map(|d| (d, false)),
                        (None, Some(v)) => query_dv(info, v, fmt, now_ms, true).map(|d| (d, true)),
                        _ => None,
                    };
                    let unparsable = (gt.is_some() || gte.is_some()) && lo.is_none()
                        || (lt.is_some() || lte.is_some()) && hi.is_none();
                    if unparsable {
                        Pred::None
                    } else {
                        Pred::Dv {
                            slot,
                            test: DvTest::Range { lo, hi },
                        }
                    }
                }
                None => Pred::None,
            },
            Query::Bool {
                must,
                filter,
                should,
                must_not,
                msm,
            } => {
                let mut m: Vec<Pred> = must
                    .iter()
                    .chain(filter)
                    .map(|q| q.compile(index, mapping, now_ms))
                    .collect();
                let s: Vec<Pred> = should
                    .iter()
                    .map(|q| q.compile(index, mapping, now_ms))
                    .collect();
                let n: Vec<Pred> = must_not
                    .iter()
                    .map(|q| q.compile(index, mapping, now_ms))
                    .collect();
                let default_msm = if m.is_empty() && !s.is_empty() { 1 } else { 0 };
                let msm = match msm {
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .map(|v| {
                            if v < 0 {
                                (s.len() as i64 + v).max(0)
                            } else {
                                v
                            }
                        })
                        .unwrap_or(0) as usize,
                    Some(Value::String(p)) if p.ends_with('%') => {
                        let pct: f64 = p.trim_end_matches('%').parse().unwrap_or(0.0);
                        let v = (s.len() as f64 * pct.abs() / 100.0).floor() as usize;
                        if pct < 0.0 { s.len() - v } else { v }
                    }
                    Some(Value::String(p)) => p
                        .parse::<i64>()
                        .map(|v| {
                            if v < 0 {
                                (s.len() as i64 + v).max(0) as usize
                            } else {
                                v as usize
                            }
                        })
                        .unwrap_or(default_msm),
                    _ => default_msm,
                };
                if m.is_empty() && s.is_empty() && n.is_empty() {
                    m.push(Pred::All);
                }
                Pred::Bool {
                    must: m,
                    should: s,
                    must_not: n,
                    msm,
                }
            }
            Query::Match {
                field: f,
                query,
                and,
                ..
            } => match field(f) {
                Some(info) if info.ty == FieldType::Text => {
                    let tokens = tokenize(&value_text(query));
                    if tokens.is_empty() {
                        Pred::None
                    } else {
                        Pred::Src {
                            path: info.source_path.clone(),
                            test: SrcTest::Tokens { tokens, and: *and },
                        }
                    }
                }
                Some(info) => match (info.slot, query_dv(info, query, None, now_ms, false)) {
                    (Some(slot), Some(dv)) => Pred::Dv {
                        slot,
                        test: DvTest::In(vec![dv]),
                    },
                    _ => Pred::None,
                },
                None if f == "_id" => Pred::Ids([value_text(query)].into_iter().collect()),
                None => Pred::None,
            },
            Query::Prefix { field: f, value } | Query::Wildcard { field: f, value } => {
                let is_prefix = matches!(self, Query::Prefix { .. });
                match field(f) {
                    Some(info) if info.ty == FieldType::Text => Pred::Src {
                        path: info.source_path.clone(),
                        test: if is_prefix {
                            SrcTest::Prefix(value.to_lowercase())
                        } else {
                            SrcTest::Wildcard(value.to_lowercase())
                        },
                    },
                    Some(info) => match info.slot {
                        Some(slot) => Pred::Dv {
                            slot,
                            test: if is_prefix {
                                DvTest::Prefix(value.clone())
                            } else {
                                DvTest::Wildcard(value.clone())
                            },
                        },
                        None => Pred::None,
                    },
                    None => Pred::None,
                }
            }
        }
    }
}

/// Values of a dotted path in a parsed source (arrays flattened).
pub fn source_values<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => {
            for i in items {
                source_values(i, path, out);
            }
        }
        Value::Object(o) => {
            if path.is_empty() {
                out.push(v);
                return;
            }
            if let Some(x) = o.get(path) {
                source_values(x, "", out);
            }
            // dotted keys: try every split point
            for (i, _) in path.match_indices('.') {
                if let Some(x) = o.get(&path[..i]) {
                    source_values(x, &path[i + 1..], out);
                }
            }
        }
        other => {
            if path.is_empty() {
                out.push(other);
            }
        }
    }
}

/// Top-level fields of a source, values left unparsed.
type RawTop<'a> = std::collections::HashMap<&'a str, &'a serde_json::value::RawValue>;

/// A document during evaluation, with its source parsed on first need: first only the
/// top-level keys (values stay raw), then just the fields a predicate looks at.
pub struct EvalDoc<'a> {
    /// The version.
    pub doc: &'a DocVersion,
    parsed: OnceCell<Value>,
    top: OnceCell<Option<RawTop<'a>>>,
}

impl<'a> EvalDoc<'a> {
    /// Wraps a version.
    pub fn new(doc: &'a DocVersion) -> Self {
        Self {
            doc,
            parsed: OnceCell::new(),
            top: OnceCell::new(),
        }
    }

    /// The parsed source.
    pub fn source(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_slice(&self.doc.source).unwrap_or(Value::Null))
    }

    /// Values at a dotted path (arrays flattened), parsing only the top-level entries the
    /// path can start with.
    pub fn path_values(&self, path: &str) -> Vec<Value> {
        // keys with escapes cannot be borrowed: those sources take the full parse
        let top = self
            .top
            .get_or_init(|| serde_json::from_slice::<RawTop<'a>>(&self.doc.source).ok());
        let mut out = Vec::new();
        match top {
            Some(top) => {
                let mut push = |raw: &serde_json::value::RawValue, rest: &str| {
                    if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
                        let mut refs = Vec::new();
                        source_values(&v, rest, &mut refs);
                        out.extend(refs.into_iter().cloned());
                    }
                };
                if let Some(raw) = top.get(path) {
                    push(raw, "");
                }
                for (i, _) in path.match_indices('.') {
                    if let Some(raw) = top.get(&path[..i]) {
                        push(raw, &path[i + 1..]);
                    }
                }
            }
            None => {
                let mut refs = Vec::new();
                source_values(self.source(), path, &mut refs);
                out.extend(refs.into_iter().cloned());
            }
        }
        out
    }
}

impl Pred {
    /// Whether some document of a shard with these slot bounds could match: `false` only when
    /// a required range or `exists` test cannot be met by any value the shard holds. Used to
    /// skip whole shards, so it must never say `false` for a shard with a matching document.
    pub fn may_match(&self, bounds: &HashMap<u32, SlotBounds>) -> bool {
        match self {
            Pred::None => false,
            Pred::Dv { slot, test } => match (test, bounds.get(slot)) {
                // no version in the shard ever had a value in this slot
                (DvTest::Exists | DvTest::Range { .. }, None) => false,
                (DvTest::Range { lo, hi }, Some(SlotBounds::Numeric(min, max))) => {
                    let above_lo = lo.as_ref().is_none_or(|(b, inc)| {
                        let c = dv_cmp(max.as_ref(), b.as_ref());
                        c.is_gt() || (*inc && c.is_eq())
                    });
                    let below_hi = hi.as_ref().is_none_or(|(b, inc)| {
                        let c = dv_cmp(min.as_ref(), b.as_ref());
                        c.is_lt() || (*inc && c.is_eq())
                    });
                    above_lo && below_hi
                }
                _ => true,
            },
            Pred::Bool {
                must, should, msm, ..
            } => {
                must.iter().all(|p| p.may_match(bounds))
                    && should.iter().filter(|p| p.may_match(bounds)).count() >= *msm
            }
            Pred::All | Pred::Src { .. } | Pred::Ids(_) => true,
        }
    }

    /// Evaluates on a document.
    pub fn matches(&self, d: &EvalDoc<'_>) -> bool {
        match self {
            Pred::All => true,
            Pred::None => false,
            Pred::Ids(ids) => ids.contains(&*d.doc.id),
            Pred::Dv { slot, test } => {
                let mut vals = d.doc.values(*slot).peekable();
                match test {
                    DvTest::Exists => vals.peek().is_some(),
                    DvTest::In(set) => {
                        vals.any(|v| set.iter().any(|s| dv_cmp(v, s.as_ref()).is_eq()))
                    }
                    DvTest::EqIgnoreCase(s) => {
                        vals.any(|v| matches!(v, DvRef::S(x) if x.eq_ignore_ascii_case(s)))
                    }
                    DvTest::Range { lo, hi } => vals.any(|v| {
                        let lo_ok = lo.as_ref().is_none_or(|(b, inc)| {
                            let c = dv_cmp(v, b.as_ref());
                            c.is_gt() || (*inc && c.is_eq())
                        });
                        let hi_ok = hi.as_ref().is_none_or(|(b, inc)| {
                            let c = dv_cmp(v, b.as_ref());
                            c.is_lt() || (*inc && c.is_eq())
                        });
                        lo_ok && hi_ok
                    }),
                    DvTest::Prefix(p) => {
                        vals.any(|v| matches!(v, DvRef::S(x) if x.starts_with(p.as_str())))
                    }
                    DvTest::Wildcard(p) => {
                        vals.any(|v| matches!(v, DvRef::S(x) if wildcard_match(p, x)))
                    }
                }
            }
            Pred::Src { path, test } => {
                let vals = d.path_values(path);
                match test {
                    SrcTest::Exists => vals.iter().any(|v| !v.is_null()),
                    SrcTest::Tokens { tokens, and } => {
                        let wanted: Vec<String> = tokens.iter().map(|t| t.to_lowercase()).collect();
                        let mut found = vec![false; wanted.len()];
                        for v in &vals {
                            let text = match v {
                                Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                                other => std::borrow::Cow::Owned(value_text(other)),
                            };
                            mark_tokens(&text, &wanted, &mut found);
                        }
                        if *and {
                            found.iter().all(|f| *f)
                        } else {
                            found.iter().any(|f| *f)
                        }
                    }
                    SrcTest::Prefix(p) => vals
                        .iter()
                        .flat_map(|v| tokenize(&value_text(v)))
                        .any(|t| t.starts_with(p.as_str())),
                    SrcTest::Wildcard(p) => vals
                        .iter()
                        .flat_map(|v| tokenize(&value_text(v)))
                        .any(|t| wildcard_match(p, &t)),
                }
            }
            Pred::Bool {
                must,
                should,
                must_not,
                msm,
            } => {
                must.iter().all(|p| p.matches(d))
                    && !must_not.iter().any(|p| p.matches(d))
                    && (*msm == 0 || should.iter().filter(|p| p.matches(d)).count() >= *msm)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn doc(m: &Mapping, id: &str, src: Value) -> DocVersion {
        DocVersion {
            id: id.into(),
            source: Bytes::from(serde_json::to_vec(&src).unwrap()),
            dv: crate::mapping::encode_dvs(&m.extract(&src)),
            born: 0,
            died: u64::MAX,
            version: 1,
        }
    }

    fn eval(q: Value, m: &Mapping, d: &DocVersion) -> bool {
        Query::parse(&q)
            .unwrap()
            .compile("test", m, 1_700_000_000_000)
            .matches(&EvalDoc::new(d))
    }

    /// Shard pruning must never skip a shard holding a match, and must skip shards whose
    /// values lie outside a required range.
    #[test]
    fn shard_bounds_prune_only_shards_without_matches() {
        let mut m = Mapping::from_json(&json!({"properties": {"ts": {"type": "date"},
            "n": {"type": "long"}, "x": {"type": "double"}, "level": {"type": "keyword"}}}))
        .unwrap();
        let srcs = [
            json!({"ts": "2024-03-01T10:00:00Z", "n": 5, "x": 1.5, "level": "INFO"}),
            json!({"ts": "2024-03-02T10:00:00Z", "n": -3, "x": 2.5, "level": "WARN"}),
            json!({"ts": "2024-03-03T10:00:00Z", "n": [7, 9], "level": "ERROR"}),
        ];
        for s in &srcs {
            m.apply_dynamic(s);
        }
        let mut shard = crate::cluster::Shard::default();
        let docs: Vec<DocVersion> = srcs
            .iter()
            .enumerate()
            .map(|(i, s)| doc(&m, &format!("d{i}"), s.clone()))
            .collect();
        let mut bounds = HashMap::new();
        for d in &docs {
            for (slot, v) in crate::mapping::decode_dvs(&d.dv) {
                let numeric = !matches!(v, DvRef::S(_));
                let e = bounds.entry(slot).or_insert_with(|| {
                    if numeric {
                        SlotBounds::Numeric(v.to_owned(), v.to_owned())
                    } else {
                        SlotBounds::Any
                    }
                });
                if let (true, SlotBounds::Numeric(lo, hi)) = (numeric, &mut *e) {
                    if dv_cmp(v, lo.as_ref()).is_lt() {
                        *lo = v.to_owned();
                    }
                    if dv_cmp(v, hi.as_ref()).is_gt() {
                        *hi = v.to_owned();
                    }
                } else if !numeric {
                    *e = SlotBounds::Any;
                }
            }
        }
        shard.bounds = bounds;
        let queries = [
            json!({"range": {"n": {"gte": 9}}}),
            json!({"range": {"n": {"gt": 9}}}),
            json!({"range": {"n": {"lte": -3}}}),
            json!({"range": {"n": {"lt": -3}}}),
            json!({"range": {"n": {"gte": 6, "lt": 7}}}),
            json!({"range": {"x": {"gt": 2.5}}}),
            json!({"range": {"x": {"gte": 2.5}}}),
            json!({"range": {"ts": {"gte": "2024-03-03", "lt": "2024-03-04"}}}),
            json!({"range": {"ts": {"gte": "2024-03-04"}}}),
            json!({"range": {"ts": {"lt": "2024-03-01"}}}),
            json!({"range": {"level": {"gte": "ERROR", "lte": "ERROR"}}}),
            json!({"range": {"level": {"gte": "ZZZ"}}}),
            json!({"exists": {"field": "zz"}}),
            json!({"range": {"zz": {"gte": 1}}}),
            json!({"bool": {"filter": [{"range": {"n": {"gte": 100}}}], "should": [{"match_all": {}}]}}),
            json!({"bool": {"should": [{"range": {"n": {"gte": 100}}}, {"range": {"x": {"lt": 0}}}]}}),
            json!({"bool": {"should": [{"range": {"n": {"gte": 100}}}, {"term": {"level": "INFO"}}]}}),
            json!({"bool": {"must_not": [{"range": {"n": {"gte": 100}}}]}}),
        ];
        let mut pruned = 0;
        for q in queries {
            let pred = Query::parse(&q)
                .unwrap()
                .compile("test", &m, 1_700_000_000_000);
            let any = docs.iter().any(|d| pred.matches(&EvalDoc::new(d)));
            let may = pred.may_match(&shard.bounds);
            assert!(
                may || !any,
                "{q} matches a document but the shard was pruned"
            );
            if !may {
                pruned += 1;
            }
        }
        assert_eq!(
            pruned, 9,
            "every query whose range misses the bounds is pruned"
        );
    }

    #[test]
    fn queries_evaluate() {
        let mut m = Mapping::from_json(
            &json!({"properties": {"ts": {"type": "date"}, "level": {"type": "keyword"}}}),
        )
        .unwrap();
        let src = json!({"ts": "2024-03-01T10:00:00Z", "level": "ERROR", "n": 5, "msg": "Hello brave World", "o": {"k": true}});
        m.apply_dynamic(&src);
        let d = doc(&m, "a1", src);
        assert!(eval(json!({"match_all": {}}), &m, &d));
        assert!(!eval(json!({"match_none": {}}), &m, &d));
        assert!(eval(json!({"term": {"level": "ERROR"}}), &m, &d));
        assert!(!eval(json!({"term": {"level": "error"}}), &m, &d));
        assert!(eval(
            json!({"term": {"level": {"value": "error", "case_insensitive": true}}}),
            &m,
            &d
        ));
        assert!(eval(json!({"terms": {"level": ["WARN", "ERROR"]}}), &m, &d));
        assert!(eval(json!({"range": {"n": {"gte": 5, "lt": 6}}}), &m, &d));
        assert!(!eval(json!({"range": {"n": {"gt": 5}}}), &m, &d));
        assert!(eval(
            json!({"range": {"ts": {"gte": "2024-03-01", "lt": "2024-03-02"}}}),
            &m,
            &d
        ));
        assert!(eval(
            json!({"range": {"ts": {"gte": 1709287200000u64, "format": "epoch_millis"}}}),
            &m,
            &d
        ));
        assert!(
            !eval(json!({"range": {"ts": {"lt": "now"}}}), &m, &d),
            "now is 2023-11"
        );
        assert!(eval(json!({"match": {"msg": "brave"}}), &m, &d));
        assert!(eval(json!({"match": {"msg": "world nothing"}}), &m, &d));
        assert!(!eval(
            json!({"match": {"msg": {"query": "world nothing", "operator": "and"}}}),
            &m,
            &d
        ));
        assert!(eval(json!({"exists": {"field": "o"}}), &m, &d));
        assert!(!eval(json!({"exists": {"field": "zz"}}), &m, &d));
        assert!(eval(json!({"ids": {"values": ["a1"]}}), &m, &d));
        assert!(eval(json!({"prefix": {"level": "ERR"}}), &m, &d));
        assert!(eval(
            json!({"wildcard": {"level": {"value": "E*R"}}}),
            &m,
            &d
        ));
        assert!(eval(
            json!({"bool": {"filter": [{"term": {"level": "ERROR"}}], "must_not": {"term": {"n": 4}}}}),
            &m,
            &d
        ));
        assert!(!eval(
            json!({"bool": {"should": [{"term": {"n": 1}}, {"term": {"n": 2}}]}}),
            &m,
            &d
        ));
        assert!(eval(
            json!({"bool": {"should": [{"term": {"n": 5}}, {"term": {"n": 2}}], "minimum_should_match": 1}}),
            &m,
            &d
        ));
        assert!(!eval(
            json!({"bool": {"should": [{"term": {"n": 5}}, {"term": {"n": 2}}], "minimum_should_match": 2}}),
            &m,
            &d
        ));
        assert!(Query::parse(&json!({"nope": {}})).is_err());
    }

    #[test]
    fn path_values_parse_only_what_is_needed() {
        let m = Mapping::default();
        let d = doc(
            &m,
            "x",
            json!({"o": {"k": [1, {"z": 2}], "t": "a"}, "a.b": "dotted", "arr": [{"v": 1}, {"v": 2}]}),
        );
        let e = EvalDoc::new(&d);
        assert_eq!(e.path_values("o.t"), vec![json!("a")]);
        assert_eq!(e.path_values("a.b"), vec![json!("dotted")]);
        assert_eq!(e.path_values("arr.v"), vec![json!(1), json!(2)]);
        assert!(e.path_values("missing").is_empty());
        // a key with an escape cannot be borrowed: falls back to the full parse
        let raw = DocVersion {
            id: "y".into(),
            source: Bytes::from_static(br#"{"q\"k":1,"msg":"hello world"}"#),
            dv: Box::new([]),
            born: 0,
            died: u64::MAX,
            version: 1,
        };
        assert_eq!(
            EvalDoc::new(&raw).path_values("msg"),
            vec![json!("hello world")]
        );
    }
}
