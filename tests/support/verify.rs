//! Checks shared by the export tests: every exported record belongs to the source, appears
//! once, sits in the right index and (for a sample) carries the source's values, whatever the
//! format and whichever server it came from.

use std::collections::HashMap;

use searchsim::datagen::DataSpec;
use serde_json::Value;

use crate::{millis, path};

/// Every generated document's `_id` → its index, and a 1-in-`every` sample of full sources.
pub struct Expected {
    pub index_of: HashMap<String, String>,
    pub sample: HashMap<String, Value>,
}

pub fn expected(spec: &DataSpec, every: u64) -> Expected {
    let mut index_of = HashMap::new();
    let mut sample = HashMap::new();
    for (i, d) in searchsim::datagen::docs(spec).enumerate() {
        if (i as u64).is_multiple_of(every) {
            sample.insert(d.id.clone(), serde_json::from_slice(&d.source).unwrap());
        }
        index_of.insert(d.id, d.index);
    }
    Expected { index_of, sample }
}

/// Checks one exported record: it belongs to the source, is not a duplicate, and (if sampled)
/// carries the source's values. Removes it from `remaining`.
pub fn account(remaining: &mut HashMap<String, String>, seen: &mut u64, id: &str, index: &str) {
    let Some(src_index) = remaining.remove(id) else {
        panic!("document {id} is exported twice or does not exist in the source");
    };
    assert_eq!(src_index, index, "document {id} has the wrong _index");
    *seen += 1;
}

pub fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// Compares a source value with an exported cell (a typed Parquet value or CSV/JSON text).
pub fn same_value(field: &str, source: &Value, cell: &Value) -> bool {
    match (source, cell) {
        (Value::String(s), Value::Number(n)) if field == "@timestamp" => {
            n.as_i64() == Some(millis(s))
        }
        (Value::Number(_), Value::Number(_)) => same_number(source, cell),
        // Objects and arrays kept whole in a text column (geo_point, nested, ...).
        (Value::Object(_) | Value::Array(_), Value::String(text)) => {
            serde_json::from_str::<Value>(text).ok().as_ref() == Some(source)
        }
        _ => source == cell,
    }
}

/// Every field of `source` is in a column of `row` (at its own path or an enclosing
/// object's) or in `_extra`, with the same value.
pub fn assert_row(row: &serde_json::Map<String, Value>, source: &Value, what: &str) {
    let extra: Value = match row.get("_extra") {
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str(s).expect("_extra is JSON"),
        _ => Value::Null,
    };
    fn walk(
        row: &serde_json::Map<String, Value>,
        extra: &Value,
        prefix: &str,
        v: &Value,
        what: &str,
    ) {
        if let Some(cell) = row.get(prefix).filter(|_| !prefix.is_empty()) {
            assert!(
                same_value(prefix, v, cell),
                "{what} field {prefix}: source {v} but exported {cell}"
            );
            return;
        }
        match v {
            Value::Object(m) if path(extra, prefix).is_none() || prefix.is_empty() => {
                for (k, c) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(row, extra, &p, c, what);
                }
            }
            Value::Null => {}
            _ => assert_eq!(
                path(extra, prefix),
                Some(v),
                "{what} field {prefix} = {v} is neither in a column nor in _extra ({extra})"
            ),
        }
    }
    walk(row, &extra, "", source, what);
}
