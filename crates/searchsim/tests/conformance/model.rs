//! The YAML test model: turns one upstream REST test file (a stream of `---` documents,
//! each mapping a section name to a list of steps) into `setup`, `teardown` and the named
//! tests, with every step decoded into a [`Step`]. Values are converted from YAML to
//! `serde_json::Value` here, so the rest of the runner works on JSON only.

use serde_json::{Map, Value};
use serde_yaml_ng::Value as Yaml;

/// Runner features a test may ask for in `skip.features`; anything else makes it skip.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "headers",
    "warnings",
    "allowed_warnings",
    "warnings_regex",
    "allowed_warnings_regex",
    "contains",
    "close_to",
    "stash_in_key",
    "stash_in_path",
];

/// One parsed test file.
#[derive(Debug, Clone)]
pub struct SuiteFile {
    /// Path relative to the test directory, e.g. `scroll/12_slices.yml`.
    pub path: String,
    pub setup: Option<Section>,
    pub teardown: Option<Section>,
    pub tests: Vec<Section>,
}

/// `setup`, `teardown` or one named test.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub skip: Option<Skip>,
    pub steps: Vec<Step>,
}

/// A `skip` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skip {
    pub version: Option<String>,
    pub reason: Option<String>,
    pub features: Vec<String>,
}

/// One `do` step: an API call plus what is expected of its outcome.
#[derive(Debug, Clone, Default)]
pub struct DoStep {
    pub api: String,
    pub params: Map<String, Value>,
    pub catch: Option<String>,
    pub headers: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub allowed_warnings: Vec<String>,
    pub warnings_regex: Vec<String>,
    pub allowed_warnings_regex: Vec<String>,
}

/// Numeric comparison assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Gt => "gt",
            CmpOp::Gte => "gte",
            CmpOp::Lt => "lt",
            CmpOp::Lte => "lte",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    Do(Box<DoStep>),
    /// `set: {path: name}` pairs.
    Set(Vec<(String, String)>),
    Match(Vec<(String, Value)>),
    Length(Vec<(String, Value)>),
    IsTrue(String),
    IsFalse(String),
    Compare(CmpOp, Vec<(String, Value)>),
    Contains(Vec<(String, Value)>),
    /// `close_to: {path: {value, error}}`.
    CloseTo(Vec<(String, f64, f64)>),
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Do(_) => "do",
            Step::Set(_) => "set",
            Step::Match(_) => "match",
            Step::Length(_) => "length",
            Step::IsTrue(_) => "is_true",
            Step::IsFalse(_) => "is_false",
            Step::Compare(op, _) => op.name(),
            Step::Contains(_) => "contains",
            Step::CloseTo(_) => "close_to",
        }
    }
}

/// Converts a YAML value to JSON. Map keys that are not strings (numbers, booleans) are
/// written as their text, as the upstream runner does.
pub fn yaml_to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n
                    .as_f64()
                    .ok_or_else(|| format!("unrepresentable number {n:?}"))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("number {f} is not finite; JSON cannot carry it"))?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => {
            Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(yaml_key(k)?, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => yaml_to_json(&t.value)?,
    })
}

fn yaml_key(k: &Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Null => Ok("null".to_string()),
        other => Err(format!("unsupported map key {other:?}")),
    }
}

/// Parses one test file's text. `path` is only used for naming.
pub fn parse_suite(path: &str, text: &str) -> Result<SuiteFile, String> {
    let mut suite = SuiteFile {
        path: path.to_string(),
        setup: None,
        teardown: None,
        tests: Vec::new(),
    };
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let y = <Yaml as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("YAML document {} of {path} does not parse: {e}", index + 1))?;
        let json =
            yaml_to_json(&y).map_err(|e| format!("YAML document {} of {path}: {e}", index + 1))?;
        let obj = match json {
            Value::Null => continue,
            Value::Object(o) if o.is_empty() => continue,
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "YAML document {} of {path} is not a map of sections: {other}",
                    index + 1
                ));
            }
        };
        for (name, steps) in obj {
            let section =
                parse_section(&name, &steps).map_err(|e| format!("{path} :: {name}: {e}"))?;
            match name.as_str() {
                "setup" => {
                    if suite.setup.replace(section).is_some() {
                        return Err(format!("{path} has two setup sections"));
                    }
                }
                "teardown" => {
                    if suite.teardown.replace(section).is_some() {
                        return Err(format!("{path} has two teardown sections"));
                    }
                }
                _ => {
                    if suite.tests.iter().any(|t| t.name == name) {
                        return Err(format!("{path} has two tests named [{name}]"));
                    }
                    suite.tests.push(section)
                }
            }
        }
    }
    Ok(suite)
}

fn parse_section(name: &str, steps: &Value) -> Result<Section, String> {
    let list = match steps {
        Value::Array(list) => list.as_slice(),
        Value::Null => &[],
        other => return Err(format!("a section must be a list of steps, found {other}")),
    };
    let mut section = Section {
        name: name.to_string(),
        skip: None,
        steps: Vec::new(),
    };
    for (i, raw) in list.iter().enumerate() {
        let obj = raw.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
            format!(
                "step {} must be a map with exactly one key (the step kind), found {raw}",
                i + 1
            )
        })?;
        let (kind, body) = obj.iter().next().expect("checked len == 1");
        if kind == "skip" {
            if !section.steps.is_empty() {
                return Err(format!(
                    "step {}: `skip` must come before every other step",
                    i + 1
                ));
            }
            if section.skip.is_some() {
                return Err(format!(
                    "step {}: a section may have only one `skip`",
                    i + 1
                ));
            }
            section.skip =
                Some(parse_skip(body).map_err(|e| format!("step {} (skip): {e}", i + 1))?);
            continue;
        }
        let step = parse_step(kind, body).map_err(|e| format!("step {} ({kind}): {e}", i + 1))?;
        section.steps.push(step);
    }
    Ok(section)
}

fn string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("expected a string, found {i}"))
            })
            .collect(),
        other => Err(format!(
            "expected a string or a list of strings, found {other}"
        )),
    }
}

fn parse_skip(v: &Value) -> Result<Skip, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("`skip` must be a map, found {v}"))?;
    let mut skip = Skip::default();
    for (k, val) in obj {
        match k.as_str() {
            "version" => skip.version = Some(scalar_text(val)?),
            "reason" => skip.reason = Some(scalar_text(val)?),
            "features" => skip.features = string_list(val)?,
            other => {
                return Err(format!(
                    "unknown `skip` key [{other}] (supported: version, reason, features)"
                ));
            }
        }
    }
    if skip.version.is_none() && skip.features.is_empty() {
        return Err("`skip` needs a `version` or `features`".to_string());
    }
    Ok(skip)
}

fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a scalar, found {other}")),
    }
}

fn pairs(kind: &str, v: &Value) -> Result<Vec<(String, Value)>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("`{kind}` must be a map of path: value, found {v}"))?;
    if obj.is_empty() {
        return Err(format!("`{kind}` has no path"));
    }
    Ok(obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn parse_step(kind: &str, body: &Value) -> Result<Step, String> {
    Ok(match kind {
        "do" => Step::Do(Box::new(parse_do(body)?)),
        "set" => Step::Set(
            pairs(kind, body)?
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(format!("`set` needs a stash name, found {other}")),
                })
                .collect::<Result<_, _>>()?,
        ),
        "match" => Step::Match(pairs(kind, body)?),
        "length" => Step::Length(pairs(kind, body)?),
        "contains" => Step::Contains(pairs(kind, body)?),
        "is_true" => Step::IsTrue(scalar_text(body)?),
        "is_false" => Step::IsFalse(scalar_text(body)?),
        "gt" => Step::Compare(CmpOp::Gt, pairs(kind, body)?),
        "gte" => Step::Compare(CmpOp::Gte, pairs(kind, body)?),
        "lt" => Step::Compare(CmpOp::Lt, pairs(kind, body)?),
        "lte" => Step::Compare(CmpOp::Lte, pairs(kind, body)?),
        "close_to" => Step::CloseTo(
            pairs(kind, body)?
                .into_iter()
                .map(|(k, v)| {
                    let value = v.get("value").and_then(Value::as_f64);
                    let error = v.get("error").and_then(Value::as_f64);
                    match (value, error) {
                        (Some(value), Some(error)) => Ok((k, value, error)),
                        _ => Err(format!(
                            "`close_to` needs {{value: n, error: n}}, found {v}"
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unsupported step kind [{other}]")),
    })
}

fn parse_do(body: &Value) -> Result<DoStep, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| format!("`do` must be a map, found {body}"))?;
    let mut step = DoStep::default();
    let mut api: Option<(String, Map<String, Value>)> = None;
    for (k, v) in obj {
        match k.as_str() {
            "catch" => step.catch = Some(scalar_text(v)?),
            "headers" => {
                let h = v
                    .as_object()
                    .ok_or_else(|| format!("`headers` must be a map, found {v}"))?;
                for (name, value) in h {
                    step.headers.push((name.clone(), scalar_text(value)?));
                }
            }
            "warnings" => step.warnings = string_list(v)?,
            "allowed_warnings" => step.allowed_warnings = string_list(v)?,
            "warnings_regex" => step.warnings_regex = string_list(v)?,
            "allowed_warnings_regex" => step.allowed_warnings_regex = string_list(v)?,
            "node_selector" => {
                return Err("`node_selector` is not supported (single-node server)".to_string());
            }
            name => {
                if let Some((first, _)) = &api {
                    return Err(format!("`do` calls two APIs: [{first}] and [{name}]"));
                }
                let params = match v {
                    Value::Null => Map::new(),
                    Value::Object(o) => o.clone(),
                    other => {
                        return Err(format!("params of [{name}] must be a map, found {other}"));
                    }
                };
                api = Some((name.to_string(), params));
            }
        }
    }
    let (name, params) = api.ok_or_else(|| "`do` names no API".to_string())?;
    step.api = name;
    step.params = params;
    Ok(step)
}

/// A dotted version such as `2.3.99`; anything after a `-` (e.g. `-SNAPSHOT`) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Result<Version, String> {
        let core = s.trim().split('-').next().unwrap_or("").trim();
        let mut parts = core.split('.');
        let mut next = |what: &str| -> Result<u32, String> {
            match parts.next() {
                None | Some("") => Ok(0),
                Some(p) => p
                    .parse::<u32>()
                    .map_err(|_| format!("bad {what} component in version [{s}]")),
            }
        };
        let v = Version(next("major")?, next("minor")?, next("patch")?);
        if core.is_empty() {
            return Err(format!("empty version [{s}]"));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Whether `version` falls in a skip range such as `" - 2.3.99"`, `"7.0.0 - "`,
/// `"1.0.0 - 1.2.0, 2.0.0 - 2.1.0"` or `"all"`.
pub fn version_in_ranges(ranges: &str, version: Version) -> Result<bool, String> {
    let ranges = ranges.trim();
    if ranges.eq_ignore_ascii_case("all") {
        return Ok(true);
    }
    for range in ranges.split(',') {
        let (lo, hi) = range
            .split_once(" - ")
            .or_else(|| range.split_once('-'))
            .ok_or_else(|| format!("version range [{range}] has no ` - `"))?;
        let lo = lo.trim();
        let hi = hi.trim();
        let lo_ok = lo.is_empty() || version >= Version::parse(lo)?;
        let hi_ok = hi.is_empty() || version <= Version::parse(hi)?;
        if lo_ok && hi_ok {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Why a section must be skipped against `version`, or `None` to run it.
pub fn skip_reason(skip: &Skip, version: Version) -> Result<Option<String>, String> {
    let unsupported: Vec<&str> = skip
        .features
        .iter()
        .map(String::as_str)
        .filter(|f| !SUPPORTED_FEATURES.contains(f))
        .collect();
    if !unsupported.is_empty() {
        return Ok(Some(format!(
            "runner does not support feature(s) [{}]",
            unsupported.join(", ")
        )));
    }
    if let Some(range) = &skip.version
        && version_in_ranges(range, version)?
    {
        let reason = skip.reason.as_deref().unwrap_or("no reason given");
        return Ok(Some(format!(
            "server version {version} is in skip range [{}]: {reason}",
            range.trim()
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_sections_steps_and_skips() {
        let text = r#"
setup:
  - skip:
      features: headers
  - do:
      indices.create:
        index: test
---
"first test":
  - skip:
      version: " - 2.3.99"
      reason: old
  - do:
      catch: missing
      headers: { Content-Type: application/json }
      search: { index: test, body: { size: 1 } }
  - match: { hits.total: 1 }
  - is_true: hits
  - gt: { hits.total: 0 }
  - set: { _scroll_id: sid }
---
 teardown:
  - do:
      indices.delete: { index: test }
"#;
        let suite = parse_suite("x/y.yml", text).expect("parses");
        assert_eq!(suite.tests.len(), 1);
        let setup = suite.setup.as_ref().expect("setup");
        assert_eq!(setup.skip.as_ref().expect("skip").features, vec!["headers"]);
        assert!(suite.teardown.is_some());
        let t = &suite.tests[0];
        assert_eq!(t.name, "first test");
        assert_eq!(
            t.skip.as_ref().and_then(|s| s.version.clone()).as_deref(),
            Some(" - 2.3.99")
        );
        let kinds: Vec<_> = t.steps.iter().map(Step::kind).collect();
        assert_eq!(kinds, vec!["do", "match", "is_true", "gt", "set"]);
        let Step::Do(d) = &t.steps[0] else {
            panic!("not a do")
        };
        assert_eq!(d.api, "search");
        assert_eq!(d.catch.as_deref(), Some("missing"));
        assert_eq!(
            d.headers,
            vec![("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(d.params.get("body"), Some(&json!({"size": 1})));
    }

    #[test]
    fn keeps_big_integers_exact() {
        let suite = parse_suite(
            "n.yml",
            "t:\n  - match: { a: 10223372036854775800, b: 72057594037927936 }\n",
        )
        .expect("parses");
        let Step::Match(m) = &suite.tests[0].steps[0] else {
            panic!("not match")
        };
        assert_eq!(m[0].1.as_u64(), Some(10_223_372_036_854_775_800));
        assert_eq!(m[1].1.as_i64(), Some(72_057_594_037_927_936));
    }

    #[test]
    fn rejects_unknown_steps_and_two_apis() {
        assert!(parse_suite("u.yml", "t:\n  - frobnicate: {}\n").is_err());
        assert!(parse_suite("u.yml", "t:\n  - do: { search: {}, count: {} }\n").is_err());
        assert!(parse_suite("u.yml", "t:\n  - match: {a: 1}\n  - skip: {version: all}\n").is_err());
    }

    #[test]
    fn version_ranges() {
        let v = |s| Version::parse(s).expect("version");
        assert!(version_in_ranges(" - 2.3.99", v("2.3.0")).expect("ok"));
        assert!(!version_in_ranges(" - 2.3.99", v("2.4.0")).expect("ok"));
        assert!(!version_in_ranges(" - 2.9.99", v("3.3.0")).expect("ok"));
        assert!(version_in_ranges("3.0.0 - ", v("3.3.0")).expect("ok"));
        assert!(!version_in_ranges("3.0.0 - ", v("2.19.0")).expect("ok"));
        assert!(version_in_ranges("1.0.0 - 1.2.0, 2.0.0 - 2.1.0", v("2.0.5")).expect("ok"));
        assert!(version_in_ranges("all", v("9.9.9")).expect("ok"));
        assert!(!version_in_ranges(" - 2.11.0", v("2.19.0")).expect("ok"));
        assert_eq!(v("3.3.0-SNAPSHOT"), Version(3, 3, 0));
        assert!(version_in_ranges("nonsense", v("1.0.0")).is_err());
    }

    #[test]
    fn skip_names_unsupported_features() {
        let skip = Skip {
            features: vec!["headers".into(), "node_selector".into()],
            ..Skip::default()
        };
        let why = skip_reason(&skip, Version(3, 3, 0))
            .expect("ok")
            .expect("skips");
        assert!(why.contains("node_selector"), "{why}");
        let supported = Skip {
            features: vec!["headers".into(), "allowed_warnings".into()],
            ..Skip::default()
        };
        assert_eq!(skip_reason(&supported, Version(3, 3, 0)).expect("ok"), None);
    }
}
