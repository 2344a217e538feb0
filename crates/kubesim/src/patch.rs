//! Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902, with the API server's
//! rule that a `test` of `null` passes on a missing path), and a simplified server-side apply
//! that tracks field ownership per manager as sets of leaf paths (maps are walked, lists are
//! atomic) so conflicts, `force` and removal of fields a manager stopped applying behave like
//! the real server for the fields it tracks.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Applies a JSON merge patch in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("JSON pointer {p:?} must start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_at<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for seg in &path[..path.len() - 1] {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(seg)
                .ok_or_else(|| format!("doc is missing path: /{}", path.join("/")))?,
            Value::Array(a) => {
                let i: usize = seg
                    .parse()
                    .map_err(|_| format!("invalid array index {seg:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("doc is missing path: /{}", path.join("/")))?
            }
            _ => return Err(format!("doc is missing path: /{}", path.join("/"))),
        };
    }
    Ok(cur)
}

fn add_at(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let last = &path[path.len() - 1];
    match parent_mut(doc, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("add operation index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: /{}",
            path.join("/")
        )),
    }
}

fn remove_at(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    if path.is_empty() {
        return Err("cannot remove the document root".into());
    }
    let missing = || {
        format!(
            "remove operation does not apply: doc is missing path: /{}",
            path.join("/")
        )
    };
    let last = &path[path.len() - 1];
    match parent_mut(doc, path).map_err(|_| missing())? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies a JSON patch; the error text is the 422 message (failed `test`, missing path).
/// A malformed operation list is reported as `Err(Ok(msg))` for a 400.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), Result<String, String>> {
    let ops = patch
        .as_array()
        .ok_or_else(|| Ok("a JSON patch must be an array of operations".to_string()))?;
    let mut work = doc.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| Ok(format!("JSON patch operation without \"op\": {op}")))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| Ok(format!("JSON patch operation without \"path\": {op}")))?;
        let path = parse_pointer(path).map_err(Ok)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| Ok(format!("JSON patch operation {name:?} without \"value\"")))
        };
        let from = || -> Result<Vec<String>, Result<String, String>> {
            let f = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| Ok(format!("JSON patch operation {name:?} without \"from\"")))?;
            parse_pointer(f).map_err(Ok)
        };
        match name {
            "add" => add_at(&mut work, &path, value()?).map_err(Err)?,
            "remove" => {
                remove_at(&mut work, &path).map_err(Err)?;
            }
            "replace" => {
                let v = value()?;
                if get_at(&work, &path).is_none() {
                    return Err(Err(format!(
                        "replace operation does not apply: doc is missing key: /{}",
                        path.join("/")
                    )));
                }
                remove_at(&mut work, &path).map_err(Err)?;
                add_at(&mut work, &path, v).map_err(Err)?;
            }
            "test" => {
                let want = value()?;
                let have = get_at(&work, &path).cloned().unwrap_or(Value::Null);
                if have != want {
                    return Err(Err(format!(
                        "testing value /{} failed: test failed",
                        path.join("/")
                    )));
                }
            }
            "move" => {
                let f = from()?;
                let v = remove_at(&mut work, &f).map_err(Err)?;
                add_at(&mut work, &path, v).map_err(Err)?;
            }
            "copy" => {
                let f = from()?;
                let v = get_at(&work, &f).cloned().ok_or_else(|| {
                    Err(format!(
                        "copy operation does not apply: doc is missing from path: /{}",
                        f.join("/")
                    ))
                })?;
                add_at(&mut work, &path, v).map_err(Err)?;
            }
            other => return Err(Ok(format!("Unexpected kind: {other}"))),
        }
    }
    *doc = work;
    Ok(())
}

/// A leaf field path, e.g. `["spec", "replicas"]`.
pub type FieldPath = Vec<String>;

/// Leaf paths of a (partial) object, skipping identity fields (`apiVersion`, `kind`,
/// `metadata.name`, ...). Only `metadata.labels`, `metadata.annotations` and
/// `metadata.finalizers` are tracked under metadata.
pub fn leaf_paths(obj: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for key in ["labels", "annotations"] {
                        if let Some(Value::Object(map)) = v.get(key) {
                            for lk in map.keys() {
                                out.insert(vec!["metadata".into(), key.into(), lk.clone()]);
                            }
                        }
                    }
                    if v.get("finalizers").is_some_and(|f| !f.is_null()) {
                        out.insert(vec!["metadata".into(), "finalizers".into()]);
                    }
                }
                _ => walk(v, vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn walk(v: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                walk(child, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn remove_path(obj: &mut Value, path: &[String]) {
    if path.is_empty() {
        return;
    }
    let mut cur = obj;
    for seg in &path[..path.len() - 1] {
        match cur.as_object_mut().and_then(|m| m.get_mut(seg)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(&path[path.len() - 1]);
    }
}

/// Deep-merges an applied configuration into an object: maps merge, everything else
/// (lists, scalars) replaces.
pub fn apply_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        apply_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// One manager's ownership record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerEntry {
    /// Owned leaf paths.
    pub fields: BTreeSet<FieldPath>,
    /// RFC 3339 time of the manager's last write.
    pub time: String,
    /// `"status"` when the writes went through the status subresource.
    pub subresource: String,
}

/// Field ownership of one object, keyed by (manager, operation) where operation is
/// `Apply` or `Update`.
pub type Managers = BTreeMap<(String, String), ManagerEntry>;

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager.
    pub manager: String,
    /// Dotted path with a leading dot, as in the real message (`.spec.replicas`).
    pub field: String,
}

/// Server-side apply of `applied` by `manager` onto `current` (None: create). Returns the
/// merged object or the conflicts (when `force` is false).
pub fn server_side_apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    managers: &mut Managers,
    now: &str,
    subresource: &str,
) -> Result<Value, Vec<ApplyConflict>> {
    let new_paths = leaf_paths(applied);
    let empty = Value::Object(Map::new());
    let cur = current.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    let mut to_strip: Vec<((String, String), FieldPath)> = Vec::new();
    for ((m, op), entry) in managers.iter() {
        if m == manager {
            continue;
        }
        for owned in &entry.fields {
            for p in &new_paths {
                if overlaps(owned, p) {
                    let differs = value_at(cur, p) != value_at(applied, p);
                    if differs && !force {
                        conflicts.push(ApplyConflict {
                            manager: m.clone(),
                            field: format!(".{}", p.join(".")),
                        });
                    }
                    if differs || force {
                        to_strip.push(((m.clone(), op.clone()), owned.clone()));
                    }
                }
            }
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.field, &a.manager).cmp(&(&b.field, &b.manager)));
        conflicts.dedup();
        return Err(conflicts);
    }
    for (key, path) in to_strip {
        if let Some(e) = managers.get_mut(&key) {
            e.fields.remove(&path);
        }
    }
    let mut result = cur.clone();
    let key = (manager.to_string(), "Apply".to_string());
    let previous = managers
        .get(&key)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&new_paths) {
        let owned_by_other = managers
            .iter()
            .any(|(k, e)| *k != key && e.fields.iter().any(|o| overlaps(o, p)));
        if !owned_by_other {
            remove_path(&mut result, p);
        }
    }
    apply_merge(&mut result, applied);
    managers.retain(|_, e| !e.fields.is_empty());
    managers.insert(
        key,
        ManagerEntry {
            fields: new_paths,
            time: now.to_string(),
            subresource: subresource.to_string(),
        },
    );
    Ok(result)
}

/// Records a non-apply write: the changed leaf fields move to `manager`'s `Update` entry.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    managers: &mut Managers,
    now: &str,
    subresource: &str,
) {
    let empty = Value::Object(Map::new());
    let old = old.unwrap_or(&empty);
    let changed: BTreeSet<FieldPath> = leaf_paths(new)
        .into_iter()
        .filter(|p| value_at(old, p) != value_at(new, p))
        .collect();
    let removed: BTreeSet<FieldPath> = leaf_paths(old)
        .into_iter()
        .filter(|p| value_at(new, p).is_none())
        .collect();
    let key = (manager.to_string(), "Update".to_string());
    for (k, e) in managers.iter_mut() {
        if *k != key {
            e.fields
                .retain(|o| !changed.iter().chain(removed.iter()).any(|c| overlaps(o, c)));
        }
    }
    if let Some(e) = managers.get_mut(&key) {
        e.fields.retain(|o| !removed.iter().any(|c| overlaps(o, c)));
    }
    if !changed.is_empty() {
        let e = managers.entry(key).or_default();
        e.fields.extend(changed);
        e.time = now.to_string();
        e.subresource = subresource.to_string();
    }
    managers.retain(|_, e| !e.fields.is_empty());
}

/// `metadata.managedFields` in the FieldsV1 shape (`{"f:spec": {"f:replicas": {}}}`).
pub fn managed_fields_json(managers: &Managers, api_version: &str) -> Value {
    let entries = managers
        .iter()
        .map(|((m, op), e)| {
            let mut root = Map::new();
            for p in &e.fields {
                let mut cur = &mut root;
                for seg in p {
                    let next = cur
                        .entry(format!("f:{seg}"))
                        .or_insert_with(|| Value::Object(Map::new()));
                    cur = next.as_object_mut().expect("built as objects");
                }
            }
            let mut entry = serde_json::json!({
                "manager": m,
                "operation": op,
                "apiVersion": api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": Value::Object(root),
            });
            if !e.subresource.is_empty() {
                entry["subresource"] = Value::String(e.subresource.clone());
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_merges_maps() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut d, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_test_null_on_missing_passes_and_failed_test_is_422() {
        let mut d = json!({"metadata": {}});
        json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                     {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]),
        )
        .unwrap();
        assert_eq!(d, json!({"metadata": {"finalizers": ["x"]}}));
        let err = json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "y"}]),
        )
        .unwrap_err();
        assert!(err.is_err(), "a failed test is a 422, not a 400");
        json_patch(
            &mut d,
            &json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "z"},
                                    {"op": "remove", "path": "/metadata/finalizers/0"}]),
        )
        .unwrap();
        assert_eq!(d, json!({"metadata": {"finalizers": ["z"]}}));
        assert!(
            json_patch(&mut d, &json!({"op": "add"}))
                .unwrap_err()
                .is_ok()
        );
    }

    #[test]
    fn apply_conflicts_force_and_field_removal() {
        let mut managers = Managers::new();
        let a1 = json!({"spec": {"x": 1, "y": 2}});
        let obj = server_side_apply(None, &a1, "a", false, &mut managers, "t", "").unwrap();
        assert_eq!(obj, a1);
        // b sets a field a owns with another value: conflict
        let b = json!({"spec": {"x": 5}});
        let c = server_side_apply(Some(&obj), &b, "b", false, &mut managers, "t", "").unwrap_err();
        assert_eq!(
            c,
            vec![ApplyConflict {
                manager: "a".into(),
                field: ".spec.x".into()
            }]
        );
        // same value: shared ownership, no conflict
        let obj = server_side_apply(
            Some(&obj),
            &json!({"spec": {"x": 1}}),
            "b",
            false,
            &mut managers,
            "t",
            "",
        )
        .unwrap();
        // a stops applying y: removed; x still owned by b so it stays
        let obj = server_side_apply(
            Some(&obj),
            &json!({"spec": {}}),
            "a",
            false,
            &mut managers,
            "t",
            "",
        )
        .unwrap();
        assert_eq!(obj, json!({"spec": {"x": 1}}));
        // force takes ownership
        let obj = server_side_apply(
            Some(&obj),
            &json!({"spec": {"x": 9}}),
            "c",
            true,
            &mut managers,
            "t",
            "",
        )
        .unwrap();
        assert_eq!(obj, json!({"spec": {"x": 9}}));
        assert!(!managers.contains_key(&("b".to_string(), "Apply".to_string())));
    }
}
