//! Value handling shared by every assertion: the stash (`set` and `$name` / `${name}`
//! substitution), dotted object paths (`hits.hits.0._id`, `\.` for a literal dot,
//! `$stash` segments), deep comparison where numbers compare by value (`1 == 1.0`), the
//! truthiness rules of `is_true` / `is_false`, and regexes in COMMENTS mode (whitespace in
//! the pattern is ignored, as Java's `Pattern.COMMENTS`).

use regex::{Regex, RegexBuilder};
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Stashed values of one test; `body` always holds the last response body.
#[derive(Debug, Default, Clone)]
pub struct Stash {
    values: HashMap<String, Value>,
}

impl Stash {
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Result<&Value, String> {
        self.values
            .get(name)
            .ok_or_else(|| format!("stashed value not found for key [{name}]"))
    }

    /// Whether a string refers to the stash: `$name`, or contains `${name}`.
    pub fn is_stashed(s: &str) -> bool {
        (s.len() > 1 && s.starts_with('$')) || extended_key(s).is_some()
    }

    /// Resolves a string that refers to the stash. `$name` and a lone `${name}` give the
    /// stashed value itself (any type); `${name}` inside a longer string is interpolated.
    pub fn resolve(&self, s: &str) -> Result<Value, String> {
        if s.starts_with('$') && !s.starts_with("${") && s.len() > 1 {
            return self.get(&s[1..]).cloned();
        }
        if let Some((start, end)) = extended_key(s)
            && start == 0
            && end == s.len()
        {
            return self.get(&s[2..end - 1]).cloned();
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some((start, end)) = extended_key(rest) {
            out.push_str(&rest[..start]);
            let value = self.get(&rest[start + 2..end - 1])?;
            match value {
                Value::String(v) => out.push_str(v),
                other => out.push_str(&other.to_string()),
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    /// Replaces every stashed reference inside a value, keys of maps included.
    pub fn replace(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) if Self::is_stashed(s) => self.resolve(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.replace(i))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, val) in map {
                    let key = if Self::is_stashed(k) {
                        value_text(&self.resolve(k)?)
                    } else {
                        k.clone()
                    };
                    out.insert(key, self.replace(val)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

/// Position `(start, end)` of the first `${...}` in `s`, end exclusive.
fn extended_key(s: &str) -> Option<(usize, usize)> {
    let start = s.find("${")?;
    let close = s[start + 2..].find('}')?;
    if close == 0 {
        return None;
    }
    Some((start, start + 2 + close + 1))
}

/// The text of a scalar as the upstream runner would print it: strings unquoted.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Splits a dotted path; `\.` is a literal dot inside a segment.
pub fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                current.push('.');
                chars.next();
            }
            '.' => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    parts.push(current);
    if parts.len() == 1 && parts[0].is_empty() {
        parts.clear();
    }
    parts
}

/// Looks a dotted path up in `root`. Segments that refer to the stash are replaced first.
/// Returns `Ok(None)` when the path does not exist.
pub fn lookup(root: &Value, path: &str, stash: &Stash) -> Result<Option<Value>, String> {
    let mut current = root;
    for raw in split_path(path) {
        let part = if Stash::is_stashed(&raw) {
            value_text(&stash.resolve(&raw)?)
        } else {
            raw
        };
        current = match current {
            Value::Object(map) => match map.get(&part) {
                Some(v) => v,
                None => return Ok(None),
            },
            Value::Array(items) => match part.parse::<usize>() {
                Ok(i) if i < items.len() => &items[i],
                Ok(_) => return Ok(None),
                Err(_) => {
                    return Err(format!(
                        "path [{path}]: segment [{part}] is not an index into an array"
                    ));
                }
            },
            _ => return Ok(None),
        };
    }
    Ok(Some(current.clone()))
}

fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Compares two numbers by value: exactly when both are integers, as doubles otherwise.
pub fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Deep equality; returns where and how the values differ, or `None` when equal.
/// Object key order does not matter; numbers compare by value.
pub fn diff(expected: &Value, actual: &Value) -> Option<String> {
    diff_at("", expected, actual)
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else {
        format!("{path}.{seg}")
    }
}

fn diff_at(path: &str, expected: &Value, actual: &Value) -> Option<String> {
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at [{path}]")
    };
    match (expected, actual) {
        (Value::Number(e), Value::Number(a)) => {
            if cmp_numbers(e, a) == Some(Ordering::Equal) {
                None
            } else {
                Some(format!("expected {e}, got {a}{at}"))
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "expected an array of {} items, got {} items{at}",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (e, a))| diff_at(&join(path, &i.to_string()), e, a))
        }
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys() {
                if !a.contains_key(k) {
                    return Some(format!("expected key [{k}] is missing{at}"));
                }
            }
            for k in a.keys() {
                if !e.contains_key(k) {
                    return Some(format!("unexpected key [{k}]{at}"));
                }
            }
            e.iter()
                .find_map(|(k, ev)| diff_at(&join(path, k), ev, &a[k]))
        }
        (e, a) if e == a => None,
        (e, a) => Some(format!("expected {} {e}, got {} {a}{at}", kind(e), kind(a))),
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `is_true` semantics: present and not null, false, `""`, `"false"`, `"0"` or 0.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0"),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
    }
}

/// If `s` (trimmed) is written `/regex/`, the regex between the slashes.
pub fn regex_literal(s: &str) -> Option<&str> {
    let t = s.trim();
    (t.len() > 2 && t.starts_with('/') && t.ends_with('/')).then(|| &t[1..t.len() - 1])
}

/// Compiles a regex in COMMENTS mode (unescaped whitespace ignored, `#` starts a comment).
pub fn comments_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .map_err(|e| format!("regex /{pattern}/ does not compile: {e}"))
}

/// Compiles a regex as written (used for `catch: /.../`, which upstream matches without flags).
pub fn plain_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("regex /{pattern}/ does not compile: {e}"))
}

/// Short, single-line rendering of a value for failure messages.
pub fn brief(v: &Value, max: usize) -> String {
    let s = v.to_string();
    truncate(&s, max)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}… ({} bytes in all)", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stash() -> Stash {
        let mut s = Stash::default();
        s.set("pit_id", json!("abc=="));
        s.set("after", json!([24, "x"]));
        s.set("n", json!(7));
        s
    }

    #[test]
    fn stash_substitution() {
        let s = stash();
        assert_eq!(s.resolve("$pit_id").expect("ok"), json!("abc=="));
        assert_eq!(s.resolve("${after}").expect("ok"), json!([24, "x"]));
        assert_eq!(
            s.resolve("id-${pit_id}-${n}").expect("ok"),
            json!("id-abc==-7")
        );
        let body = json!({"pit": {"id": "$pit_id"}, "search_after": "$after", "ids": ["$pit_id"], "$n": 1, "keep": "$"});
        assert_eq!(
            s.replace(&body).expect("ok"),
            json!({"pit": {"id": "abc=="}, "search_after": [24, "x"], "ids": ["abc=="], "7": 1, "keep": "$"})
        );
        assert!(
            s.resolve("$missing")
                .expect_err("missing")
                .contains("missing")
        );
        assert!(!Stash::is_stashed("plain"));
        assert!(!Stash::is_stashed("$"));
    }

    #[test]
    fn path_lookup() {
        let body = json!({"hits": {"hits": [{"_id": "42", "sort": [1, 2]}]}, "a.b": {"c": true}, "x": null});
        let s = stash();
        assert_eq!(
            lookup(&body, "hits.hits.0._id", &s).expect("ok"),
            Some(json!("42"))
        );
        assert_eq!(
            lookup(&body, "hits.hits.0.sort.1", &s).expect("ok"),
            Some(json!(2))
        );
        assert_eq!(lookup(&body, "hits.hits.1._id", &s).expect("ok"), None);
        assert_eq!(lookup(&body, "hits.nope", &s).expect("ok"), None);
        assert_eq!(lookup(&body, "a\\.b.c", &s).expect("ok"), Some(json!(true)));
        assert_eq!(lookup(&body, "a.b.c", &s).expect("ok"), None);
        assert_eq!(lookup(&body, "x", &s).expect("ok"), Some(Value::Null));
        assert_eq!(lookup(&body, "", &s).expect("ok"), Some(body.clone()));
        assert!(lookup(&body, "hits.hits.first", &s).is_err());
        let mut s2 = Stash::default();
        s2.set("idx", json!(0));
        assert_eq!(
            lookup(&body, "hits.hits.$idx._id", &s2).expect("ok"),
            Some(json!("42"))
        );
        assert_eq!(split_path("a\\.b.c"), vec!["a.b", "c"]);
    }

    #[test]
    fn deep_compare() {
        assert_eq!(diff(&json!(1), &json!(1.0)), None);
        assert_eq!(
            diff(
                &json!({"a": [1, {"b": "c"}], "d": null}),
                &json!({"d": null, "a": [1.0, {"b": "c"}]})
            ),
            None
        );
        assert!(diff(&json!(1), &json!("1")).is_some());
        assert!(diff(&json!([1, 2]), &json!([1, 2, 3])).is_some());
        assert!(diff(&json!({"a": 1}), &json!({"a": 1, "b": 2})).is_some());
        assert!(diff(&json!({"a": 1, "b": 2}), &json!({"a": 1})).is_some());
        let d = diff(&json!({"a": [1, 2]}), &json!({"a": [1, 3]})).expect("differs");
        assert!(d.contains("a.1"), "{d}");
        // integers beyond i64 stay exact
        assert!(
            diff(
                &json!(10223372036854775800u64),
                &json!(10223372036854775801u64)
            )
            .is_some()
        );
        assert_eq!(
            diff(
                &json!(10223372036854775800u64),
                &json!(10223372036854775800u64)
            ),
            None
        );
        assert_eq!(
            cmp_numbers(&Number::from(3), &Number::from_f64(2.5).expect("finite")),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn truthiness() {
        for falsy in [
            None,
            Some(json!(null)),
            Some(json!(false)),
            Some(json!("")),
            Some(json!("false")),
            Some(json!(0)),
        ] {
            assert!(!truthy(falsy.as_ref()), "{falsy:?}");
        }
        for t in [
            json!(true),
            json!("x"),
            json!(1),
            json!([]),
            json!({}),
            json!([0]),
        ] {
            assert!(truthy(Some(&t)), "{t}");
        }
    }

    #[test]
    fn comments_mode_regex() {
        let r = comments_regex(regex_literal("  /a b  c/ ").expect("literal")).expect("compiles");
        assert!(r.is_match("xabcx"));
        assert!(!r.is_match("a b c"));
        // escaped space and comments
        let r = comments_regex("a\\ b # trailing comment").expect("compiles");
        assert!(r.is_match("a b"));
        assert!(!r.is_match("ab"));
        // upstream's `\/` escapes compile
        assert!(
            plain_regex(r"Malformed action\/metadata line \[3\]")
                .expect("compiles")
                .is_match("Malformed action/metadata line [3]")
        );
        assert!(regex_literal("/").is_none());
        assert!(regex_literal("plain").is_none());
    }
}
