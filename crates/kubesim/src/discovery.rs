//! Discovery and OpenAPI documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`,
//! `/apis/<g>/<v>`, `/openapi/v3` and `/openapi/v3/<api|apis/g>/<v>`. The OpenAPI v3
//! documents declare one operation per verb carrying `x-kubernetes-group-version-kind` and the
//! `fieldValidation`/`fieldManager`/`dryRun`/`force` query parameters, which is what kubectl
//! checks before it uses server-side field validation; schemas of custom resources are the
//! CRDs' `openAPIV3Schema`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::store::Store;

/// Kubernetes version kubesim claims to be.
pub const MAJOR: &str = "1";
/// Minor version.
pub const MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-kubesim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// Served (group -> versions in registration order).
fn groups(store: &Store) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in store.types() {
        if t.group.is_empty() {
            continue;
        }
        let vs = out.entry(t.group.clone()).or_default();
        if !vs.contains(&t.version) {
            vs.push(t.version.clone());
        }
    }
    out
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(store: &Store) -> Value {
    let groups: Vec<Value> = groups(store)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<g>`, None when the group is not served.
pub fn group(store: &Store, name: &str) -> Option<Value> {
    let gs = groups(store);
    let vs = gs.get(name)?;
    let mut g = group_json(name, vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/<g>/<v>`, None when the group version is not served.
pub fn resource_list(store: &Store, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&Arc<ResourceType>> = store
        .types()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/openapi/v3`: one entry per served group version.
pub fn openapi_root(store: &Store) -> Value {
    let mut paths = serde_json::Map::new();
    let hash = format!("{:016X}", store.discovery_generation);
    let mut gvs: Vec<(String, String)> = store
        .types()
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    for (g, v) in gvs {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn schema_name(t: &ResourceType) -> String {
    let group = if t.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        let mut parts: Vec<&str> = t.group.split('.').collect();
        parts.reverse();
        parts.join(".")
    };
    format!("{group}.{}.{}", t.version, t.kind)
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn op(t: &ResourceType, action: &str, id: &str, params: &[&str], body: bool) -> Value {
    let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
    let schema_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(t))});
    let mut o = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref.clone()}}}},
    });
    if body {
        let ct = if action == "patch" {
            json!({
                "application/apply-patch+yaml": {"schema": {"type": "object"}},
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
            })
        } else {
            json!({"application/json": {"schema": schema_ref}})
        };
        o["requestBody"] = json!({"content": ct, "required": true});
    }
    o
}

/// `/openapi/v3/api/<v>` or `/openapi/v3/apis/<g>/<v>`.
pub fn openapi_doc(store: &Store, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&Arc<ResourceType>> = store
        .types()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let patchp = [
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "force",
        "pretty",
    ];
    for t in types {
        let coll = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        let k = &t.kind;
        paths.insert(
            coll.clone(),
            json!({
                "get": op(t, "list", &format!("list{k}"), &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], false),
                "post": op(t, "post", &format!("create{k}"), &write, true),
                "delete": op(t, "deletecollection", &format!("deletecollection{k}"), &["labelSelector", "fieldSelector"], false),
            }),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({
                "get": op(t, "get", &format!("read{k}"), &["pretty"], false),
                "put": op(t, "put", &format!("replace{k}"), &write, true),
                "patch": op(t, "patch", &format!("patch{k}"), &patchp, true),
                "delete": op(t, "delete", &format!("delete{k}"), &["dryRun", "propagationPolicy"], false),
            }),
        );
        if t.status_subresource {
            paths.insert(
                format!("{coll}/{{name}}/status"),
                json!({
                    "get": op(t, "get", &format!("read{k}Status"), &["pretty"], false),
                    "put": op(t, "put", &format!("replace{k}Status"), &write, true),
                    "patch": op(t, "patch", &format!("patch{k}Status"), &patchp, true),
                }),
            );
        }
        let mut s = t.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        if let Some(m) = s.as_object_mut() {
            let props = m.entry("properties").or_insert_with(|| json!({}));
            if let Some(p) = props.as_object_mut() {
                p.insert("apiVersion".into(), json!({"type": "string"}));
                p.insert("kind".into(), json!({"type": "string"}));
                p.insert(
                    "metadata".into(),
                    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
            }
            m.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": t.group, "version": t.version, "kind": t.kind}]),
            );
        }
        schemas.insert(schema_name(t), s);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A `meta.k8s.io/v1` Table of objects for `kubectl get` (Name, the CRD's printer columns
/// or Age).
pub fn table(t: &ResourceType, objects: &[Value], list_meta: Value) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let printer: Vec<Value> = if t.printer_columns.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        t.printer_columns.clone()
    };
    for c in &printer {
        columns.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            for c in &printer {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let ptr = path.replace('.', "/");
                let v = o.pointer(&ptr).cloned().unwrap_or(Value::Null);
                let v = if c.get("type").and_then(Value::as_str) == Some("date") {
                    v.as_str()
                        .map(|s| json!(human_age(s)))
                        .unwrap_or(Value::Null)
                } else {
                    v
                };
                cells.push(v);
            }
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn human_age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
