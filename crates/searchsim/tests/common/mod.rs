//! HTTP helpers shared by searchsim's integration tests.

use searchsim::RunningSim;
use serde_json::Value;

/// A client for the simulator (installs the TLS provider once).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("client")
}

/// Sends `method path` with an optional JSON body; returns the status and the body as JSON
/// (or as a JSON string when it is not JSON).
pub async fn call(
    c: &reqwest::Client,
    sim: &RunningSim,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = c.request(m, format!("{}{}", sim.url(), path));
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
