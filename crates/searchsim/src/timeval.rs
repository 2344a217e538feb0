//! Time values and dates as the servers parse them: `keep_alive` units (`500ms`, `1m`, `23h`,
//! `1d`), Java `TimeValue` rendering, date parsing for `strict_date_optional_time`,
//! `epoch_millis`, `epoch_second`, Java-style patterns (`yyyy-MM-dd HH:mm:ss.SSS`) and date
//! math (`now-1d/d`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

/// Parses a time value such as `1m`, `500ms`, `23h`, `1d`, `30s`, `-1`; returns milliseconds.
pub fn parse_time_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "-1" {
        return Some(-1);
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "nanos" => 1e-6,
        "micros" => 1e-3,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    Some((n * factor).round() as i64)
}

/// Java `TimeValue.toString()`: the largest unit with a value of at least one, one decimal.
pub fn format_time(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms.abs() >= size {
            let v = ms as f64 / size as f64;
            let text = format!("{v:.1}");
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text}{unit}");
        }
    }
    format!("{ms}ms")
}

/// A date format of a mapping or a request: a `||`-separated list of alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFormat {
    alternatives: Vec<String>,
}

impl Default for DateFormat {
    fn default() -> Self {
        Self::new("strict_date_optional_time||epoch_millis")
    }
}

impl DateFormat {
    /// Parses a format string such as `yyyy-MM-dd||epoch_millis`.
    pub fn new(spec: &str) -> Self {
        Self {
            alternatives: spec.split("||").map(|s| s.trim().to_string()).collect(),
        }
    }

    /// The format as written in a mapping.
    pub fn spec(&self) -> String {
        self.alternatives.join("||")
    }

    /// Parses `s` with the first alternative that accepts it; epoch nanoseconds since 1970.
    pub fn parse_nanos(&self, s: &str) -> Option<i128> {
        self.alternatives.iter().find_map(|alt| parse_with(alt, s))
    }

    /// Parses to epoch milliseconds (truncating sub-millisecond precision).
    pub fn parse_millis(&self, s: &str) -> Option<i64> {
        self.parse_nanos(s).map(|n| n.div_euclid(1_000_000) as i64)
    }

    /// Renders epoch milliseconds in the first alternative.
    pub fn format_millis(&self, ms: i64) -> String {
        self.format_nanos(i128::from(ms) * 1_000_000)
    }

    /// Renders epoch nanoseconds in the first alternative.
    pub fn format_nanos(&self, nanos: i128) -> String {
        let first = self
            .alternatives
            .first()
            .map(String::as_str)
            .unwrap_or("strict_date_optional_time");
        format_with(first, nanos)
    }
}

fn nanos_to_datetime(nanos: i128) -> DateTime<Utc> {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    Utc.timestamp_opt(secs, sub).single().unwrap_or_default()
}

fn format_with(fmt: &str, nanos: i128) -> String {
    let dt = nanos_to_datetime(nanos);
    match fmt {
        "epoch_millis" => (nanos.div_euclid(1_000_000)).to_string(),
        "epoch_second" => (nanos.div_euclid(1_000_000_000)).to_string(),
        "strict_date_optional_time" | "date_optional_time" | "strict_date_time" | "date_time" => {
            dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        }
        "strict_date_optional_time_nanos" => dt.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        "strict_date" | "date" | "yyyy-MM-dd" => dt.format("%Y-%m-%d").to_string(),
        other => dt.format(&java_to_chrono(other)).to_string(),
    }
}

/// Converts a Java `DateTimeFormatter` pattern to a chrono format string (common letters only).
fn java_to_chrono(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        match c {
            'y' | 'u' => out.push_str(if n == 2 { "%y" } else { "%Y" }),
            'M' => out.push_str(if n >= 3 { "%b" } else { "%m" }),
            'd' => out.push_str("%d"),
            'H' => out.push_str("%H"),
            'h' => out.push_str("%I"),
            'a' => out.push_str("%p"),
            'm' => out.push_str("%M"),
            's' => out.push_str("%S"),
            'S' => out.push_str(match n {
                1..=3 => "%3f",
                4..=6 => "%6f",
                _ => "%9f",
            }),
            'Z' | 'X' | 'x' => out.push_str("%z"),
            '\'' => {
                // quoted literal
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '\'' {
                    out.push(chars[j]);
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            '%' => out.push_str("%%"),
            other => {
                for _ in 0..n {
                    out.push(other);
                }
            }
        }
        i += n;
    }
    out
}

fn parse_with(fmt: &str, s: &str) -> Option<i128> {
    match fmt {
        "epoch_millis" => {
            let v: f64 = s.trim().parse().ok()?;
            Some((v * 1_000_000.0) as i128)
        }
        "epoch_second" => {
            let v: f64 = s.trim().parse().ok()?;
            Some((v * 1_000_000_000.0) as i128)
        }
        "strict_date_optional_time"
        | "date_optional_time"
        | "strict_date_optional_time_nanos"
        | "strict_date_time"
        | "date_time" => parse_iso(s),
        "strict_date" | "date" => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(date_nanos),
        other => parse_java(other, s),
    }
}

fn date_nanos(d: NaiveDate) -> i128 {
    naive_nanos(d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

fn naive_nanos(dt: NaiveDateTime) -> i128 {
    let utc = dt.and_utc();
    i128::from(utc.timestamp()) * 1_000_000_000 + i128::from(utc.timestamp_subsec_nanos())
}

fn parse_java(pattern: &str, s: &str) -> Option<i128> {
    let f = java_to_chrono(pattern);
    if f.contains("%z")
        && let Ok(dt) = DateTime::parse_from_str(s, &f)
    {
        return Some(
            i128::from(dt.timestamp()) * 1_000_000_000 + i128::from(dt.timestamp_subsec_nanos()),
        );
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(s, &f) {
        return Some(naive_nanos(dt));
    }
    NaiveDate::parse_from_str(s, &f).ok().map(date_nanos)
}

/// `strict_date_optional_time`: `yyyy[-MM[-dd['T'HH[:mm[:ss[.fraction]]][offset]]]]`.
pub fn parse_iso(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = s.get(from..from + len)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let year: i32 = num(0, 4)? as i32;
    let mut pos = 4;
    let mut month = 1;
    let mut day = 1;
    if pos < b.len() && b[pos] == b'-' {
        month = num(pos + 1, 2)?;
        pos += 3;
        if pos < b.len() && b[pos] == b'-' {
            day = num(pos + 1, 2)?;
            pos += 3;
        }
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let (mut h, mut mi, mut sec, mut nanos) = (0, 0, 0, 0u32);
    let mut offset_secs: i64 = 0;
    if pos < b.len() {
        if b[pos] != b'T' {
            return None;
        }
        pos += 1;
        h = num(pos, 2)?;
        pos += 2;
        if pos < b.len() && b[pos] == b':' {
            mi = num(pos + 1, 2)?;
            pos += 3;
            if pos < b.len() && b[pos] == b':' {
                sec = num(pos + 1, 2)?;
                pos += 3;
                if pos < b.len() && (b[pos] == b'.' || b[pos] == b',') {
                    pos += 1;
                    let start = pos;
                    while pos < b.len() && b[pos].is_ascii_digit() {
                        pos += 1;
                    }
                    let digits = &s[start..pos];
                    if digits.is_empty() || digits.len() > 9 {
                        return None;
                    }
                    let padded = format!("{digits:0<9}");
                    nanos = padded.parse().ok()?;
                }
            }
        }
        if pos < b.len() {
            match b[pos] {
                b'Z' => pos += 1,
                b'+' | b'-' => {
                    let sign = if b[pos] == b'-' { -1 } else { 1 };
                    let oh = num(pos + 1, 2)? as i64;
                    pos += 3;
                    let mut om = 0i64;
                    if pos < b.len() && b[pos] == b':' {
                        pos += 1;
                    }
                    if pos + 2 <= b.len() {
                        om = num(pos, 2)? as i64;
                        pos += 2;
                    }
                    offset_secs = sign * (oh * 3600 + om * 60);
                }
                _ => return None,
            }
        }
        if pos != b.len() {
            return None;
        }
    }
    let dt = date.and_hms_nano_opt(h, mi, sec, nanos)?;
    Some(naive_nanos(dt) - i128::from(offset_secs) * 1_000_000_000)
}

/// Whether dynamic mapping would map this string as a date (`strict_date_optional_time`).
pub fn looks_like_date(s: &str) -> bool {
    // Dynamic date detection needs at least a full year-month-day.
    s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') && parse_iso(s).is_some()
}

/// Rounds epoch milliseconds down to a calendar unit (`y M w d h H m s`).
pub fn round_down(ms: i64, unit: char) -> i64 {
    let dt = nanos_to_datetime(i128::from(ms) * 1_000_000);
    let d = dt.date_naive();
    let rounded = match unit {
        'y' => NaiveDate::from_ymd_opt(d.year(), 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        'M' => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).and_then(|d| d.and_hms_opt(0, 0, 0)),
        'w' => {
            let back = d.weekday().num_days_from_monday() as i64;
            (d - chrono::Duration::days(back)).and_hms_opt(0, 0, 0)
        }
        'd' => d.and_hms_opt(0, 0, 0),
        'h' | 'H' => d.and_hms_opt(dt.hour(), 0, 0),
        'm' => d.and_hms_opt(dt.hour(), dt.minute(), 0),
        's' => d.and_hms_opt(dt.hour(), dt.minute(), dt.second()),
        _ => return ms,
    };
    rounded
        .map(|r| r.and_utc().timestamp_millis())
        .unwrap_or(ms)
}

/// Adds `n` calendar units to epoch milliseconds.
pub fn add_units(ms: i64, n: i64, unit: char) -> i64 {
    match unit {
        'y' => add_months(ms, n * 12),
        'M' => add_months(ms, n),
        'w' => ms + n * 7 * 86_400_000,
        'd' => ms + n * 86_400_000,
        'h' | 'H' => ms + n * 3_600_000,
        'm' => ms + n * 60_000,
        's' => ms + n * 1000,
        _ => ms,
    }
}

fn add_months(ms: i64, n: i64) -> i64 {
    let dt = nanos_to_datetime(i128::from(ms) * 1_000_000);
    let shifted = if n >= 0 {
        dt.checked_add_months(chrono::Months::new(n as u32))
    } else {
        dt.checked_sub_months(chrono::Months::new((-n) as u32))
    };
    shifted.map(|d| d.timestamp_millis()).unwrap_or(ms)
}

/// Evaluates a date expression (`now`, `now-1d/d`, `2024-03-01||+1M`, or a date in `format`).
/// `round_up` selects the end of a rounding unit (used by `lte`/`gt`).
pub fn parse_date_math(
    expr: &str,
    format: &DateFormat,
    now_ms: i64,
    round_up: bool,
) -> Option<i64> {
    let (base, math) = if let Some(rest) = expr.strip_prefix("now") {
        (now_ms, rest)
    } else if let Some(idx) = expr.find("||") {
        (format.parse_millis(&expr[..idx])?, &expr[idx + 2..])
    } else {
        return format.parse_millis(expr);
    };
    let mut v = base;
    let b: Vec<char> = math.chars().collect();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '/' => {
                let unit = *b.get(i + 1)?;
                v = round_down(v, unit);
                if round_up {
                    v = add_units(v, 1, unit) - 1;
                }
                i += 2;
            }
            '+' | '-' => {
                let sign = if b[i] == '-' { -1 } else { 1 };
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n: i64 = if i == start {
                    1
                } else {
                    b[start..i].iter().collect::<String>().parse().ok()?
                };
                let unit = *b.get(i)?;
                v = add_units(v, sign * n, unit);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_units() {
        assert_eq!(parse_time_millis("1m"), Some(60_000));
        assert_eq!(parse_time_millis("23h"), Some(82_800_000));
        assert_eq!(parse_time_millis("500ms"), Some(500));
        assert_eq!(parse_time_millis("1d"), Some(86_400_000));
        assert_eq!(parse_time_millis("30s"), Some(30_000));
        assert_eq!(parse_time_millis("1.5h"), Some(5_400_000));
        assert_eq!(parse_time_millis("abc"), None);
        assert_eq!(parse_time_millis("10"), None);
        assert_eq!(parse_time_millis("5x"), None);
    }

    #[test]
    fn time_value_rendering() {
        assert_eq!(format_time(86_400_000), "1d");
        assert_eq!(format_time(120_000), "2m");
        assert_eq!(format_time(90_000), "1.5m");
        assert_eq!(format_time(500), "500ms");
    }

    #[test]
    fn iso_dates() {
        let f = DateFormat::default();
        assert_eq!(
            f.parse_millis("2019-10-21T08:30:04.828Z"),
            Some(1_571_646_604_828)
        );
        assert_eq!(
            f.parse_millis("2019-10-21T08:30:04.828"),
            Some(1_571_646_604_828)
        );
        assert_eq!(
            f.parse_millis("2019-10-21T10:30:04.828+02:00"),
            Some(1_571_646_604_828)
        );
        assert_eq!(f.parse_millis("2019-10-21"), Some(1_571_616_000_000));
        assert_eq!(f.parse_millis("1571646604828"), Some(1_571_646_604_828));
        assert_eq!(f.parse_millis("2019-10-21 08:30"), None);
        assert_eq!(
            f.format_millis(1_571_646_604_828),
            "2019-10-21T08:30:04.828Z"
        );
        assert!(looks_like_date("2024-03-01T00:00:00Z"));
        assert!(!looks_like_date("bar"));
        assert!(!looks_like_date("1234"));
    }

    #[test]
    fn java_patterns() {
        let f = DateFormat::new("yyyy-MM-dd HH:mm:ss.SSS");
        assert_eq!(
            f.parse_millis("2019-10-21 08:30:04.828"),
            Some(1_571_646_604_828)
        );
        assert_eq!(
            f.format_millis(1_571_646_604_828),
            "2019-10-21 08:30:04.828"
        );
        let n = DateFormat::new("yyyy-MM-dd HH:mm:ss.SSSSSS");
        assert_eq!(
            n.parse_nanos("2019-10-21 08:30:04.828733"),
            Some(1_571_646_604_828_733_000)
        );
        let e = DateFormat::new("epoch_second");
        assert_eq!(e.parse_millis("1571646604"), Some(1_571_646_604_000));
    }

    #[test]
    fn date_math() {
        let f = DateFormat::default();
        let now = 1_571_646_604_828; // 2019-10-21T08:30:04.828Z
        assert_eq!(parse_date_math("now", &f, now, false), Some(now));
        assert_eq!(
            parse_date_math("now-1d", &f, now, false),
            Some(now - 86_400_000)
        );
        assert_eq!(
            parse_date_math("now/d", &f, now, false),
            Some(1_571_616_000_000)
        );
        assert_eq!(
            parse_date_math("now/d", &f, now, true),
            Some(1_571_616_000_000 + 86_400_000 - 1)
        );
        assert_eq!(
            parse_date_math("2019-10-21||+1M", &f, now, false),
            f.parse_millis("2019-11-21")
        );
    }
}
