//! Errors: the crate's `Error` enum (start-up, TLS, configuration) and `ApiError`, an HTTP
//! error rendered in the servers' exact envelope
//! `{"error":{"root_cause":[..],"type":..,"reason":..},"status":N}`.

use serde_json::{Map, Value, json};

/// Errors of the simulator's own operations (not HTTP request errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listening socket failed.
    #[error("searchsim could not bind {addr}: {source}; pick another port or use port 0")]
    Bind {
        /// Address that was requested.
        addr: std::net::SocketAddr,
        /// Underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or loading TLS material failed.
    #[error("searchsim TLS setup failed: {0}; check --tls-dir is writable")]
    Tls(String),
    /// Writing a file (for example `ca.pem`) failed.
    #[error("searchsim could not write {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid searchsim configuration: {0}")]
    Config(String),
    /// A cluster operation failed with an API error.
    #[error("searchsim request failed: {0}")]
    Api(#[from] ApiError),
}

/// An HTTP error response in the OpenSearch/Elasticsearch envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Full JSON body.
    pub body: Value,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for ApiError {}

/// Result of a REST handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// `{"error":{"root_cause":[cause],"type","reason",..extra},"status"}`.
    pub fn new(status: u16, ty: &str, reason: impl Into<String>) -> Self {
        Self::with_extra(status, ty, reason, Map::new())
    }

    /// Like [`ApiError::new`] with metadata fields next to `type` and `reason`.
    pub fn with_extra(
        status: u16,
        ty: &str,
        reason: impl Into<String>,
        extra: Map<String, Value>,
    ) -> Self {
        let reason = reason.into();
        let mut cause = Map::new();
        cause.insert("type".into(), json!(ty));
        cause.insert("reason".into(), json!(reason));
        for (k, v) in &extra {
            cause.insert(k.clone(), v.clone());
        }
        let mut err = cause.clone();
        err.insert("root_cause".into(), json!([Value::Object(cause)]));
        // root_cause first, like the servers.
        let mut ordered = Map::new();
        ordered.insert(
            "root_cause".into(),
            err.remove("root_cause").unwrap_or(Value::Null),
        );
        for (k, v) in err {
            ordered.insert(k, v);
        }
        Self {
            status,
            body: json!({"error": Value::Object(ordered), "status": status}),
            headers: Vec::new(),
        }
    }

    /// 400 `illegal_argument_exception`.
    pub fn illegal(reason: impl Into<String>) -> Self {
        Self::new(400, "illegal_argument_exception", reason)
    }

    /// 400 `action_request_validation_exception` with the `Validation Failed: 1: ..;` reason.
    pub fn validation(msgs: &[String]) -> Self {
        let mut reason = String::from("Validation Failed: ");
        for (i, m) in msgs.iter().enumerate() {
            reason.push_str(&format!("{}: {};", i + 1, m));
        }
        Self::new(400, "action_request_validation_exception", reason)
    }

    /// 400 `parsing_exception`.
    pub fn parsing(reason: impl Into<String>) -> Self {
        let mut extra = Map::new();
        extra.insert("line".into(), json!(1));
        extra.insert("col".into(), json!(1));
        Self::with_extra(400, "parsing_exception", reason, extra)
    }

    /// 404 `index_not_found_exception` for `name`.
    pub fn index_not_found(name: &str) -> Self {
        let mut extra = Map::new();
        extra.insert("index".into(), json!(name));
        extra.insert("resource.id".into(), json!(name));
        extra.insert("resource.type".into(), json!("index_or_alias"));
        extra.insert("index_uuid".into(), json!("_na_"));
        Self::with_extra(
            404,
            "index_not_found_exception",
            format!("no such index [{name}]"),
            extra,
        )
    }

    /// A shard-level failure wrapped in `search_phase_execution_exception` ("all shards failed").
    pub fn shard_failure(
        status: u16,
        inner_type: &str,
        inner_reason: impl Into<String>,
        index: Option<&str>,
    ) -> Self {
        let inner_reason = inner_reason.into();
        let inner = json!({"type": inner_type, "reason": inner_reason});
        let body = json!({
            "error": {
                "root_cause": [inner.clone()],
                "type": "search_phase_execution_exception",
                "reason": "all shards failed",
                "phase": "query",
                "grouped": true,
                "failed_shards": [{
                    "shard": if index.is_some() { json!(0) } else { json!(-1) },
                    "index": index,
                    "node": if index.is_some() { json!("searchsim-node-1") } else { Value::Null },
                    "reason": inner,
                }],
                "caused_by": inner,
            },
            "status": status,
        });
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// 404 for an expired or unknown PIT/scroll context.
    pub fn context_missing(id: &str) -> Self {
        let mut e = Self::shard_failure(
            404,
            "search_context_missing_exception",
            format!("No search context found for id [{id}]"),
            None,
        );
        if let Some(err) = e.body.get_mut("error").and_then(Value::as_object_mut) {
            err.remove("caused_by");
        }
        e
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}
