//! Administrative APIs: `GET /` info per flavor, index create/delete/get/exists, mappings,
//! index settings, aliases, cluster settings, cluster health, `_cat/indices` and `_refresh`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use crate::Flavor;
use crate::cluster::{Cluster, IndicesOptions, flatten_settings, flatten_values, nest};
use crate::error::{ApiError, ApiResult};

const DYNAMIC_INDEX_SETTINGS: &[&str] = &[
    "max_result_window",
    "max_slices_per_scroll",
    "max_slices_per_pit",
    "number_of_replicas",
    "refresh_interval",
    "max_inner_result_window",
    "blocks.write",
    "blocks.read_only",
];

fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("tb", 1099511627776.0),
        ("gb", 1073741824.0),
        ("mb", 1048576.0),
        ("kb", 1024.0),
    ];
    for (u, size) in UNITS {
        if b as f64 >= size {
            return format!("{:.1}{u}", b as f64 / size);
        }
    }
    format!("{b}b")
}

impl Cluster {
    /// `GET /`.
    pub fn info(&self) -> Value {
        let c = self.config();
        let uuid = "c2VhcmNoc2ltLWNsdXN0";
        match c.flavor {
            Flavor::OpenSearch => {
                let major: u32 = c
                    .version
                    .split('.')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(2);
                json!({
                    "name": "searchsim-node-1",
                    "cluster_name": c.cluster_name,
                    "cluster_uuid": uuid,
                    "version": {
                        "distribution": "opensearch",
                        "number": c.version,
                        "build_type": "tar",
                        "build_hash": "0000000000000000000000000000000000000000",
                        "build_date": "2025-01-01T00:00:00.000000Z",
                        "build_snapshot": false,
                        "lucene_version": if major >= 3 { "10.2.2" } else { "9.12.1" },
                        "minimum_wire_compatibility_version": if major >= 3 { "2.19.0" } else { "7.10.0" },
                        "minimum_index_compatibility_version": if major >= 3 { "2.0.0" } else { "7.0.0" },
                    },
                    "tagline": "The OpenSearch Project: https://opensearch.org/",
                })
            }
            Flavor::Elasticsearch => json!({
                "name": "searchsim-node-1",
                "cluster_name": c.cluster_name,
                "cluster_uuid": uuid,
                "version": {
                    "number": c.version,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "build_hash": "0000000000000000000000000000000000000000",
                    "build_date": "2025-01-01T00:00:00.000000000Z",
                    "build_snapshot": false,
                    "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }),
        }
    }

    /// `PUT /{index}`.
    pub fn create_index_api(&self, name: &str, body: Option<&Value>) -> ApiResult<Value> {
        let body = body.cloned().unwrap_or_else(|| json!({}));
        if let Some(o) = body.as_object() {
            for k in o.keys() {
                if !["settings", "mappings", "aliases"].contains(&k.as_str()) {
                    return Err(ApiError::parsing(format!(
                        "unknown key [{k}] for create index"
                    )));
                }
            }
        }
        self.inner
            .state
            .write()
            .create_index(name, &body, self.flavor())?;
        Ok(json!({"acknowledged": true, "shards_acknowledged": true, "index": name}))
    }

    /// `DELETE /{index}`.
    pub fn delete_index_api(
        &self,
        expr: &str,
        params: &HashMap<String, String>,
    ) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let opts = IndicesOptions::from_params(params, IndicesOptions::default());
        // deleting through an alias is refused like the real servers
        for part in expr.split(',') {
            if !part.contains('*')
                && part != "_all"
                && !part.starts_with('-')
                && !st.indices.contains_key(part)
                && st.is_alias(part)
            {
                return Err(ApiError::illegal(format!(
                    "The provided expression [{part}] matches an alias, specify the corresponding concrete indices instead."
                )));
            }
        }
        let names = st.resolve(expr, opts)?;
        for n in &names {
            st.indices.remove(n);
        }
        drop(st);
        self.inner.cache.lock().clear();
        Ok(json!({"acknowledged": true}))
    }

    fn index_settings_json(idx: &crate::cluster::Index, flat: bool) -> Value {
        let mut m: BTreeMap<String, Value> = idx
            .settings
            .iter()
            .map(|(k, v)| (format!("index.{k}"), json!(v)))
            .collect();
        m.insert("index.uuid".into(), json!(idx.uuid));
        m.insert("index.provided_name".into(), json!(idx.name));
        m.insert(
            "index.creation_date".into(),
            json!(idx.created_ms.to_string()),
        );
        m.insert(
            "index.number_of_routing_shards".into(),
            json!(idx.routing_shards.to_string()),
        );
        m.insert("index.version.created".into(), json!("136387927"));
        if flat { json!(m) } else { nest(&m) }
    }

    /// `GET /{index}`.
    pub fn get_index_api(&self, expr: &str, params: &HashMap<String, String>) -> ApiResult<Value> {
        let st = self.inner.state.read();
        let names = st.resolve(
            expr,
            IndicesOptions::from_params(params, IndicesOptions::default()),
        )?;
        let flat = params.get("flat_settings").is_some_and(|v| v != "false");
        let mut out = Map::new();
        for n in names {
            let idx = &st.indices[&n];
            out.insert(
                n.clone(),
                json!({
                    "aliases": idx.aliases,
                    "mappings": idx.mapping.to_json(),
                    "settings": Self::index_settings_json(idx, flat),
                }),
            );
        }
        Ok(Value::Object(out))
    }

    /// `HEAD /{index}`.
    pub fn index_exists(&self, expr: &str) -> bool {
        let st = self.inner.state.read();
        st.resolve(
            expr,
            IndicesOptions {
                allow_no_indices: false,
                ..IndicesOptions::default()
            },
        )
        .is_ok()
    }

    /// `GET /{index}/_mapping`.
    pub fn get_mapping_api(
        &self,
        expr: Option<&str>,
        params: &HashMap<String, String>,
    ) -> ApiResult<Value> {
        let st = self.inner.state.read();
        let names = st.resolve(
            expr.unwrap_or("_all"),
            IndicesOptions::from_params(params, IndicesOptions::default()),
        )?;
        let mut out = Map::new();
        for n in names {
            out.insert(
                n.clone(),
                json!({"mappings": st.indices[&n].mapping.to_json()}),
            );
        }
        Ok(Value::Object(out))
    }

    /// `PUT /{index}/_mapping`.
    pub fn put_mapping_api(&self, expr: &str, body: &Value) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let names = st.resolve(
            expr,
            IndicesOptions {
                allow_no_indices: false,
                ..IndicesOptions::default()
            },
        )?;
        for n in names {
            if let Some(idx) = st.indices.get_mut(&n) {
                idx.mapping
                    .merge(body)
                    .map_err(|e| ApiError::new(400, "mapper_parsing_exception", e))?;
            }
        }
        Ok(json!({"acknowledged": true}))
    }

    /// `GET /{index}/_settings`.
    pub fn get_settings_api(
        &self,
        expr: Option<&str>,
        params: &HashMap<String, String>,
    ) -> ApiResult<Value> {
        let st = self.inner.state.read();
        let names = st.resolve(
            expr.unwrap_or("_all"),
            IndicesOptions::from_params(params, IndicesOptions::default()),
        )?;
        let flat = params.get("flat_settings").is_some_and(|v| v != "false");
        let mut out = Map::new();
        for n in names {
            out.insert(
                n.clone(),
                json!({"settings": Self::index_settings_json(&st.indices[&n], flat)}),
            );
        }
        Ok(Value::Object(out))
    }

    /// `PUT /{index}/_settings`.
    pub fn put_settings_api(&self, expr: Option<&str>, body: &Value) -> ApiResult<Value> {
        let mut flat = BTreeMap::new();
        let body = body.get("settings").unwrap_or(body);
        flatten_settings(body, "", &mut flat);
        let mut nulls = BTreeMap::new();
        flatten_values(body, "", &mut nulls);
        let mut st = self.inner.state.write();
        let names = st.resolve(
            expr.unwrap_or("_all"),
            IndicesOptions {
                allow_no_indices: false,
                ..IndicesOptions::default()
            },
        )?;
        for k in nulls.keys().chain(flat.keys()) {
            let key = k.strip_prefix("index.").unwrap_or(k);
            if !DYNAMIC_INDEX_SETTINGS.contains(&key)
                && (key == "number_of_shards" || key == "number_of_routing_shards")
            {
                return Err(ApiError::illegal(format!(
                    "Can't update non dynamic settings [[index.{key}]] for open indices [{}]",
                    names
                        .iter()
                        .map(|n| format!("[{n}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for n in names {
            let Some(idx) = st.indices.get_mut(&n) else {
                continue;
            };
            for (k, v) in &nulls {
                let key = k.strip_prefix("index.").unwrap_or(k).to_string();
                if v.is_null() {
                    idx.settings.remove(&key);
                }
            }
            for (k, v) in &flat {
                idx.settings
                    .insert(k.strip_prefix("index.").unwrap_or(k).to_string(), v.clone());
            }
        }
        Ok(json!({"acknowledged": true}))
    }

    /// `PUT /{index}/_alias/{name}` (body may carry `is_write_index`, `filter`, `routing`).
    pub fn put_alias_api(&self, expr: &str, alias: &str, body: Option<&Value>) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let names = st.resolve(
            expr,
            IndicesOptions {
                allow_no_indices: false,
                ..IndicesOptions::default()
            },
        )?;
        if st.indices.contains_key(alias) {
            return Err(ApiError::new(
                400,
                "invalid_alias_name_exception",
                format!(
                    "Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
                ),
            ));
        }
        let props = body
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        for n in names {
            if let Some(idx) = st.indices.get_mut(&n) {
                idx.aliases.insert(alias.to_string(), props.clone());
            }
        }
        Ok(json!({"acknowledged": true}))
    }

    /// `DELETE /{index}/_alias/{name}`.
    pub fn delete_alias_api(&self, expr: &str, alias: &str) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let names = st.resolve(expr, IndicesOptions::default())?;
        let mut found = false;
        for n in names {
            if let Some(idx) = st.indices.get_mut(&n) {
                let before = idx.aliases.len();
                idx.aliases
                    .retain(|a, _| !crate::cluster::wildcard_match(alias, a));
                found |= idx.aliases.len() != before;
            }
        }
        if !found {
            return Err(ApiError::new(
                404,
                "aliases_not_found_exception",
                format!("aliases [{alias}] missing"),
            ));
        }
        Ok(json!({"acknowledged": true}))
    }

    /// `POST /_aliases`.
    pub fn update_aliases_api(&self, body: &Value) -> ApiResult<Value> {
        let actions = body
            .get("actions")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ApiError::validation(&["At least one action must be specified".into()])
            })?;
        for a in actions {
            let Some((kind, spec)) = a.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let indices: Vec<String> = match (spec.get("index"), spec.get("indices")) {
                (Some(Value::String(s)), _) => vec![s.clone()],
                (_, Some(Value::Array(a))) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let aliases: Vec<String> = match (spec.get("alias"), spec.get("aliases")) {
                (Some(Value::String(s)), _) => vec![s.clone()],
                (_, Some(Value::Array(a))) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let mut props = spec.as_object().cloned().unwrap_or_default();
            for k in ["index", "indices", "alias", "aliases"] {
                props.remove(k);
            }
            for i in &indices {
                match kind.as_str() {
                    "add" => {
                        for al in &aliases {
                            self.put_alias_api(i, al, Some(&Value::Object(props.clone())))?;
                        }
                    }
                    "remove" => {
                        for al in &aliases {
                            self.delete_alias_api(i, al)?;
                        }
                    }
                    "remove_index" => {
                        self.delete_index_api(i, &HashMap::new())?;
                    }
                    other => {
                        return Err(ApiError::illegal(format!("Unsupported action [{other}]")));
                    }
                }
            }
        }
        Ok(json!({"acknowledged": true}))
    }

    /// `GET /_alias[/{name}]`, `GET /{index}/_alias`.
    pub fn get_aliases_api(
        &self,
        expr: Option<&str>,
        alias: Option<&str>,
    ) -> ApiResult<(u16, Value)> {
        let st = self.inner.state.read();
        let names = st.resolve(expr.unwrap_or("_all"), IndicesOptions::default())?;
        let mut out = Map::new();
        for n in names {
            let idx = &st.indices[&n];
            let al: Map<String, Value> = idx
                .aliases
                .iter()
                .filter(|(a, _)| {
                    alias.is_none_or(|p| p.split(',').any(|x| crate::cluster::wildcard_match(x, a)))
                })
                .map(|(a, v)| (a.clone(), v.clone()))
                .collect();
            if alias.is_none() || !al.is_empty() {
                out.insert(n.clone(), json!({"aliases": al}));
            }
        }
        if alias.is_some() && out.is_empty() {
            return Ok((
                404,
                json!({"error": format!("alias [{}] missing", alias.unwrap_or_default()), "status": 404}),
            ));
        }
        Ok((200, Value::Object(out)))
    }

    /// `PUT /_cluster/settings`.
    pub fn put_cluster_settings_api(&self, body: &Value) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        for scope in ["persistent", "transient"] {
            let Some(v) = body.get(scope) else { continue };
            let mut flat = BTreeMap::new();
            flatten_values(v, "", &mut flat);
            let target = if scope == "persistent" {
                &mut st.persistent
            } else {
                &mut st.transient
            };
            for (k, v) in flat {
                if v.is_null() {
                    target.remove(&k);
                } else {
                    target.insert(k, v);
                }
            }
        }
        Ok(
            json!({"acknowledged": true, "persistent": nest(&st.persistent), "transient": nest(&st.transient)}),
        )
    }

    /// `GET /_cluster/settings`.
    pub fn get_cluster_settings_api(&self, params: &HashMap<String, String>) -> Value {
        let st = self.inner.state.read();
        if params.get("flat_settings").is_some_and(|v| v != "false") {
            json!({"persistent": st.persistent, "transient": st.transient})
        } else {
            json!({"persistent": nest(&st.persistent), "transient": nest(&st.transient)})
        }
    }

    /// `GET /_cluster/health[/{index}]`.
    pub fn health_api(&self, expr: Option<&str>) -> ApiResult<Value> {
        let st = self.inner.state.read();
        let names = match expr {
            Some(e) => st.resolve(e, IndicesOptions::default())?,
            None => st.indices.keys().cloned().collect(),
        };
        let shards: usize = names
            .iter()
            .filter_map(|n| st.indices.get(n))
            .map(|i| i.shards.len())
            .sum();
        Ok(json!({
            "cluster_name": self.config().cluster_name,
            "status": "green",
            "timed_out": false,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
            "discovered_master": true,
            "discovered_cluster_manager": true,
            "active_primary_shards": shards,
            "active_shards": shards,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": 0,
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0,
        }))
    }

    /// `_cat/indices` (JSON rows when `format=json`, else the text table).
    pub fn cat_indices_api(
        &self,
        expr: Option<&str>,
        params: &HashMap<String, String>,
    ) -> ApiResult<(bool, Value, String)> {
        let st = self.inner.state.read();
        let names = st.resolve(
            expr.unwrap_or("_all"),
            IndicesOptions::from_params(params, IndicesOptions::default()),
        )?;
        let bytes_b = params.get("bytes").map(String::as_str) == Some("b");
        let mut rows = Vec::new();
        for n in &names {
            let idx = &st.indices[n];
            let docs = idx.doc_count();
            let deleted: u64 = idx.shards.iter().map(|s| s.deleted).sum();
            let size: u64 = idx.shards.iter().map(|s| s.bytes).sum();
            let size_s = if bytes_b {
                size.to_string()
            } else {
                human_bytes(size)
            };
            rows.push(json!({
                "health": "green",
                "status": "open",
                "index": n,
                "uuid": idx.uuid,
                "pri": idx.shards.len().to_string(),
                "rep": idx.settings.get("number_of_replicas").cloned().unwrap_or_else(|| "1".into()),
                "docs.count": docs.to_string(),
                "docs.deleted": deleted.to_string(),
                "store.size": size_s,
                "pri.store.size": size_s,
            }));
        }
        if params.get("format").map(String::as_str) == Some("json") {
            return Ok((true, Value::Array(rows), String::new()));
        }
        let cols = [
            "health",
            "status",
            "index",
            "uuid",
            "pri",
            "rep",
            "docs.count",
            "docs.deleted",
            "store.size",
            "pri.store.size",
        ];
        let mut table: Vec<Vec<String>> = Vec::new();
        if params.contains_key("v") {
            table.push(cols.iter().map(|c| c.to_string()).collect());
        }
        for r in &rows {
            table.push(
                cols.iter()
                    .map(|c| r[*c].as_str().unwrap_or_default().to_string())
                    .collect(),
            );
        }
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
            .collect();
        let mut text = String::new();
        for row in table {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            text.push_str(line.join(" ").trim_end());
            text.push('\n');
        }
        Ok((false, Value::Null, text))
    }

    /// `_refresh`.
    pub fn refresh_api(
        &self,
        expr: Option<&str>,
        params: &HashMap<String, String>,
    ) -> ApiResult<Value> {
        let mut st = self.inner.state.write();
        let names = st.resolve(
            expr.unwrap_or("_all"),
            IndicesOptions::from_params(params, IndicesOptions::default()),
        )?;
        st.refresh(&names);
        let shards: usize = names
            .iter()
            .filter_map(|n| st.indices.get(n))
            .map(|i| i.shards.len())
            .sum();
        Ok(json!({"_shards": {"total": shards * 2, "successful": shards, "failed": 0}}))
    }
}
