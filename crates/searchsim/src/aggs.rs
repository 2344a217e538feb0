//! Aggregations over the matching documents: `date_histogram` (fixed and calendar intervals,
//! `min_doc_count`, `extended_bounds`, `hard_bounds`, `format`, `keyed`), `histogram`, `terms`,
//! `min`, `max`, `avg`, `sum`, `stats`, `value_count`, `cardinality`, with sub-aggregations.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use crate::cluster::{DocVersion, Index};
use crate::error::{ApiError, ApiResult};
use crate::mapping::{DvRef, FieldInfo, FieldType};
use crate::timeval::{DateFormat, add_units, parse_time_millis, round_down};

/// A document with its index.
pub type AggDoc<'a> = (&'a Index, &'a DocVersion);

fn field_info<'a>(idx: &'a Index, field: &str) -> Option<&'a FieldInfo> {
    idx.mapping.fields.get(field).filter(|i| i.slot.is_some())
}

fn first_info<'a>(docs: &[AggDoc<'a>], field: &str) -> Option<&'a FieldInfo> {
    docs.iter().find_map(|(i, _)| field_info(i, field))
}

fn values<'a>(d: &AggDoc<'a>, field: &str) -> Vec<DvRef<'a>> {
    // `_index` is a constant per shard: aggregations and sorts need no fielddata for it.
    if field == "_index" {
        return vec![DvRef::S(d.0.name.as_str())];
    }
    match field_info(d.0, field).and_then(|i| i.slot) {
        Some(slot) => d.1.values(slot).collect(),
        None => Vec::new(),
    }
}

fn as_f64(v: DvRef<'_>) -> Option<f64> {
    match v {
        DvRef::I(x) => Some(x as f64),
        DvRef::U(x) => Some(x as f64),
        DvRef::F(x) => Some(x),
        DvRef::S(_) => None,
    }
}

fn dv_json(v: DvRef<'_>) -> Value {
    match v {
        DvRef::I(x) => json!(x),
        DvRef::U(x) => json!(x),
        DvRef::F(x) => json!(x),
        DvRef::S(s) => json!(s),
    }
}

/// Computes the aggregations of a request.
pub fn compute(docs: &[AggDoc<'_>], spec: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    let mut out = Map::new();
    for (name, def) in spec {
        let def = def
            .as_object()
            .ok_or_else(|| ApiError::parsing(format!("Expected [START_OBJECT] under [{name}]")))?;
        let sub = def
            .get("aggs")
            .or_else(|| def.get("aggregations"))
            .and_then(Value::as_object);
        let (kind, body) = def
            .iter()
            .find(|(k, _)| {
                k.as_str() != "aggs" && k.as_str() != "aggregations" && k.as_str() != "meta"
            })
            .ok_or_else(|| {
                ApiError::parsing(format!("Missing definition for aggregation [{name}]"))
            })?;
        let field = body
            .get("field")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let result = match kind.as_str() {
            "date_histogram" => date_histogram(docs, body, field, sub)?,
            "histogram" => histogram(docs, body, field, sub)?,
            "terms" => terms(docs, body, field, sub)?,
            "min" | "max" | "avg" | "sum" | "stats" => metric(docs, kind, field),
            "value_count" => {
                json!({"value": docs.iter().map(|d| values(d, field).len()).sum::<usize>()})
            }
            "cardinality" => {
                let mut seen = HashSet::new();
                for d in docs {
                    for v in values(d, field) {
                        seen.insert(dv_json(v).to_string());
                    }
                }
                json!({"value": seen.len()})
            }
            "filters" => filters(docs, body, sub)?,
            "filter" => {
                let kept = matching(
                    docs,
                    &Value::Object(body.as_object().cloned().unwrap_or_default()),
                )?;
                let mut o = Map::new();
                o.insert("doc_count".into(), json!(kept.len()));
                if let Some(s) = sub {
                    o.extend(compute(&kept, s)?);
                }
                Value::Object(o)
            }
            other => {
                return Err(ApiError::parsing(format!(
                    "Unknown aggregation type [{other}] did you mean [terms]?"
                )));
            }
        };
        out.insert(name.clone(), result);
    }
    Ok(out)
}

/// The documents matching a query.
fn matching<'a>(docs: &[AggDoc<'a>], query: &Value) -> ApiResult<Vec<AggDoc<'a>>> {
    let q = crate::query::Query::parse(query)?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(docs
        .iter()
        .filter(|(i, d)| {
            q.compile(&i.name, &i.mapping, now)
                .matches(&crate::query::EvalDoc::new(d))
        })
        .copied()
        .collect())
}

/// `filters`: one bucket per named (object form) or listed (array form) query.
fn filters(
    docs: &[AggDoc<'_>],
    body: &Value,
    sub: Option<&Map<String, Value>>,
) -> ApiResult<Value> {
    let bucket = |q: &Value| -> ApiResult<Value> {
        let kept = matching(docs, q)?;
        let mut o = Map::new();
        o.insert("doc_count".into(), json!(kept.len()));
        if let Some(s) = sub {
            o.extend(compute(&kept, s)?);
        }
        Ok(Value::Object(o))
    };
    match body.get("filters") {
        Some(Value::Object(named)) => {
            let mut buckets = Map::new();
            for (key, q) in named {
                buckets.insert(key.clone(), bucket(q)?);
            }
            Ok(json!({"buckets": buckets}))
        }
        Some(Value::Array(listed)) => {
            let buckets: ApiResult<Vec<Value>> = listed.iter().map(bucket).collect();
            Ok(json!({"buckets": buckets?}))
        }
        _ => Err(ApiError::parsing(
            "[filters] requires an object or an array of queries",
        )),
    }
}

fn metric(docs: &[AggDoc<'_>], kind: &str, field: &str) -> Value {
    let info = first_info(docs, field);
    let nums: Vec<f64> = docs
        .iter()
        .flat_map(|d| values(d, field).into_iter().filter_map(as_f64))
        .collect();
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for v in &nums {
        min = min.min(*v);
        max = max.max(*v);
        sum += v;
    }
    let fmt = |v: f64| -> Option<String> {
        info.filter(|i| i.ty.is_date()).map(|i| {
            let ms = if i.ty == FieldType::DateNanos {
                (v / 1e6) as i64
            } else {
                v as i64
            };
            i.format.format_millis(ms)
        })
    };
    let single = |v: Option<f64>| {
        let mut o = Map::new();
        o.insert("value".into(), v.map_or(Value::Null, |x| json!(x)));
        if let Some(s) = v.and_then(fmt) {
            o.insert("value_as_string".into(), json!(s));
        }
        Value::Object(o)
    };
    let n = nums.len();
    match kind {
        "min" => single((n > 0).then_some(min)),
        "max" => single((n > 0).then_some(max)),
        "avg" => single((n > 0).then(|| sum / n as f64)),
        "sum" => json!({"value": sum}),
        _ => json!({
            "count": n,
            "min": if n > 0 { json!(min) } else { Value::Null },
            "max": if n > 0 { json!(max) } else { Value::Null },
            "avg": if n > 0 { json!(sum / n as f64) } else { Value::Null },
            "sum": sum,
        }),
    }
}

enum Interval {
    Fixed(i64),
    Calendar(char),
    Quarter,
}

impl Interval {
    fn round(&self, ms: i64) -> i64 {
        match self {
            Interval::Fixed(i) => ms.div_euclid(*i) * i,
            Interval::Calendar(u) => round_down(ms, *u),
            Interval::Quarter => {
                let m = round_down(ms, 'M');
                let month = chrono::DateTime::from_timestamp_millis(m)
                    .map(|d| chrono::Datelike::month0(&d))
                    .unwrap_or(0);
                add_units(m, -i64::from(month % 3), 'M')
            }
        }
    }

    fn next(&self, key: i64) -> i64 {
        match self {
            Interval::Fixed(i) => key + i,
            Interval::Calendar(u) => add_units(key, 1, *u),
            Interval::Quarter => add_units(key, 3, 'M'),
        }
    }
}

fn calendar(s: &str) -> Option<Interval> {
    Some(match s {
        "minute" | "1m" => Interval::Calendar('m'),
        "hour" | "1h" => Interval::Calendar('h'),
        "day" | "1d" => Interval::Calendar('d'),
        "week" | "1w" => Interval::Calendar('w'),
        "month" | "1M" => Interval::Calendar('M'),
        "quarter" | "1q" => Interval::Quarter,
        "year" | "1y" => Interval::Calendar('y'),
        "second" | "1s" => Interval::Calendar('s'),
        _ => return None,
    })
}

fn bound(v: Option<&Value>, key: &str, fmt: &DateFormat) -> Option<i64> {
    let b = v?.get(key)?;
    match b {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            crate::timeval::parse_date_math(s, fmt, chrono::Utc::now().timestamp_millis(), false)
        }
        _ => None,
    }
}

fn date_histogram(
    docs: &[AggDoc<'_>],
    body: &Value,
    field: &str,
    sub: Option<&Map<String, Value>>,
) -> ApiResult<Value> {
    let interval = if let Some(c) = body.get("calendar_interval").and_then(Value::as_str) {
        calendar(c).ok_or_else(|| {
            ApiError::illegal(format!(
                "The supplied interval [{c}] could not be parsed as a calendar interval."
            ))
        })?
    } else if let Some(f) = body.get("fixed_interval").and_then(Value::as_str) {
        Interval::Fixed(
            parse_time_millis(f)
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::illegal(format!("failed to parse setting [date_histogram.fixedInterval] with value [{f}] as a time value")))?,
        )
    } else if let Some(i) = body.get("interval").and_then(Value::as_str) {
        calendar(i)
            .or_else(|| parse_time_millis(i).map(Interval::Fixed))
            .ok_or_else(|| ApiError::illegal(format!("Unable to parse interval [{i}]")))?
    } else {
        return Err(ApiError::illegal(
            "Invalid interval specified, must be non-null and non-empty",
        ));
    };
    let info = first_info(docs, field);
    let nanos = info.is_some_and(|i| i.ty == FieldType::DateNanos);
    let fmt = body
        .get("format")
        .and_then(Value::as_str)
        .map(DateFormat::new)
        .or_else(|| info.map(|i| i.format.clone()))
        .unwrap_or_default();
    let min_doc_count = body
        .get("min_doc_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let keyed = body.get("keyed").and_then(Value::as_bool).unwrap_or(false);
    let hard_min = bound(body.get("hard_bounds"), "min", &fmt);
    let hard_max = bound(body.get("hard_bounds"), "max", &fmt);
    let mut buckets: BTreeMap<i64, Vec<AggDoc<'_>>> = BTreeMap::new();
    for d in docs {
        let mut keys = HashSet::new();
        for v in values(d, field) {
            let DvRef::I(raw) = v else { continue };
            let ms = if nanos {
                raw.div_euclid(1_000_000)
            } else {
                raw
            };
            if hard_min.is_some_and(|m| ms < m) || hard_max.is_some_and(|m| ms > m) {
                continue;
            }
            keys.insert(interval.round(ms));
        }
        for k in keys {
            buckets.entry(k).or_default().push(*d);
        }
    }
    if min_doc_count == 0 {
        let ext_min = bound(body.get("extended_bounds"), "min", &fmt).map(|v| interval.round(v));
        let ext_max = bound(body.get("extended_bounds"), "max", &fmt).map(|v| interval.round(v));
        let lo = [buckets.keys().next().copied(), ext_min]
            .into_iter()
            .flatten()
            .min();
        let hi = [buckets.keys().next_back().copied(), ext_max]
            .into_iter()
            .flatten()
            .max();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let mut k = lo;
            let mut guard = 0;
            while k <= hi && guard < 100_000 {
                buckets.entry(k).or_default();
                k = interval.next(k);
                guard += 1;
            }
        }
    }
    let mut list = Vec::new();
    let mut keyed_map = Map::new();
    for (k, ds) in &buckets {
        if (ds.len() as u64) < min_doc_count {
            continue;
        }
        let mut b = Map::new();
        let ks = fmt.format_millis(*k);
        b.insert("key_as_string".into(), json!(ks));
        b.insert("key".into(), json!(k));
        b.insert("doc_count".into(), json!(ds.len()));
        if let Some(s) = sub {
            b.extend(compute(ds, s)?);
        }
        if keyed {
            keyed_map.insert(ks, Value::Object(b));
        } else {
            list.push(Value::Object(b));
        }
    }
    Ok(if keyed {
        json!({"buckets": keyed_map})
    } else {
        json!({"buckets": list})
    })
}

fn histogram(
    docs: &[AggDoc<'_>],
    body: &Value,
    field: &str,
    sub: Option<&Map<String, Value>>,
) -> ApiResult<Value> {
    let interval = body
        .get("interval")
        .and_then(Value::as_f64)
        .filter(|v| *v > 0.0)
        .ok_or_else(|| {
            ApiError::illegal("[interval] must be >0 for histogram aggregation [histogram]")
        })?;
    let min_doc_count = body
        .get("min_doc_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut buckets: BTreeMap<i64, Vec<AggDoc<'_>>> = BTreeMap::new();
    for d in docs {
        let mut keys = HashSet::new();
        for v in values(d, field).into_iter().filter_map(as_f64) {
            keys.insert((v / interval).floor() as i64);
        }
        for k in keys {
            buckets.entry(k).or_default().push(*d);
        }
    }
    if min_doc_count == 0
        && let (Some(lo), Some(hi)) = (
            buckets.keys().next().copied(),
            buckets.keys().next_back().copied(),
        )
    {
        for k in lo..=hi {
            buckets.entry(k).or_default();
        }
    }
    let mut list = Vec::new();
    for (k, ds) in &buckets {
        if (ds.len() as u64) < min_doc_count {
            continue;
        }
        let mut b = Map::new();
        b.insert("key".into(), json!(*k as f64 * interval));
        b.insert("doc_count".into(), json!(ds.len()));
        if let Some(s) = sub {
            b.extend(compute(ds, s)?);
        }
        list.push(Value::Object(b));
    }
    Ok(json!({"buckets": list}))
}

fn terms(
    docs: &[AggDoc<'_>],
    body: &Value,
    field: &str,
    sub: Option<&Map<String, Value>>,
) -> ApiResult<Value> {
    let size = body.get("size").and_then(Value::as_u64).unwrap_or(10) as usize;
    let min_doc_count = body
        .get("min_doc_count")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    if let Some(info) = docs.iter().find_map(|(i, _)| i.mapping.fields.get(field))
        && info.ty == FieldType::Text
    {
        return Err(ApiError::illegal(format!(
            "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{field}] in order to load field data by uninverting the inverted index. Note that this can use significant memory."
        )));
    }
    let mut groups: BTreeMap<String, (Value, Vec<AggDoc<'_>>)> = BTreeMap::new();
    for d in docs {
        let mut seen = HashSet::new();
        for v in values(d, field) {
            let key = dv_json(v);
            let ks = key.to_string();
            if seen.insert(ks.clone()) {
                groups
                    .entry(ks)
                    .or_insert_with(|| (key, Vec::new()))
                    .1
                    .push(*d);
            }
        }
    }
    let mut list: Vec<(Value, Vec<AggDoc<'_>>)> = groups
        .into_values()
        .filter(|(_, d)| d.len() >= min_doc_count)
        .collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.1.len()));
    let total: usize = list.iter().map(|(_, d)| d.len()).sum();
    let shown: usize = list.iter().take(size).map(|(_, d)| d.len()).sum();
    let mut buckets = Vec::new();
    for (key, ds) in list.into_iter().take(size) {
        let mut b = Map::new();
        b.insert("key".into(), key);
        b.insert("doc_count".into(), json!(ds.len()));
        if let Some(s) = sub {
            b.extend(compute(&ds, s)?);
        }
        buckets.push(Value::Object(b));
    }
    Ok(
        json!({"doc_count_error_upper_bound": 0, "sum_other_doc_count": total - shown, "buckets": buckets}),
    )
}
