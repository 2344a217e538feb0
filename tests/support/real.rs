//! Real search servers for the end-to-end tests: OpenSearch 2.19 and 3.x and Elasticsearch,
//! each started by its script in `scripts/services/` (which `scripts/test.sh` runs) and found
//! through the URL its `env` command exports.
//!
//! A test loads the same generated data it would load into searchsim, over `_bulk`, into
//! indices named with a prefix of its own, so tests running at once on one node never see
//! each other's data. A missing server is an error naming the script that starts it, never a
//! skipped test.

use std::time::Duration;

use searchsim::datagen::{DataSpec, LoadSummary};
use serde_json::Value;

/// A real server the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// OpenSearch 2.19 (no `_shard_doc`).
    OpenSearch2,
    /// The newest OpenSearch 3.x.
    OpenSearch3,
    /// Elasticsearch.
    Elasticsearch,
}

impl Server {
    fn env_var(self) -> &'static str {
        match self {
            Server::OpenSearch2 => "SPILLWAY_OPENSEARCH2_URL",
            Server::OpenSearch3 => "SPILLWAY_OPENSEARCH3_URL",
            Server::Elasticsearch => "SPILLWAY_ELASTICSEARCH_URL",
        }
    }

    fn start_command(self) -> &'static str {
        match self {
            Server::OpenSearch2 => "scripts/services/opensearch.sh start 2",
            Server::OpenSearch3 => "scripts/services/opensearch.sh start 3",
            Server::Elasticsearch => "scripts/services/elasticsearch.sh start",
        }
    }

    /// The server's base URL; panics, saying how to start it, when it is not running.
    pub fn url(self) -> String {
        std::env::var(self.env_var()).unwrap_or_else(|_| {
            panic!(
                "{} is not set: start the server with `{}` and eval the output of its `env` command (scripts/test.sh does both)",
                self.env_var(),
                self.start_command()
            )
        })
    }
}

/// One test's view of a real server: an HTTP client and the indices the test created.
pub struct RealCluster {
    pub server: Server,
    url: String,
    http: reqwest::Client,
    prefix: String,
}

impl RealCluster {
    /// Connects to `server`; `prefix` names this test's indices (`t-exact-`), and every
    /// index with that prefix is deleted first, so a re-run starts clean.
    pub async fn connect(server: Server, prefix: &str) -> RealCluster {
        crate::init();
        assert!(
            prefix.ends_with('-') && prefix == prefix.to_lowercase(),
            "index prefixes are lower case and end with '-': {prefix}"
        );
        let c = RealCluster {
            server,
            url: server.url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
            prefix: prefix.to_string(),
        };
        c.delete_indices().await;
        c
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The data spec with this test's index prefix.
    pub fn spec(&self, spec: DataSpec) -> DataSpec {
        DataSpec {
            index_prefix: self.prefix.clone(),
            ..spec
        }
    }

    /// Sends a request and returns status and JSON body.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut rb = self.http.request(m, format!("{}{path}", self.url));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.url));
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// Sends an NDJSON body (`_bulk`, `_msearch`) and returns status and JSON body.
    pub async fn request_text(&self, method: &str, path: &str, body: String) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let resp = self
            .http
            .request(m, format!("{}{path}", self.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.url));
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.request(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {v}"
        );
        v
    }

    /// Creates the spec's daily indices (with searchsim's mapping and shard count, no
    /// replicas) and loads every generated document over `_bulk`, then refreshes.
    pub async fn load(&self, spec: &DataSpec) -> LoadSummary {
        assert_eq!(
            spec.index_prefix, self.prefix,
            "load a spec made by RealCluster::spec"
        );
        searchsim::bulkload::load_into(&self.url, spec)
            .await
            .unwrap_or_else(|e| panic!("loading {} into {:?}: {e}", spec.index_prefix, self.server))
    }

    /// Deletes every index of this test, by name (Elasticsearch 8 refuses wildcard deletes:
    /// `action.destructive_requires_name` is true by default).
    pub async fn delete_indices(&self) {
        let listing = self
            .ok(
                "GET",
                &format!(
                    "/_cat/indices/{}*?h=index&format=json&expand_wildcards=all",
                    self.prefix
                ),
                None,
            )
            .await;
        let names: Vec<&str> = listing
            .as_array()
            .expect("_cat/indices answers an array")
            .iter()
            .filter_map(|row| row["index"].as_str())
            .collect();
        if names.is_empty() {
            return;
        }
        let (status, v) = self
            .request("DELETE", &format!("/{}", names.join(",")), None)
            .await;
        assert!(
            status == 200 || status == 404,
            "deleting {names:?} answered {status}: {v}"
        );
    }

    /// Search contexts open on the node (each PIT holds one per shard it covers).
    pub async fn open_contexts(&self) -> u64 {
        let v = self.ok("GET", "/_nodes/stats/indices/search", None).await;
        v["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .map(|n| {
                n["indices"]["search"]["open_contexts"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Waits up to `within` for the node's open search contexts to fall to `at_most` (a
    /// closed PIT or a finished search frees its contexts asynchronously) and returns the
    /// last count read, which the caller asserts on.
    pub async fn open_contexts_settled(&self, at_most: u64, within: Duration) -> u64 {
        let deadline = std::time::Instant::now() + within;
        loop {
            let n = self.open_contexts().await;
            if n <= at_most || std::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The point-in-time snapshots open on the node, for assertion messages (OpenSearch
    /// lists them; Elasticsearch has no such API and answers with its error).
    pub async fn open_pits(&self) -> String {
        let (status, v) = self
            .request("GET", "/_search/point_in_time/_all", None)
            .await;
        format!("GET /_search/point_in_time/_all answered {status}: {v}")
    }

    /// Bytes of `_id` fielddata held on the node.
    pub async fn id_fielddata_bytes(&self) -> u64 {
        let v = self
            .ok("GET", "/_nodes/stats/indices/fielddata?fields=_id", None)
            .await;
        v["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .map(|n| {
                n["indices"]["fielddata"]["fields"]["_id"]["memory_size_in_bytes"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The server's version number (`2.19.6`).
    pub async fn version(&self) -> String {
        let v = self.ok("GET", "/", None).await;
        v["version"]["number"]
            .as_str()
            .expect("version.number")
            .to_string()
    }
}
