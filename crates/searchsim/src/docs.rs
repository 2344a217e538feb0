//! Document APIs: `_bulk` (index, create, update with `doc`/`upsert`, delete; item-level errors
//! in the servers' shapes), single-document index/create/get/delete/update, and refresh
//! handling (`refresh=true|wait_for|false`).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::cluster::{Cluster, OpType, State, WriteResult};
use crate::error::{ApiError, ApiResult};
use crate::search::SourceFilter;

fn wants_refresh(params: &HashMap<String, String>) -> bool {
    matches!(
        params.get("refresh").map(String::as_str),
        Some("") | Some("true") | Some("wait_for")
    )
}

fn item_error(e: &ApiError) -> Value {
    let mut err = e.body.get("error").cloned().unwrap_or(Value::Null);
    if let Some(o) = err.as_object_mut() {
        o.remove("root_cause");
    }
    err
}

fn merge(into: &mut Value, patch: &Value) -> bool {
    let mut changed = false;
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        changed |= merge(existing, v)
                    }
                    Some(existing) => {
                        if existing != v {
                            *existing = v.clone();
                            changed = true;
                        }
                    }
                    None => {
                        a.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
            }
        }
        (a, b) => {
            if a != b {
                *a = b.clone();
                changed = true;
            }
        }
    }
    changed
}

fn source_filter_of(v: Option<&Value>) -> Option<SourceFilter> {
    match v {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(SourceFilter::default()),
        Some(Value::String(s)) if s == "true" => Some(SourceFilter::default()),
        Some(Value::String(s)) if s == "false" => None,
        Some(Value::String(s)) => Some(SourceFilter {
            includes: s.split(',').map(str::to_string).collect(),
            ..Default::default()
        }),
        Some(Value::Array(a)) => Some(SourceFilter {
            includes: a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            ..Default::default()
        }),
        Some(Value::Object(o)) => {
            let list = |k: &str| -> Vec<String> {
                match o.get(k).or_else(|| o.get(k.trim_end_matches('s'))) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            Some(SourceFilter {
                disabled: false,
                includes: list("includes"),
                excludes: list("excludes"),
            })
        }
        _ => None,
    }
}

/// An update: `doc` merged into the current source (or `upsert` / `doc_as_upsert`).
#[allow(clippy::too_many_arguments)]
fn do_update(
    st: &mut State,
    cluster: &Cluster,
    index: &str,
    id: &str,
    routing: Option<&str>,
    body: &Value,
    source_filter: Option<SourceFilter>,
) -> ApiResult<(WriteResult, Option<Value>)> {
    let doc = body.get("doc");
    let current = st
        .get_doc(index, id, routing)
        .map(|d| serde_json::from_slice::<Value>(&d.source).unwrap_or(Value::Null));
    let (new_source, noop) = match (current, doc) {
        (Some(mut cur), Some(d)) => {
            let changed = merge(&mut cur, d);
            (
                cur,
                !changed
                    && body
                        .get("detect_noop")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
            )
        }
        (Some(_), None) => {
            return Err(ApiError::new(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: script or doc is missing;",
            ));
        }
        (None, d) => {
            if let Some(up) = body.get("upsert") {
                (up.clone(), false)
            } else if body.get("doc_as_upsert").and_then(Value::as_bool) == Some(true)
                && d.is_some()
            {
                (d.cloned().unwrap_or(Value::Null), false)
            } else {
                let uuid = st
                    .indices
                    .get(index)
                    .map(|i| i.uuid.clone())
                    .unwrap_or_else(|| "_na_".into());
                let mut extra = Map::new();
                extra.insert("index_uuid".into(), json!(uuid));
                extra.insert("shard".into(), json!("0"));
                extra.insert("index".into(), json!(index));
                return Err(ApiError::with_extra(
                    404,
                    "document_missing_exception",
                    format!("[{id}]: document missing"),
                    extra,
                ));
            }
        }
    };
    let filter = source_filter.or_else(|| source_filter_of(body.get("_source")));
    let get = |src: &Value, r: &WriteResult| {
        filter.as_ref().map(|f| json!({"_seq_no": r.seq_no, "_primary_term": 1, "found": true, "_source": f.apply(src)}))
    };
    if noop {
        let d = st.get_doc(index, id, routing).expect("exists");
        let r = WriteResult {
            index: index.to_string(),
            id: id.to_string(),
            version: d.version,
            result: "noop",
            seq_no: d.born,
            total_copies: 0,
            status: 200,
        };
        let g = get(&new_source, &r);
        return Ok((r, g));
    }
    let bytes = Bytes::from(serde_json::to_vec(&new_source).unwrap_or_default());
    let mut r = st.write_doc(
        index,
        Some(id),
        routing,
        bytes,
        &new_source,
        OpType::Index,
        cluster.flavor(),
    )?;
    if r.result == "created" && r.status == 201 {
        r.status = 201;
    } else {
        r.status = 200;
    }
    let g = get(&new_source, &r);
    Ok((r, g))
}

impl Cluster {
    /// `_bulk`.
    pub fn bulk(
        &self,
        default_index: Option<&str>,
        params: &HashMap<String, String>,
        body: &[u8],
    ) -> ApiResult<Value> {
        let started = std::time::Instant::now();
        let global_require_alias = params.get("require_alias").is_some_and(|v| v != "false");
        let global_source = params
            .get("_source_includes")
            .map(|s| SourceFilter {
                includes: s.split(',').map(str::to_string).collect(),
                ..Default::default()
            })
            .or_else(|| {
                source_filter_of(
                    params
                        .get("_source")
                        .map(|s| Value::String(s.clone()))
                        .as_ref(),
                )
            });
        let lines: Vec<(usize, &[u8])> = body
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        let mut items = Vec::new();
        let mut errors = false;
        let mut touched: Vec<String> = Vec::new();
        let mut st = self.inner.state.write();
        let mut i = 0;
        while i < lines.len() {
            let (lineno, line) = lines[i];
            i += 1;
            let action: Value = serde_json::from_slice(line).map_err(|e| {
                ApiError::illegal(format!("Malformed action/metadata line [{lineno}], expected START_OBJECT or END_OBJECT but found [{e}]"))
            })?;
            let Some(obj) = action.as_object() else {
                return Err(ApiError::illegal(format!(
                    "Malformed action/metadata line [{lineno}], expected START_OBJECT but found [VALUE]"
                )));
            };
            let Some((op, meta)) = obj.iter().next() else {
                return Err(ApiError::illegal(format!(
                    "Malformed action/metadata line [{lineno}], expected FIELD_NAME but found [END_OBJECT]"
                )));
            };
            if !["index", "create", "update", "delete"].contains(&op.as_str()) {
                return Err(ApiError::illegal(format!(
                    "Malformed action/metadata line [{lineno}], expected field [create], [delete], [index] or [update] but found [{op}]"
                )));
            }
            let meta = meta.as_object().cloned().unwrap_or_default();
            let source_line = if op != "delete" {
                let Some((_, l)) = lines.get(i) else {
                    return Err(ApiError::illegal(
                        "The bulk request must be terminated by a newline [\\n]",
                    ));
                };
                i += 1;
                Some(*l)
            } else {
                None
            };
            let index_name = meta
                .get("_index")
                .and_then(Value::as_str)
                .or(default_index)
                .map(str::to_string);
            let id = meta.get("_id").map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            });
            let routing = meta
                .get("routing")
                .and_then(Value::as_str)
                .map(str::to_string);
            let require_alias = meta
                .get("require_alias")
                .and_then(Value::as_bool)
                .unwrap_or(global_require_alias);
            let op_create =
                op == "create" || meta.get("op_type").and_then(Value::as_str) == Some("create");
            let key = if op == "index" && op_create {
                "create"
            } else {
                op.as_str()
            };
            let result: ApiResult<(WriteResult, Option<Value>)> = (|| {
                let Some(index_name) = index_name.clone() else {
                    return Err(ApiError::validation(&["index is missing".into()]));
                };
                if require_alias && op != "delete" && !st.is_alias(&index_name) {
                    let mut extra = Map::new();
                    extra.insert("index".into(), json!(index_name));
                    extra.insert("index_uuid".into(), json!("_na_"));
                    return Err(ApiError::with_extra(
                        404,
                        "index_not_found_exception",
                        format!(
                            "no such index [{index_name}] and [require_alias] request flag is [true] and [{index_name}] is not an alias"
                        ),
                        extra,
                    ));
                }
                let target = st.write_target(&index_name)?.unwrap_or(index_name.clone());
                match op.as_str() {
                    "delete" => {
                        let id = id
                            .clone()
                            .ok_or_else(|| ApiError::validation(&["id is missing".into()]))?;
                        if !st.indices.contains_key(&target) {
                            return Err(ApiError::index_not_found(&target));
                        }
                        Ok((st.delete_doc(&target, &id, routing.as_deref())?, None))
                    }
                    "update" => {
                        let id = id
                            .clone()
                            .ok_or_else(|| ApiError::validation(&["id is missing".into()]))?;
                        let body: Value = serde_json::from_slice(source_line.unwrap_or_default())
                            .map_err(|e| {
                            ApiError::parsing(format!("failed to parse update body: {e}"))
                        })?;
                        let filter =
                            source_filter_of(meta.get("_source")).or_else(|| global_source.clone());
                        do_update(
                            &mut st,
                            self,
                            &target,
                            &id,
                            routing.as_deref(),
                            &body,
                            filter,
                        )
                    }
                    _ => {
                        let raw = source_line.unwrap_or_default();
                        let parsed: Value = serde_json::from_slice(raw).map_err(|e| {
                            ApiError::new(
                                400,
                                "mapper_parsing_exception",
                                format!("failed to parse: {e}"),
                            )
                        })?;
                        let bytes = Bytes::copy_from_slice(raw.trim_ascii());
                        let optype = if op_create {
                            OpType::Create
                        } else {
                            OpType::Index
                        };
                        Ok((
                            st.write_doc(
                                &target,
                                id.as_deref(),
                                routing.as_deref(),
                                bytes,
                                &parsed,
                                optype,
                                self.flavor(),
                            )?,
                            None,
                        ))
                    }
                }
            })();
            match result {
                Ok((r, get)) => {
                    if !touched.contains(&r.index) {
                        touched.push(r.index.clone());
                    }
                    let mut item = r.to_json();
                    if let Some(o) = item.as_object_mut() {
                        if r.result == "noop" {
                            o.remove("_shards");
                        }
                        o.insert("status".into(), json!(r.status));
                        if let Some(g) = get {
                            o.insert("get".into(), g);
                        }
                    }
                    items.push(json!({ key: item }));
                }
                Err(e) => {
                    errors = true;
                    items.push(json!({ key: {
                        "_index": index_name.clone().unwrap_or_default(),
                        "_id": id.clone(),
                        "status": e.status,
                        "error": item_error(&e),
                    }}));
                }
            }
        }
        if wants_refresh(params) {
            st.refresh(&touched);
        }
        drop(st);
        Ok(json!({"took": started.elapsed().as_millis() as u64, "errors": errors, "items": items}))
    }

    /// `PUT|POST /{index}/_doc[/{id}]`, `PUT /{index}/_create/{id}`.
    pub fn index_api(
        &self,
        index: &str,
        id: Option<&str>,
        create: bool,
        params: &HashMap<String, String>,
        body: &[u8],
    ) -> ApiResult<(u16, Value)> {
        let parsed: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "mapper_parsing_exception",
                format!("failed to parse: {e}"),
            )
        })?;
        let op = if create || params.get("op_type").map(String::as_str) == Some("create") {
            OpType::Create
        } else {
            OpType::Index
        };
        let mut st = self.inner.state.write();
        if params.get("require_alias").is_some_and(|v| v != "false") && !st.is_alias(index) {
            return Err(ApiError::index_not_found(index));
        }
        let target = st.write_target(index)?.unwrap_or_else(|| index.to_string());
        let r = st.write_doc(
            &target,
            id,
            params.get("routing").map(String::as_str),
            Bytes::copy_from_slice(body.trim_ascii()),
            &parsed,
            op,
            self.flavor(),
        )?;
        if wants_refresh(params) {
            st.refresh(std::slice::from_ref(&r.index));
        }
        Ok((r.status, r.to_json()))
    }

    /// `GET /{index}/_doc/{id}`.
    pub fn get_api(
        &self,
        index: &str,
        id: &str,
        params: &HashMap<String, String>,
    ) -> ApiResult<(u16, Value)> {
        let st = self.inner.state.read();
        let names = st.resolve(index, Default::default())?;
        let target = names.first().cloned().unwrap_or_else(|| index.to_string());
        let Some(d) = st.get_doc(&target, id, params.get("routing").map(String::as_str)) else {
            return Ok((404, json!({"_index": target, "_id": id, "found": false})));
        };
        let mut out = json!({"_index": target, "_id": id, "_version": d.version, "_seq_no": d.born, "_primary_term": 1, "found": true});
        let filter = source_filter_of(
            params
                .get("_source")
                .map(|s| Value::String(s.clone()))
                .as_ref(),
        )
        .or_else(|| {
            params.get("_source_includes").map(|s| SourceFilter {
                includes: s.split(',').map(str::to_string).collect(),
                ..Default::default()
            })
        });
        let show = params.get("_source").map(String::as_str) != Some("false");
        if show {
            let src: Value = serde_json::from_slice(&d.source).unwrap_or(Value::Null);
            out["_source"] = match filter {
                Some(f) if !f.passthrough() => f.apply(&src),
                _ => src,
            };
        }
        Ok((200, out))
    }

    /// `DELETE /{index}/_doc/{id}`.
    pub fn delete_api(
        &self,
        index: &str,
        id: &str,
        params: &HashMap<String, String>,
    ) -> ApiResult<(u16, Value)> {
        let mut st = self.inner.state.write();
        let target = st
            .write_target(index)?
            .ok_or_else(|| ApiError::index_not_found(index))?;
        let r = st.delete_doc(&target, id, params.get("routing").map(String::as_str))?;
        if wants_refresh(params) {
            st.refresh(std::slice::from_ref(&r.index));
        }
        Ok((r.status, r.to_json()))
    }

    /// `POST /{index}/_update/{id}`.
    pub fn update_api(
        &self,
        index: &str,
        id: &str,
        params: &HashMap<String, String>,
        body: &Value,
    ) -> ApiResult<(u16, Value)> {
        let mut st = self.inner.state.write();
        let target = st.write_target(index)?.unwrap_or_else(|| index.to_string());
        let filter = source_filter_of(
            params
                .get("_source")
                .map(|s| Value::String(s.clone()))
                .as_ref(),
        );
        let (r, get) = do_update(
            &mut st,
            self,
            &target,
            id,
            params.get("routing").map(String::as_str),
            body,
            filter,
        )?;
        if wants_refresh(params) {
            st.refresh(std::slice::from_ref(&r.index));
        }
        let mut v = r.to_json();
        if let Some(g) = get {
            v["get"] = g;
        }
        Ok((r.status, v))
    }
}
