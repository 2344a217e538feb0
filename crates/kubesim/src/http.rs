//! The HTTP face: one axum fallback handler parses the Kubernetes path grammar
//! (`/api/v1/...`, `/apis/<g>/<v>/...`, `[namespaces/<ns>/]<plural>[/<name>[/status]]`, the
//! legacy `/watch/` prefix), authenticates the bearer token, records the request, and turns
//! store results into JSON, `Status` bodies, Tables or a watch stream of JSON-lines
//! `WatchEvent`s with bookmarks, replay, `sendInitialEvents` and 410 for compacted RVs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures::SinkExt;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::Error;
use crate::resources::ResourceType;
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{RequestRecord, Shared};
use crate::store::{DeleteOpts, Event, EventType, FieldValidation, ListOpts, Store, WriteOpts};

const MAX_BODY: usize = 64 * 1024 * 1024;

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn error_response(e: &Error) -> Response {
    json_response(e.code(), &e.to_status(), &[])
}

/// Where a request goes.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    OpenApiV3Root,
    OpenApiV3Doc(String, String),
    Health,
    Resource {
        rt: Arc<ResourceType>,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
        legacy_watch: bool,
    },
}

fn parse_route(store: &Store, path: &str) -> Result<Route, Error> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || Error::NoSuchResource(path.to_string());
    match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => return Ok(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Route::GroupVersion(g.to_string(), v.to_string())),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3Root),
        ["openapi", "v3", "api", v] => {
            return Ok(Route::OpenApiV3Doc(String::new(), v.to_string()));
        }
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiV3Doc(g.to_string(), v.to_string()));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Err(not_found()),
    };
    let mut rest: Vec<&str> = rest.to_vec();
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest.remove(0);
    }
    let lookup = |plural: &str| store.lookup(&group, &version, plural).ok_or_else(not_found);
    let (rt, namespace, name, subresource) = match rest.as_slice() {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && matches!(*plural, "status" | "finalize")
                && tail.is_empty()) =>
        {
            let rt = lookup(plural)?;
            if !rt.namespaced {
                return Err(not_found());
            }
            match tail {
                [] => (rt, Some(ns.to_string()), None, None),
                [name] => (rt, Some(ns.to_string()), Some(name.to_string()), None),
                [name, sub] => (
                    rt,
                    Some(ns.to_string()),
                    Some(name.to_string()),
                    Some(sub.to_string()),
                ),
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] => {
            let rt = lookup(plural)?;
            match tail {
                [] => (rt, None, None, None),
                _ if rt.namespaced => return Err(not_found()),
                [name] => (rt, None, Some(name.to_string()), None),
                [name, sub] => (rt, None, Some(name.to_string()), Some(sub.to_string())),
                _ => return Err(not_found()),
            }
        }
        [] => return Err(not_found()),
    };
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return Err(not_found());
    }
    Ok(Route::Resource {
        rt,
        namespace,
        name,
        subresource,
        legacy_watch,
    })
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if has_name => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

fn query_map(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// The one handler behind every path.
pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let q = query_map(&query);
    let header_str = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let user_agent = header_str(header::USER_AGENT);
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let auth = header_str(header::AUTHORIZATION);
    let user = match auth.strip_prefix("Bearer ").map(str::trim) {
        Some(token) => shared.user_for_token(token),
        None => Some(crate::server::ANONYMOUS.to_string()),
    };
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let route = {
        let store = shared.store.lock();
        parse_route(&store, &path)
    };
    let (verb, resource) = match &route {
        Ok(Route::Resource {
            rt,
            namespace,
            name,
            subresource,
            legacy_watch,
        }) => (
            verb_of(&parts.method, name.is_some(), watch || *legacy_watch).to_string(),
            Some((
                rt.clone(),
                namespace.clone(),
                name.clone(),
                subresource.clone(),
            )),
        ),
        _ => (parts.method.as_str().to_lowercase(), None),
    };
    let mut record = RequestRecord {
        user: user.clone().unwrap_or_default(),
        verb,
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        user_agent: user_agent.clone(),
        group: resource.as_ref().map(|r| r.0.group.clone()),
        version: resource.as_ref().map(|r| r.0.version.clone()),
        resource: resource.as_ref().map(|r| r.0.plural.clone()),
        subresource: resource.as_ref().and_then(|r| r.3.clone()),
        namespace: resource.as_ref().and_then(|r| r.1.clone()),
        name: resource.as_ref().and_then(|r| r.2.clone()),
        code: 0,
    };
    let response = if user.is_none() {
        error_response(&Error::Unauthorized)
    } else {
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                let resp = error_response(&Error::BadRequest(format!(
                    "could not read the request body: {e}"
                )));
                record.code = resp.status().as_u16();
                shared.record(record);
                return resp;
            }
        };
        let ctx = Ctx {
            shared: &shared,
            q: &q,
            accept: &accept,
            content_type: &content_type,
            user_agent: &user_agent,
        };
        match route {
            Ok(r) => dispatch(&ctx, &parts.method, r, watch, body),
            Err(e) => error_response(&e),
        }
    };
    record.code = response.status().as_u16();
    shared.record(record);
    response
}

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    q: &'a HashMap<String, String>,
    accept: &'a str,
    content_type: &'a str,
    user_agent: &'a str,
}

fn dispatch(ctx: &Ctx<'_>, method: &Method, route: Route, watch: bool, body: Bytes) -> Response {
    let shared = ctx.shared;
    let read_only = |v: Option<Value>| match v {
        Some(v) if *method == Method::GET => json_response(200, &v, &[]),
        Some(_) => error_response(&Error::MethodNotAllowed(method.to_string())),
        None => error_response(&Error::NoSuchResource("no such group or version".into())),
    };
    match route {
        Route::Version => read_only(Some(discovery::version())),
        Route::Health => read_only(Some(json!("ok"))),
        Route::CoreVersions => read_only(Some(discovery::core_versions(&shared.server_address()))),
        Route::Groups => read_only(Some(discovery::group_list(&shared.store.lock()))),
        Route::Group(g) => read_only(discovery::group(&shared.store.lock(), &g)),
        Route::GroupVersion(g, v) => {
            read_only(discovery::resource_list(&shared.store.lock(), &g, &v))
        }
        Route::OpenApiV3Root => read_only(Some(discovery::openapi_root(&shared.store.lock()))),
        Route::OpenApiV3Doc(g, v) => {
            read_only(discovery::openapi_doc(&shared.store.lock(), &g, &v))
        }
        Route::Resource {
            rt,
            namespace,
            name,
            subresource,
            legacy_watch,
        } => {
            let r = resource_request(
                ctx,
                method,
                &rt,
                namespace.as_deref(),
                name.as_deref(),
                subresource.as_deref(),
                watch || legacy_watch,
                body,
            );
            r.unwrap_or_else(|e| error_response(&e))
        }
    }
}

fn write_opts(ctx: &Ctx<'_>) -> Result<WriteOpts, Error> {
    let explicit = ctx.q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    let field_manager = explicit.clone().unwrap_or_else(|| {
        let ua = ctx.user_agent.split('/').next().unwrap_or("").trim();
        if ua.is_empty() {
            "unknown".to_string()
        } else {
            ua.to_string()
        }
    });
    let field_validation = match ctx.q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            )));
        }
    };
    let dry_run = match ctx.q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "dryRun must be \"All\", got {other:?}"
            )));
        }
    };
    Ok(WriteOpts {
        field_manager,
        explicit_manager: explicit.is_some(),
        field_validation,
        dry_run,
        force: matches!(ctx.q.get("force").map(String::as_str), Some("true" | "1")),
    })
}

fn list_opts(ctx: &Ctx<'_>, rt: &ResourceType) -> Result<ListOpts, Error> {
    let labels = LabelSelector::parse(ctx.q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(Error::BadRequest)?;
    let allowed = |k: &str| {
        k == "metadata.name"
            || (k == "metadata.namespace" && rt.namespaced)
            || !rt.custom
            || rt.selectable_fields.iter().any(|f| f == k)
    };
    let fields = FieldSelector::parse(
        ctx.q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        allowed,
    )
    .map_err(|e| {
        Error::BadRequest(format!(
            "Unable to find \"{}\" that match label selector \"\", field selector \"{}\": {e}",
            rt.plural,
            ctx.q.get("fieldSelector").cloned().unwrap_or_default()
        ))
    })?;
    let limit = match ctx.q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l.parse::<usize>().map_err(|_| {
            Error::BadRequest(format!("limit must be a non-negative integer, got {l:?}"))
        })?,
        None => 0,
    };
    Ok(ListOpts {
        labels,
        fields,
        limit,
        continue_token: ctx.q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn parse_body(body: &Bytes) -> Result<Value, Error> {
    if body.is_empty() {
        return Err(Error::BadRequest(
            "the request body is empty; send the object as JSON".into(),
        ));
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml_ng::from_slice(body))
        .map_err(|e| Error::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn wants_metadata(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

/// The `meta.k8s.io/v1` PartialObjectMetadata form of an object.
fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

#[allow(clippy::too_many_arguments)]
fn resource_request(
    ctx: &Ctx<'_>,
    method: &Method,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    watch: bool,
    body: Bytes,
) -> Result<Response, Error> {
    let shared = ctx.shared;
    let status_only = sub == Some("status");
    match (method.clone(), name) {
        (Method::GET, _) if watch => {
            let opts = list_opts(ctx, rt)?;
            let mut fields = opts.fields;
            if let Some(n) = name {
                fields = FieldSelector::parse(&format!("metadata.name={n}"), |_| true)
                    .map_err(Error::BadRequest)?;
            }
            start_watch(ctx, rt.clone(), ns.map(str::to_string), opts.labels, fields)
        }
        (Method::GET, Some(name)) => {
            let store = shared.store.lock();
            let obj = store.get(rt, ns, name)?;
            let mut out = store.present(rt, &obj);
            if status_only && !rt.status_subresource {
                return Err(Error::NoSuchResource(format!("{}/status", rt.plural)));
            }
            if wants_table(ctx.accept) {
                out = discovery::table(
                    rt,
                    &[out],
                    json!({"resourceVersion": store.resource_version().to_string()}),
                );
            } else if wants_metadata(ctx.accept) {
                out = partial(&out);
            }
            Ok(json_response(200, &out, &[]))
        }
        (Method::GET, None) => {
            let opts = list_opts(ctx, rt)?;
            let store = shared.store.lock();
            if let (Some(rv), Some("Exact")) = (
                ctx.q.get("resourceVersion"),
                ctx.q.get("resourceVersionMatch").map(String::as_str),
            ) && let Ok(n) = rv.parse::<u64>()
                && n != store.resource_version()
                && n < store.compacted_rv()
            {
                return Err(Error::Gone(format!(
                    "too old resource version: {n} ({})",
                    store.compacted_rv()
                )));
            }
            let list = store.list(rt, ns, &opts)?;
            if wants_table(ctx.accept) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(json_response(
                    200,
                    &discovery::table(rt, &items, list["metadata"].clone()),
                    &[],
                ));
            }
            if wants_metadata(ctx.accept) {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .map(|a| a.iter().map(partial).collect())
                    .unwrap_or_default();
                let out = json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list["metadata"].clone(),
                    "items": items,
                });
                return Ok(json_response(200, &out, &[]));
            }
            Ok(json_response(200, &list, &[]))
        }
        (Method::POST, None) => {
            let opts = write_opts(ctx)?;
            let obj = parse_body(&body)?;
            let mut store = shared.store.lock();
            let w = store.create(rt, ns, obj, &opts)?;
            let out = store.present(rt, &w.body);
            Ok(json_response(w.code, &out, &w.warnings))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_opts(ctx)?;
            let obj = parse_body(&body)?;
            let mut store = shared.store.lock();
            let w = store.update(rt, ns, name, status_only, obj, &opts)?;
            let out = store.present(rt, &w.body);
            Ok(json_response(w.code, &out, &w.warnings))
        }
        (Method::PATCH, Some(name)) => {
            let opts = write_opts(ctx)?;
            let mut body = body.to_vec();
            if ctx
                .content_type
                .starts_with("application/strategic-merge-patch+json")
                && !rt.custom
            {
                // built-in kinds: strategic merge without list merge keys, directives dropped
                let mut v: Value =
                    serde_json::from_slice(&body).map_err(|e| Error::BadRequest(e.to_string()))?;
                strip_directives(&mut v);
                body = v.to_string().into_bytes();
            }
            let mut store = shared.store.lock();
            let w = store.patch(rt, ns, name, status_only, ctx.content_type, &body, &opts)?;
            let out = store.present(rt, &w.body);
            Ok(json_response(w.code, &out, &w.warnings))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_opts(ctx, &body)?;
            let mut store = shared.store.lock();
            let w = store.delete(rt, ns, name, &opts)?;
            let out = if w.is_status {
                w.body
            } else {
                store.present(rt, &w.body)
            };
            Ok(json_response(w.code, &out, &w.warnings))
        }
        (Method::DELETE, None) => {
            let opts = delete_opts(ctx, &body)?;
            let lopts = list_opts(ctx, rt)?;
            let mut store = shared.store.lock();
            let list = store.list(
                rt,
                ns,
                &ListOpts {
                    limit: 0,
                    continue_token: None,
                    ..lopts
                },
            )?;
            let mut deleted = Vec::new();
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let n = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let item_ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let w = store.delete(rt, item_ns.as_deref(), &n, &opts)?;
                deleted.push(if w.is_status {
                    store.present(rt, &item)
                } else {
                    store.present(rt, &w.body)
                });
            }
            let out = json!({
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": deleted,
            });
            Ok(json_response(200, &out, &[]))
        }
        _ => Err(Error::MethodNotAllowed(format!("{method} {}", rt.plural))),
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn delete_opts(ctx: &Ctx<'_>, body: &Bytes) -> Result<DeleteOpts, Error> {
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("DeleteOptions body is not valid JSON: {e}")))?
    };
    let propagation = v
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ctx.q.get("propagationPolicy").cloned())
        .or_else(
            || match v.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan".to_string()),
                _ => None,
            },
        );
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(Error::invalid(
            Default::default(),
            "FieldValueNotSupported",
            "propagationPolicy",
            format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ),
        ));
    }
    let dry_run = v
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == "All"))
        || ctx.q.get("dryRun").map(String::as_str) == Some("All");
    Ok(DeleteOpts {
        propagation,
        uid: v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

/// The filter one watch applies to events.
struct WatchFilter {
    key: (String, String),
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event this watcher sees for a change, if any: leaving the selector is DELETED,
    /// entering it is ADDED.
    fn convert(&self, ev: &Event) -> Option<(&'static str, Value)> {
        if ev.key != self.key || self.namespace.as_ref().is_some_and(|n| *n != ev.namespace) {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.kind {
            EventType::Added => now.then(|| ("ADDED", ev.object.clone())),
            EventType::Deleted => now.then(|| ("DELETED", ev.object.clone())),
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", ev.object.clone())),
                    (false, true) => Some(("ADDED", ev.object.clone())),
                    (true, false) => Some(("DELETED", ev.object.clone())),
                    (false, false) => None,
                }
            }
        }
    }
}

fn present_event(rt: &ResourceType, kind: &str, obj: &Value, metadata_only: bool) -> Bytes {
    let mut o = obj.clone();
    o["apiVersion"] = Value::String(rt.api_version());
    o["kind"] = Value::String(rt.kind.clone());
    if let Some(s) = &rt.schema {
        schema::apply_defaults(&mut o, s);
    }
    if metadata_only {
        o = partial(&o);
    }
    let mut line = json!({"type": kind, "object": o}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut line = json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired(rv: u64, oldest: u64) -> Bytes {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({oldest})"),
        "reason": "Expired", "code": 410,
    });
    let mut line = json!({"type": "ERROR", "object": status}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn start_watch(
    ctx: &Ctx<'_>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
) -> Result<Response, Error> {
    let q = ctx.q;
    let metadata_only = wants_metadata(ctx.accept);
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true" || v == "1");
    let rv_param = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
    if send_initial == Some(true) {
        if !bookmarks {
            return Err(Error::invalid(Default::default(), "FieldValueForbidden", "allowWatchBookmarks",
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks=true".into()));
        }
        if q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            return Err(Error::invalid(Default::default(), "FieldValueForbidden", "resourceVersionMatch",
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into()));
        }
    }
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) if t > 0 => Duration::from_secs(t),
        _ => ctx.shared.options.default_watch_timeout,
    };
    let filter = WatchFilter {
        key: rt.storage_key(),
        namespace: namespace.clone(),
        labels,
        fields,
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let mut end_after_initial = false;
    let (rx, start_rv) = {
        let store = ctx.shared.store.lock();
        let current = store.resource_version();
        let snapshot = |initial: &mut Vec<Bytes>| {
            for o in store.objects(&rt, namespace.as_deref()) {
                if filter.matches(&o) {
                    initial.push(present_event(&rt, "ADDED", &o, metadata_only));
                }
            }
        };
        match (send_initial, rv_param.as_deref()) {
            (Some(true), _) => {
                snapshot(&mut initial);
                initial.push(bookmark(&rt, current, true));
            }
            (Some(false), None | Some("0")) => {}
            (None, None | Some("0")) => snapshot(&mut initial),
            (_, Some(rv)) => {
                let n: u64 = rv.parse().map_err(|_| {
                    Error::BadRequest(format!(
                        "resourceVersion {rv:?} is not a valid resource version"
                    ))
                })?;
                if n < store.compacted_rv() {
                    initial.push(expired(n, store.compacted_rv()));
                    end_after_initial = true;
                } else {
                    for ev in store.history_after(n) {
                        if let Some((kind, obj)) = filter.convert(&ev) {
                            initial.push(present_event(&rt, kind, &obj, metadata_only));
                        }
                    }
                }
            }
        }
        (store.subscribe(), current)
    };
    let (mut tx, body_rx) = futures::channel::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let interval = ctx.shared.options.bookmark_interval;
    tokio::spawn(async move {
        let mut rx = rx;
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if end_after_initial {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if let Some((kind, obj)) = filter.convert(&ev)
                            && tx.send(Ok(present_event(&rt, kind, &obj, metadata_only))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(expired(last_rv, last_rv + 1))).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if bookmarks && tx.send(Ok(bookmark(&rt, last_rv, false))).await.is_err() {
                        return;
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body_rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
