//! API specs: loads the upstream `api/<name>.json` files and turns a `do` call (API name +
//! params) into an HTTP request. Params that fill URL parts go into the path (the path
//! with the most parts filled wins), the others into the query string (lists joined with
//! commas), `body` becomes JSON, or NDJSON for APIs whose body is `"serialize": "bulk"`.
//! `indices.refresh` has no upstream file here, so it is defined in code.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Characters escaped in a path part: everything but unreserved characters and `,`
/// (the list separator the server splits on).
const PATH_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b',');

/// Query parameters every API accepts (upstream keeps them in `_common.json`).
const COMMON_PARAMS: &[&str] = &["pretty", "human", "error_trace", "source", "filter_path"];

#[derive(Debug, Clone)]
pub struct PathSpec {
    pub template: String,
    pub methods: Vec<String>,
    pub parts: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct ApiSpec {
    pub name: String,
    pub paths: Vec<PathSpec>,
    pub params: BTreeSet<String>,
    pub has_body: bool,
    pub bulk_body: bool,
}

/// An HTTP request ready to send (path and query not yet joined to a base URL).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl HttpRequest {
    /// One line for reports: method, path with query, and the body (shortened).
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.path);
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push('?');
            s.push_str(&q.join("&"));
        }
        if let Some(b) = &self.body {
            s.push_str(" body: ");
            s.push_str(&crate::values::truncate(&b.replace('\n', "\\n"), 600));
        }
        s
    }
}

#[derive(Debug, Default)]
pub struct ApiRegistry {
    apis: BTreeMap<String, ApiSpec>,
}

impl ApiRegistry {
    /// Loads every `*.json` spec in `dir` and adds the built-in `indices.refresh`.
    pub fn load_dir(dir: &Path) -> Result<ApiRegistry, String> {
        let mut reg = ApiRegistry::default();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list API specs in {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read API spec {}: {e}", path.display()))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| format!("API spec {} is not JSON: {e}", path.display()))?;
            for spec in
                parse_spec(&json).map_err(|e| format!("API spec {}: {e}", path.display()))?
            {
                reg.apis.insert(spec.name.clone(), spec);
            }
        }
        reg.add_builtin_refresh();
        Ok(reg)
    }

    /// Builds a registry from spec JSON values (used by unit tests).
    pub fn from_specs(specs: &[Value]) -> Result<ApiRegistry, String> {
        let mut reg = ApiRegistry::default();
        for json in specs {
            for spec in parse_spec(json)? {
                reg.apis.insert(spec.name.clone(), spec);
            }
        }
        reg.add_builtin_refresh();
        Ok(reg)
    }

    pub fn len(&self) -> usize {
        self.apis.len()
    }

    fn add_builtin_refresh(&mut self) {
        if self.apis.contains_key("indices.refresh") {
            return;
        }
        let methods = vec!["POST".to_string(), "GET".to_string()];
        self.apis.insert(
            "indices.refresh".to_string(),
            ApiSpec {
                name: "indices.refresh".to_string(),
                paths: vec![
                    PathSpec {
                        template: "/_refresh".into(),
                        methods: methods.clone(),
                        parts: BTreeSet::new(),
                    },
                    PathSpec {
                        template: "/{index}/_refresh".into(),
                        methods,
                        parts: BTreeSet::from(["index".to_string()]),
                    },
                ],
                params: ["ignore_unavailable", "allow_no_indices", "expand_wildcards"]
                    .map(String::from)
                    .into(),
                has_body: false,
                bulk_body: false,
            },
        );
    }

    /// Turns an API call into a request. `params` must already have stashed values replaced.
    pub fn build(
        &self,
        api: &str,
        params: &Map<String, Value>,
        headers: &[(String, String)],
    ) -> Result<HttpRequest, String> {
        let spec = self.apis.get(api).ok_or_else(|| {
            format!(
                "no API spec named [{api}] (looked for api/{api}.json); known: {}",
                self.known()
            )
        })?;
        let all_parts: BTreeSet<&str> = spec
            .paths
            .iter()
            .flat_map(|p| p.parts.iter().map(String::as_str))
            .collect();
        let mut part_values: BTreeMap<&str, String> = BTreeMap::new();
        let mut query = Vec::new();
        let mut body = None;
        for (k, v) in params {
            if k == "body" {
                body = Some(v);
            } else if all_parts.contains(k.as_str()) {
                part_values.insert(k.as_str(), param_text(v));
            } else if spec.params.contains(k) || COMMON_PARAMS.contains(&k.as_str()) {
                query.push((k.clone(), param_text(v)));
            } else {
                return Err(format!("param [{k}] is not supported by API [{api}]"));
            }
        }
        let provided: BTreeSet<&str> = part_values.keys().copied().collect();
        let fits = |p: &&PathSpec| p.parts.iter().all(|part| provided.contains(part.as_str()));
        let best = spec
            .paths
            .iter()
            .filter(fits)
            .map(|p| p.parts.len())
            .max()
            .ok_or_else(|| {
                format!("no path of API [{api}] can be filled from the parts {provided:?}")
            })?;
        // The first path (in spec order) among those with the most parts filled.
        let path = spec
            .paths
            .iter()
            .filter(fits)
            .find(|p| p.parts.len() == best)
            .expect("a path has `best` parts");
        let unused: Vec<&&str> = provided
            .iter()
            .filter(|p| !path.parts.contains(**p))
            .collect();
        if !unused.is_empty() {
            return Err(format!(
                "path parts {unused:?} fit no single path of API [{api}] (chose {})",
                path.template
            ));
        }
        let mut url = path.template.clone();
        for part in &path.parts {
            let value = &part_values[part.as_str()];
            url = url.replace(
                &format!("{{{part}}}"),
                &utf8_percent_encode(value, PATH_PART).to_string(),
            );
        }
        let body_text = match body {
            None => None,
            Some(_) if !spec.has_body => return Err(format!("API [{api}] takes no body")),
            Some(b) if spec.bulk_body => Some(ndjson(b)?),
            Some(Value::String(s)) => Some(s.clone()),
            Some(b) => Some(b.to_string()),
        };
        let method = choose_method(&path.methods, body_text.is_some())
            .ok_or_else(|| format!("path {} of API [{api}] lists no method", path.template))?;
        let mut all_headers: Vec<(String, String)> = headers.to_vec();
        if body_text.is_some()
            && !all_headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            let ct = if spec.bulk_body {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            all_headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        Ok(HttpRequest {
            method,
            path: url,
            query,
            headers: all_headers,
            body: body_text,
        })
    }

    fn known(&self) -> String {
        self.apis.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn choose_method(methods: &[String], has_body: bool) -> Option<String> {
    let has = |m: &str| methods.iter().any(|x| x == m);
    let pick = if has_body {
        ["POST", "PUT"].into_iter().find(|m| has(m))
    } else {
        ["GET"].into_iter().find(|m| has(m))
    };
    pick.map(str::to_string)
        .or_else(|| methods.first().cloned())
}

fn parse_spec(json: &Value) -> Result<Vec<ApiSpec>, String> {
    let obj = json.as_object().ok_or("an API spec must be an object")?;
    let mut out = Vec::new();
    for (name, def) in obj {
        let paths = def
            .pointer("/url/paths")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("[{name}] has no url.paths"))?;
        let mut specs = Vec::new();
        for p in paths {
            let template = p
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("[{name}] path without `path`"))?;
            let methods: Vec<String> = p
                .get("methods")
                .and_then(Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let parts = template_parts(template);
            if let Some(declared) = p.get("parts").and_then(Value::as_object) {
                let declared: BTreeSet<String> = declared.keys().cloned().collect();
                if declared != parts {
                    return Err(format!(
                        "[{name}] path {template}: declared parts {declared:?} != {parts:?}"
                    ));
                }
            }
            specs.push(PathSpec {
                template: template.to_string(),
                methods,
                parts,
            });
        }
        let params = def
            .get("params")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let body = def.get("body").filter(|b| !b.is_null());
        out.push(ApiSpec {
            name: name.clone(),
            paths: specs,
            params,
            has_body: body.is_some(),
            bulk_body: body
                .and_then(|b| b.get("serialize"))
                .and_then(Value::as_str)
                == Some("bulk"),
        });
    }
    Ok(out)
}

fn template_parts(template: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        parts.insert(rest[start + 1..start + len].to_string());
        rest = &rest[start + len + 1..];
    }
    parts
}

/// How a param value is written in a URL: lists joined with commas, scalars as text.
pub fn param_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(param_text).collect::<Vec<_>>().join(","),
        Value::Object(_) => v.to_string(),
    }
}

/// A bulk body: a string as is, or a list whose maps become JSON lines and whose strings
/// are used verbatim. Always ends with a newline.
fn ndjson(body: &Value) -> Result<String, String> {
    let mut out = match body {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut s = String::new();
            for item in items {
                match item {
                    Value::String(line) => s.push_str(line),
                    Value::Object(_) => s.push_str(&item.to_string()),
                    other => {
                        return Err(format!(
                            "a bulk body line must be a map or a string, found {other}"
                        ));
                    }
                }
                s.push('\n');
            }
            s
        }
        Value::Object(_) => body.to_string(),
        other => {
            return Err(format!(
                "a bulk body must be a string or a list, found {other}"
            ));
        }
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> ApiRegistry {
        ApiRegistry::from_specs(&[
            json!({"scroll": {"url": {"paths": [
                {"path": "/_search/scroll", "methods": ["GET", "POST"]},
                {"path": "/_search/scroll/{scroll_id}", "methods": ["GET", "POST"], "parts": {"scroll_id": {}}}
            ]}, "params": {"scroll": {}, "scroll_id": {}, "rest_total_hits_as_int": {}}, "body": {}}}),
            json!({"bulk": {"url": {"paths": [
                {"path": "/_bulk", "methods": ["POST", "PUT"]},
                {"path": "/{index}/_bulk", "methods": ["POST", "PUT"], "parts": {"index": {}}}
            ]}, "params": {"refresh": {}}, "body": {"serialize": "bulk", "required": true}}}),
            json!({"index": {"url": {"paths": [
                {"path": "/{index}/_doc/{id}", "methods": ["PUT", "POST"], "parts": {"id": {}, "index": {}}},
                {"path": "/{index}/_doc", "methods": ["POST"], "parts": {"index": {}}}
            ]}, "params": {"refresh": {}}, "body": {"required": true}}}),
        ])
        .expect("specs parse")
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn path_parts_win_over_query_params_and_are_encoded() {
        let r = registry();
        let req = r
            .build(
                "scroll",
                &params(json!({"scroll_id": "a+b/c==", "scroll": "1m"})),
                &[],
            )
            .expect("builds");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/_search/scroll/a%2Bb%2Fc%3D%3D");
        assert_eq!(req.query, vec![("scroll".to_string(), "1m".to_string())]);
        let req = r
            .build("scroll", &params(json!({"body": {"scroll_id": "x"}})), &[])
            .expect("builds");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/_search/scroll");
        assert_eq!(req.body.as_deref(), Some(r#"{"scroll_id":"x"}"#));
    }

    #[test]
    fn most_parts_filled_wins() {
        let r = registry();
        let req = r
            .build(
                "index",
                &params(json!({"index": "t", "id": 42, "body": {"a": 1}})),
                &[],
            )
            .expect("builds");
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/t/_doc/42")
        );
        let req = r
            .build(
                "index",
                &params(json!({"index": "t", "body": {"a": 1}})),
                &[],
            )
            .expect("builds");
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/t/_doc")
        );
        assert!(
            r.build("index", &params(json!({"id": 1, "body": {}})), &[])
                .is_err()
        );
    }

    #[test]
    fn lists_join_with_commas_and_unknown_params_fail() {
        let r = registry();
        let req = r
            .build(
                "indices.refresh",
                &params(json!({"index": ["a", "b"]})),
                &[],
            )
            .expect("builds");
        assert_eq!(req.path, "/a,b/_refresh");
        assert_eq!(
            r.build("indices.refresh", &Map::new(), &[])
                .expect("builds")
                .path,
            "/_refresh"
        );
        let err = r
            .build("bulk", &params(json!({"bogus": 1, "body": []})), &[])
            .expect_err("unknown param");
        assert!(err.contains("bogus"), "{err}");
        assert!(r.build("no.such.api", &Map::new(), &[]).is_err());
    }

    #[test]
    fn bulk_bodies_are_ndjson() {
        let r = registry();
        let body = json!([{"index": {"_index": "t", "_id": "1"}}, {"f": 1}, "{\"index\": {}}", "{\"f\": 2}"]);
        let req = r
            .build("bulk", &params(json!({"refresh": true, "body": body})), &[])
            .expect("builds");
        assert_eq!(
            req.body.as_deref(),
            Some(
                "{\"index\":{\"_index\":\"t\",\"_id\":\"1\"}}\n{\"f\":1}\n{\"index\": {}}\n{\"f\": 2}\n"
            )
        );
        assert_eq!(req.query, vec![("refresh".to_string(), "true".to_string())]);
        assert!(req.headers.contains(&(
            "Content-Type".to_string(),
            "application/x-ndjson".to_string()
        )));
        let req = r
            .build(
                "bulk",
                &params(json!({"body": "{\"index\":{}}\n{}"})),
                &[("content-type".into(), "application/json".into())],
            )
            .expect("builds");
        assert_eq!(req.body.as_deref(), Some("{\"index\":{}}\n{}\n"));
        assert_eq!(
            req.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
    }
}
