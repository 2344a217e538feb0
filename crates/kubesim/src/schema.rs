//! Structural-schema handling of custom resources, in the API server's order: defaulting
//! (`default:`; a `null` where the schema is not `nullable` is replaced by the default),
//! pruning of fields the schema does not declare (kept under
//! `x-kubernetes-preserve-unknown-fields`), then validation with field-named causes:
//! `type`, `nullable`, `required`, `enum`, `minimum`/`maximum` (and exclusive), `multipleOf`,
//! `minLength`/`maxLength`, `pattern`, `format: date-time`, `minItems`/`maxItems`,
//! `uniqueItems`, `minProperties`/`maxProperties`, `additionalProperties`, `allOf`/`anyOf`/
//! `oneOf`/`not`, `x-kubernetes-int-or-string`, and CEL `x-kubernetes-validations` through
//! [`crate::cel`] (rules it cannot parse are skipped; see the crate docs).

use serde_json::{Map, Value};

use crate::cel;
use crate::error::Cause;

fn nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool).unwrap_or(false)
}

fn preserve(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn int_or_string(s: &Value) -> bool {
    s.get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Applies `default:` values in place (also inside defaulted values).
pub fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, ps) in props {
                    let Some(def) = ps.get("default") else {
                        continue;
                    };
                    match m.get(k) {
                        None => {
                            m.insert(k.clone(), def.clone());
                        }
                        Some(Value::Null) if !nullable(ps) => {
                            m.insert(k.clone(), def.clone());
                        }
                        _ => {}
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        apply_defaults(child, ps);
                    }
                }
            } else if let Some(ap @ Value::Object(_)) = s.get("additionalProperties") {
                for child in m.values_mut() {
                    apply_defaults(child, ap);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for child in items {
                    apply_defaults(child, is);
                }
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not declare; returns their paths (`spec.foo`). At the
/// root, `apiVersion`, `kind` and `metadata` are always kept.
pub fn prune(v: &mut Value, s: &Value, root: bool) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_at(v, s, "", root, &mut unknown);
    unknown
}

fn prune_at(v: &mut Value, s: &Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let ap = s.get("additionalProperties");
            let keep_all =
                preserve(s) || matches!(ap, Some(Value::Bool(true)) | Some(Value::Object(_)));
            if !keep_all {
                let drop: Vec<String> = m
                    .keys()
                    .filter(|k| !props.is_some_and(|p| p.contains_key(*k)))
                    .filter(|k| !(root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")))
                    .cloned()
                    .collect();
                for k in drop {
                    m.remove(&k);
                    unknown.push(join(path, &k));
                }
            }
            for (k, child) in m.iter_mut() {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    prune_at(child, ps, &join(path, k), false, unknown);
                } else if let Some(aps @ Value::Object(_)) = ap {
                    prune_at(child, aps, &join(path, k), false, unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    prune_at(child, is, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Array(_) | Value::Null => format!("\"{}\"", type_name(v)),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Validates `v` against schema `s`, appending causes. `old` is the stored value at the
/// same path (for CEL transition rules), `None` on create.
pub fn validate(v: &Value, s: &Value, path: &str, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let invalid = |errs: &mut Vec<Cause>, what: String| {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("{path}: Invalid value: {}: {what}", shown(v)),
            field: path.to_string(),
        })
    };
    if v.is_null() {
        if nullable(s) || preserve(s) && s.get("type").is_none() {
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            invalid(
                errs,
                format!("{path} in body must be of type {t}: \"null\""),
            );
            return;
        }
    }
    if int_or_string(s) {
        if !(v.is_string() || type_name(v) == "integer") {
            invalid(
                errs,
                format!(
                    "{path} in body must be of type integer or string: \"{}\"",
                    type_name(v)
                ),
            );
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => type_name(v) == "integer",
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            invalid(
                errs,
                format!("{path} in body must be of type {t}: \"{}\"", type_name(v)),
            );
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        let supported = options
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        errs.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "{path}: Unsupported value: {}: supported values: {supported}",
                shown(v)
            ),
            field: path.to_string(),
        });
    }
    match v {
        Value::String(st) => {
            let len = st.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                invalid(
                    errs,
                    format!("{path} in body should be at least {min} chars long"),
                );
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errs.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    message: format!("{path}: Too long: may not be more than {max} bytes"),
                    field: path.to_string(),
                });
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(st) => {
                        invalid(errs, format!("{path} in body should match '{p}'"))
                    }
                    _ => {}
                }
            }
            if s.get("format").and_then(Value::as_str) == Some("date-time")
                && chrono::DateTime::parse_from_rfc3339(st).is_err()
            {
                invalid(
                    errs,
                    format!("{path} in body must be of type date-time: {v}"),
                );
            }
        }
        Value::Number(_) => {
            let x = num(v).unwrap_or(0.0);
            let excl_min = s
                .get("exclusiveMinimum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let excl_max = s
                .get("exclusiveMaximum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(min) = s.get("minimum").and_then(num)
                && (x < min || excl_min && x == min)
            {
                let rel = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                invalid(
                    errs,
                    format!("{path} in body should be {rel} {}", fmt_num(min)),
                );
            }
            if let Some(max) = s.get("maximum").and_then(num)
                && (x > max || excl_max && x == max)
            {
                let rel = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                invalid(
                    errs,
                    format!("{path} in body should be {rel} {}", fmt_num(max)),
                );
            }
            if let Some(m) = s.get("multipleOf").and_then(num)
                && m != 0.0
                && (x / m).fract() != 0.0
            {
                invalid(
                    errs,
                    format!("{path} in body should be a multiple of {}", fmt_num(m)),
                );
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                invalid(
                    errs,
                    format!("{path} in body should have at least {min} items"),
                );
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                errs.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!("{path}: Too many: {n}: must have at most {max} items"),
                    field: path.to_string(),
                });
            }
            if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        errs.push(Cause {
                            reason: "FieldValueDuplicate".into(),
                            message: format!("{path}[{i}]: Duplicate value: {a}"),
                            field: format!("{path}[{i}]"),
                        });
                    }
                }
            }
            if let Some(is) = s.get("items") {
                for (i, child) in items.iter().enumerate() {
                    validate(child, is, &format!("{path}[{i}]"), None, errs);
                }
            }
        }
        Value::Object(m) => {
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        let f = join(path, r);
                        errs.push(Cause {
                            reason: "FieldValueRequired".into(),
                            message: format!("{f}: Required value"),
                            field: f,
                        });
                    }
                }
            }
            let n = m.len() as u64;
            if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
                && n < min
            {
                invalid(
                    errs,
                    format!("{path} in body should have at least {min} properties"),
                );
            }
            if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
                && n > max
            {
                invalid(
                    errs,
                    format!("{path} in body should have at most {max} properties"),
                );
            }
            let props = s.get("properties").and_then(Value::as_object);
            let ap = s.get("additionalProperties");
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let old_child = old.and_then(|o| o.get(k));
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    validate(child, ps, &join(path, k), old_child, errs);
                } else if let Some(aps @ Value::Object(_)) = ap {
                    validate(child, aps, &join(path, k), old_child, errs);
                } else if ap == Some(&Value::Bool(false)) {
                    let f = join(path, k);
                    errs.push(Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!("{f}: Forbidden: additional property {k} is not allowed"),
                        field: f,
                    });
                }
            }
        }
        _ => {}
    }
    combinators(v, s, path, old, errs);
    if let Some(Value::Array(rules)) = s.get("x-kubernetes-validations") {
        for rule in rules {
            let Some(text) = rule.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let Some(program) = cel::Program::parse(text) else {
                continue;
            };
            if program.uses_old_self() && old.is_none() {
                continue;
            }
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("failed rule: {text}"));
            let field = rule
                .get("fieldPath")
                .and_then(Value::as_str)
                .map(|f| format!("{path}{f}"))
                .unwrap_or_else(|| path.to_string());
            match program.eval(v, old) {
                Ok(true) => {}
                Ok(false) => errs.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("{field}: Invalid value: \"{}\": {message}", type_name(v)),
                    field,
                }),
                Err(e) => errs.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "{field}: Invalid value: \"{}\": rule evaluation error: {e}",
                        type_name(v)
                    ),
                    field,
                }),
            }
        }
    }
}

fn combinators(v: &Value, s: &Value, path: &str, old: Option<&Value>, errs: &mut Vec<Cause>) {
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            validate(v, sub, path, old, errs);
        }
    }
    let passes = |sub: &Value| {
        let mut e = Vec::new();
        validate(v, sub, path, old, &mut e);
        e.is_empty()
    };
    let fail = |errs: &mut Vec<Cause>, what: &str| {
        errs.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("{path}: Invalid value: {}: {what}", shown(v)),
            field: path.to_string(),
        })
    };
    if let Some(Value::Array(any)) = s.get("anyOf")
        && !any.iter().any(passes)
    {
        fail(
            errs,
            &format!("{path} in body must match at least one schema (anyOf)"),
        );
    }
    if let Some(Value::Array(one)) = s.get("oneOf")
        && one.iter().filter(|x| passes(x)).count() != 1
    {
        fail(
            errs,
            &format!("{path} in body must match exactly one schema (oneOf)"),
        );
    }
    if let Some(not) = s.get("not")
        && passes(not)
    {
        fail(
            errs,
            &format!("{path} in body must not match the schema (not)"),
        );
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Runs defaulting, pruning and validation on a whole custom resource. Returns the pruned
/// unknown-field paths; validation causes go to `errs`.
pub fn process(
    obj: &mut Value,
    schema: &Value,
    old: Option<&Value>,
    errs: &mut Vec<Cause>,
) -> Vec<String> {
    apply_defaults(obj, schema);
    let unknown = prune(obj, schema, true);
    let mut root_schema = schema.clone();
    if let Some(m) = root_schema.as_object_mut() {
        // the root's metadata, apiVersion and kind are validated by the server, not the schema
        if let Some(Value::Array(req)) = m.get_mut("required") {
            req.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
        }
    }
    validate(obj, &root_schema, "", old, errs);
    unknown
}

/// An empty object schema that keeps everything (for resources without a schema).
pub fn permissive() -> Value {
    let mut m = Map::new();
    m.insert("type".into(), Value::String("object".into()));
    m.insert(
        "x-kubernetes-preserve-unknown-fields".into(),
        Value::Bool(true),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "nullable": true},
                        "port": {"x-kubernetes-int-or-string": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        })
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 3, "junk": 1, "port": "http", "extra": {"any": {"thing": 1}},
                     "labels": {"a": "b"}, "name": null}});
        let mut errs = Vec::new();
        let unknown = process(&mut obj, &schema(), None, &mut errs);
        assert_eq!(unknown, vec!["spec.junk".to_string()]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(obj["spec"]["mode"], json!("a"));
        assert_eq!(obj["spec"]["extra"], json!({"any": {"thing": 1}}));
        assert_eq!(obj["metadata"]["name"], json!("a"));
    }

    #[test]
    fn causes_name_the_field() {
        let mut obj = json!({"spec": {"size": 11, "mode": "c", "name": "A1", "port": true, "labels": {"a": 1}}});
        let mut errs = Vec::new();
        process(&mut obj, &schema(), None, &mut errs);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.size"), "{errs:?}");
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.name"));
        assert!(fields.contains(&"spec.port"));
        assert!(fields.contains(&"spec.labels.a"));
        let mut obj = json!({"spec": {}});
        let mut errs = Vec::new();
        process(&mut obj, &schema(), None, &mut errs);
        assert_eq!(errs[0].message, "spec.size: Required value");
    }
}
