//! Reading `_source` without re-serialising it: a top-level object as `(name, raw JSON text)`
//! pairs, conversions of raw values to typed cells, whitespace compaction and date parsing.

use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object in document order, values as their raw text.
pub(crate) struct RawObject<'a>(pub Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) = m.next_entry::<String, &'a RawValue>()? {
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

pub(crate) fn parse_object(text: &str) -> Result<RawObject<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The kind of a raw JSON value, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub(crate) fn kind(raw: &str) -> RawKind {
    match raw.as_bytes().first() {
        Some(b'n') => RawKind::Null,
        Some(b't' | b'f') => RawKind::Bool,
        Some(b'"') => RawKind::String,
        Some(b'[') => RawKind::Array,
        Some(b'{') => RawKind::Object,
        _ => RawKind::Number,
    }
}

/// The unescaped text of a raw JSON string.
pub(crate) fn string_value(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

/// Removes the whitespace outside strings, leaving everything else byte for byte.
pub(crate) fn compact(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else {
            match c {
                ' ' | '\n' | '\r' | '\t' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A JSON string literal for `s`.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub(crate) fn to_i64(raw: &str) -> Option<i64> {
    let text = match kind(raw) {
        RawKind::Number => raw.to_string(),
        RawKind::String => string_value(raw)?.trim().to_string(),
        _ => return None,
    };
    if let Ok(v) = text.parse::<i64>() {
        return Some(v);
    }
    let f = text.parse::<f64>().ok()?;
    if f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(f as i64)
    } else {
        None
    }
}

pub(crate) fn to_f64(raw: &str) -> Option<f64> {
    match kind(raw) {
        RawKind::Number => raw.parse().ok(),
        RawKind::String => {
            let s = string_value(raw)?;
            let v: f64 = s.trim().parse().ok()?;
            v.is_finite().then_some(v)
        }
        _ => None,
    }
}

pub(crate) fn to_bool(raw: &str) -> Option<bool> {
    match raw {
        "true" | "\"true\"" => Some(true),
        "false" | "\"false\"" => Some(false),
        _ => None,
    }
}

/// Epoch nanoseconds of a `date`/`date_nanos` value: a number or digit string (epoch
/// milliseconds) or a `strict_date_optional_time` string.
pub(crate) fn to_epoch_nanos(raw: &str) -> Option<i128> {
    match kind(raw) {
        RawKind::Number => epoch_millis_text(raw),
        RawKind::String => {
            let s = string_value(raw)?;
            let s = s.trim();
            if !s.is_empty()
                && s.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && s.len() > 4
            {
                return epoch_millis_text(s);
            }
            parse_date(s)
        }
        _ => None,
    }
}

fn epoch_millis_text(s: &str) -> Option<i128> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms as i128 * 1_000_000);
    }
    let f: f64 = s.parse().ok()?;
    if !f.is_finite() || f.abs() > 9.0e15 {
        return None;
    }
    Some((f * 1_000_000.0).round() as i128)
}

/// `yyyy[-MM[-dd]][THH[:mm[:ss[.fraction]]]][Z|±HH[:mm]|±HHmm]`; no offset means UTC.
pub(crate) fn parse_date(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let mut i = 0;
    let num = |i: &mut usize, n: usize| -> Option<u32> {
        let end = *i + n;
        if end > b.len() || !b[*i..end].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = std::str::from_utf8(&b[*i..end]).ok()?.parse().ok()?;
        *i = end;
        Some(v)
    };
    let year = num(&mut i, 4)? as i32;
    let (mut month, mut day) = (1, 1);
    if i < b.len() && b[i] == b'-' {
        i += 1;
        month = num(&mut i, 2)?;
        if i < b.len() && b[i] == b'-' {
            i += 1;
            day = num(&mut i, 2)?;
        }
    }
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let (mut h, mut m, mut sec, mut nanos) = (0u32, 0u32, 0u32, 0u32);
    if i < b.len() && (b[i] == b'T' || b[i] == b't') {
        i += 1;
        h = num(&mut i, 2)?;
        if i < b.len() && b[i] == b':' {
            i += 1;
            m = num(&mut i, 2)?;
            if i < b.len() && b[i] == b':' {
                i += 1;
                sec = num(&mut i, 2)?;
                if i < b.len() && (b[i] == b'.' || b[i] == b',') {
                    i += 1;
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    let digits = &s[start..i];
                    if digits.is_empty() || digits.len() > 9 {
                        return None;
                    }
                    nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
                }
            }
        }
    }
    let mut offset_secs: i64 = 0;
    if i < b.len() {
        match b[i] {
            b'Z' | b'z' => i += 1,
            b'+' | b'-' => {
                let sign = if b[i] == b'-' { -1 } else { 1 };
                i += 1;
                let oh = num(&mut i, 2)? as i64;
                let mut om = 0i64;
                if i < b.len() && b[i] == b':' {
                    i += 1;
                    om = num(&mut i, 2)? as i64;
                } else if i < b.len() {
                    om = num(&mut i, 2)? as i64;
                }
                if oh > 18 || om > 59 {
                    return None;
                }
                offset_secs = sign * (oh * 3600 + om * 60);
            }
            _ => return None,
        }
    }
    if i != b.len() {
        return None;
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(h, m, sec, nanos)?;
    let secs = date.and_time(time).and_utc().timestamp() - offset_secs;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_date("1970-01-01T01:00:00.5+01:00"), Some(500_000_000));
        assert_eq!(parse_date("1970-01-01T00:00:00.000000001Z"), Some(1));
        assert_eq!(
            parse_date("2024-03-15T07:30"),
            parse_date("2024-03-15T07:30:00Z")
        );
        assert_eq!(
            parse_date("2024-03-15T07:30:00-0130"),
            parse_date("2024-03-15T09:00:00Z")
        );
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2024-03-15 07:30"), None);
        assert_eq!(
            to_epoch_nanos("1700000000123"),
            Some(1_700_000_000_123_000_000)
        );
        assert_eq!(
            to_epoch_nanos("\"1700000000123\""),
            Some(1_700_000_000_123_000_000)
        );
    }

    #[test]
    fn compacts_outside_strings_only() {
        assert_eq!(compact("{ \"a b\" : [1, 2] }"), "{\"a b\":[1,2]}");
        assert_eq!(compact(r#"{"q":"x \" y"}"#), r#"{"q":"x \" y"}"#);
    }

    #[test]
    fn converts_numbers() {
        assert_eq!(to_i64("5.0"), Some(5));
        assert_eq!(to_i64("\"42\""), Some(42));
        assert_eq!(to_i64("18446744073709551615"), None);
        assert_eq!(to_i64("1.5"), None);
        assert_eq!(to_f64("\"2.5\""), Some(2.5));
        assert_eq!(to_bool("\"true\""), Some(true));
    }
}
