//! The one error type of the source client. Every message says what failed, on which
//! cluster or index, and what to do about it; none carries a credential (URLs are printed
//! without user info, auth headers are never echoed).

use std::time::Duration;

/// Why a request was retried (and, once retries run out, why it failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// 429 thread-pool rejection (`rejected_execution_exception`,
    /// `es_rejected_execution_exception`) or shard failures caused by one.
    Rejected,
    /// 429 `circuit_breaking_exception` with durability `TRANSIENT`.
    Breaker,
    /// 502/503/504 or any other 5xx.
    Unavailable5xx,
    /// Connection refused or reset, or a body cut off mid-response (not valid JSON).
    Connection,
    /// The request timed out.
    Timeout,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Rejected => "rejected",
            RetryReason::Breaker => "breaker",
            RetryReason::Unavailable5xx => "unavailable_5xx",
            RetryReason::Connection => "connection",
            RetryReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source configuration: {0}")]
    Config(String),

    #[error(
        "cannot reach {url}: {detail}; check source.url, DNS and that the cluster is up and reachable from here"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "TLS handshake with {url} failed: {detail}; trust the cluster's CA (source.tls CA certificate) or, for throw-away test clusters only, skip verification"
    )]
    Tls { url: String, detail: String },

    #[error(
        "request to {url} timed out after {attempts} attempt(s) (request timeout {timeout:?}); the cluster is overloaded or the page is too big: lower pageSize or raise the request timeout"
    )]
    Timeout {
        url: String,
        attempts: u32,
        timeout: Duration,
    },

    #[error(
        "{url} kept rejecting requests ({reason}) after {attempts} attempt(s): {detail}; lower maxConcurrentShards or requestsPerSecond, or raise the retry limit"
    )]
    Overloaded {
        url: String,
        reason: &'static str,
        attempts: u32,
        detail: String,
    },

    #[error(
        "{url} answered HTTP {status} after {attempts} attempt(s): {detail}; check the cluster's health"
    )]
    ServerError {
        url: String,
        status: u16,
        attempts: u32,
        detail: String,
    },

    #[error(
        "the response from {url} was cut off or is not valid JSON after {attempts} attempt(s): {detail}; check proxies and load balancers between here and the cluster"
    )]
    BrokenResponse {
        url: String,
        attempts: u32,
        detail: String,
    },

    #[error(
        "authentication failed for {url}: check the credentials in the secret referenced by source.auth"
    )]
    Authentication { url: String },

    #[error(
        "permission denied on {url}: action [{action}] for user [{user}] ({reason}); grant the user read access (indices:data/read/search, point-in-time and mapping actions) to the indices"
    )]
    Forbidden {
        url: String,
        action: String,
        user: String,
        reason: String,
    },

    #[error(
        "index [{index}] does not exist on {url}; check source.indices (names, patterns, aliases)"
    )]
    IndexNotFound { url: String, index: String },

    #[error(
        "the point-in-time snapshot is gone ({reason}); it expired or the cluster lost it: the job's onSnapshotLoss policy decides whether to fail or renew"
    )]
    SnapshotLost { reason: String },

    #[error("{url} rejected the request as invalid (HTTP 400): {reason}")]
    BadRequest { url: String, reason: String },

    #[error(
        "circuit breaker tripped permanently on {url}: {reason}; reduce pageSize or the fields exported (_source includes/excludes)"
    )]
    CircuitBreakerPermanent { url: String, reason: String },

    #[error("{url} answered HTTP {status}: {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },

    #[error(
        "unexpected response from {url}: {detail}; the cluster's API differs from what this client supports"
    )]
    Decode { url: String, detail: String },

    #[error(
        "shard incomplete: the cluster reported {expected} matching documents but {got} were read; the shard must be re-run"
    )]
    Truncated { expected: u64, got: u64 },

    #[error("{0}")]
    Unsupported(String),

    #[error("cannot sign the request with AWS SigV4: {0}")]
    Signing(String),
}

impl SourceError {
    /// Whether re-running the failed operation later can succeed without a change of
    /// configuration (transient overload, network trouble, an incomplete shard).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Unreachable { .. }
                | SourceError::Timeout { .. }
                | SourceError::Overloaded { .. }
                | SourceError::ServerError { .. }
                | SourceError::BrokenResponse { .. }
                | SourceError::Truncated { .. }
        )
    }

    /// Whether this is the loss of the point-in-time snapshot (`onSnapshotLoss` applies).
    pub fn is_snapshot_lost(&self) -> bool {
        matches!(self, SourceError::SnapshotLost { .. })
    }
}
