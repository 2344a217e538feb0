//! Helpers shared by the kubesim black-box tests: a small test CRD (`widgets.example.com`),
//! raw requests through the router (exact status codes and bodies), and waiting on
//! conditions with a deadline instead of sleeping.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kubesim::{Server, ServerOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The test CRD: namespaced `Widget` with a status subresource, short name, category,
/// a selectable field and a schema exercising types, enum, bounds, pattern, defaults,
/// int-or-string, preserve-unknown-fields and a CEL rule.
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["gadgets"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 100},
                                "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "red"},
                                "label": {"type": "string", "pattern": "^[a-z]+$"},
                                "port": {"x-kubernetes-int-or-string": true},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "min": {"type": "integer"},
                                "max": {"type": "integer"}
                            },
                            "x-kubernetes-validations": [{"rule": "!has(self.min) || !has(self.max) || self.min < self.max", "message": "min must be below max"}]
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "observedGeneration": {"type": "integer"},
                                "conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// The Widget API resource.
pub fn widget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

/// A Widget object.
pub fn widget(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size}
    }))
    .expect("a widget is a DynamicObject")
}

/// Fast bookmarks and a small history so tests run quickly.
pub fn options() -> ServerOptions {
    ServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ServerOptions::default()
    }
}

/// An in-process server with the Widget CRD installed.
pub async fn server_with_widgets() -> (Server, Api<DynamicObject>) {
    let server = Server::new(options());
    install_widgets(&server).await;
    let api = Api::namespaced_with(server.client(), "default", &widget_ar());
    (server, api)
}

/// Creates the Widget CRD.
pub async fn install_widgets(server: &Server) {
    let crds: Api<DynamicObject> = Api::all_with(
        server.client(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(widget_crd()).expect("the CRD is an object");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("the widget CRD is created");
}

/// One request straight through the router: (status code, headers, JSON body).
pub async fn raw(
    server: &Server,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Value>,
) -> (u16, http::HeaderMap, Value) {
    raw_bytes(
        server,
        method,
        path,
        content_type,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// Like [`raw`] with a byte body (e.g. YAML).
pub async fn raw_bytes(
    server: &Server,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(Body::from(body.unwrap_or_default()))
        .expect("a valid request");
    let resp = server
        .router()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, headers, v)
}

/// The status code of a kube error (panics on other errors: a test bug).
pub fn code_of(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The reason of a kube API error.
pub fn reason_of(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it returns Some, failing after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
