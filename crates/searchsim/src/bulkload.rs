//! Loads a generated data set into a real cluster over `_bulk`: the same indices, mappings and
//! documents searchsim would serve for the same [`DataSpec`], so an export from a real node is
//! checked against the same expectations. The real-server tests and the benchmark's
//! real-node section use it (`searchsim --load-into URL`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::datagen::{self, DataSpec, LoadSummary};

/// Bytes of `_bulk` body per request.
const BATCH_BYTES: usize = 5 << 20;

/// Creates the indices of `spec` on the cluster at `url` (no replicas, refresh off while
/// loading), writes every document, refreshes, and checks the cluster counts them all.
pub async fn load_into(url: &str, spec: &DataSpec) -> Result<LoadSummary, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let url = url.trim_end_matches('/');
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let http = http.clone();
        async move {
            let mut req = http.request(method.clone(), format!("{url}{path}"));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = resp.status();
            let v: Value = resp
                .json()
                .await
                .map_err(|e| format!("{method} {path}: the answer is not JSON: {e}"))?;
            if !status.is_success() {
                return Err(format!("{method} {path} answered {status}: {v}"));
            }
            Ok(v)
        }
    };
    let names = datagen::index_names(spec);
    for n in &names {
        call(
            reqwest::Method::PUT,
            format!("/{n}"),
            Some(json!({
                "settings": {"number_of_shards": spec.shards, "number_of_replicas": 0,
                             "refresh_interval": "-1"},
                "mappings": datagen::mapping(),
            })),
        )
        .await?;
    }
    let bulk = |body: Vec<u8>, docs: usize| {
        let http = http.clone();
        async move {
            let resp = http
                .post(format!("{url}/_bulk"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("_bulk: {e}"))?;
            let status = resp.status();
            let v: Value = resp
                .json()
                .await
                .map_err(|e| format!("_bulk: the answer is not JSON: {e}"))?;
            if !status.is_success() {
                return Err(format!("_bulk answered {status}: {v}"));
            }
            if v["errors"].as_bool() != Some(false) {
                let first = v["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|i| i["index"]["error"].is_object()))
                    .cloned();
                return Err(format!("_bulk rejected documents, the first: {first:?}"));
            }
            match v["items"].as_array().map(Vec::len) {
                Some(n) if n == docs => Ok(docs as u64),
                n => Err(format!("_bulk answered {n:?} items for {docs} documents")),
            }
        }
    };
    let mut body = Vec::with_capacity(BATCH_BYTES + (1 << 20));
    let (mut in_batch, mut written, mut bytes) = (0usize, 0u64, 0u64);
    for d in datagen::docs(spec) {
        bytes += d.source.len() as u64;
        let action = json!({"index": {"_index": d.index, "_id": d.id}});
        body.extend_from_slice(action.to_string().as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&d.source);
        body.push(b'\n');
        in_batch += 1;
        if body.len() >= BATCH_BYTES {
            written += bulk(std::mem::take(&mut body), in_batch).await?;
            in_batch = 0;
        }
    }
    if !body.is_empty() {
        written += bulk(body, in_batch).await?;
    }
    let pattern = format!("{}*", spec.index_prefix);
    call(
        reqwest::Method::PUT,
        format!("/{pattern}/_settings"),
        Some(json!({"index": {"refresh_interval": "1s"}})),
    )
    .await?;
    call(reqwest::Method::POST, format!("/{pattern}/_refresh"), None).await?;
    let count = call(reqwest::Method::GET, format!("/{pattern}/_count"), None).await?;
    if count["count"].as_u64() != Some(written) {
        return Err(format!(
            "{written} documents were written but {pattern} counts {}",
            count["count"]
        ));
    }
    Ok(LoadSummary {
        docs: written,
        indices: names,
        bytes,
    })
}
