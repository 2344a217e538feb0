//! How to reach a cluster: URL, authentication, TLS, timeouts, retries and rate limit.
//! `Debug` never shows a password, API key or AWS secret.

use std::fmt;
use std::time::Duration;

use spillway_api::Flavor;

/// Connection settings for one source cluster.
#[derive(Clone)]
pub struct SourceConfig {
    /// Base URL, e.g. `https://search.example:9200` (a path prefix is kept).
    pub url: String,
    pub auth: Auth,
    /// Extra trusted CA certificates (PEM), in addition to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. Only for tests and throw-away clusters.
    pub insecure_skip_verify: bool,
    /// Timeout of one HTTP request (connect + response).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests per second shared by every reader of one [`crate::Client`].
    pub requests_per_second: Option<u32>,
    /// Use this flavor whatever `GET /` says.
    pub flavor_override: Option<Flavor>,
}

impl SourceConfig {
    /// Defaults for `url`: no auth, system roots, 60 s timeout, default retries.
    pub fn new(url: impl Into<String>) -> Self {
        SourceConfig {
            url: url.into(),
            auth: Auth::None,
            ca_pem: None,
            insecure_skip_verify: false,
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            requests_per_second: None,
            flavor_override: None,
        }
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &crate::transport::redact_url(&self.url))
            .field("auth", &self.auth)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("requests_per_second", &self.requests_per_second)
            .field("flavor_override", &self.flavor_override)
            .finish()
    }
}

/// How requests authenticate.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// Sent as `Authorization: ApiKey <value>` (the base64 `id:api_key` form).
    ApiKey(String),
    /// AWS Signature Version 4; `service` is `es` (managed domains) or `aoss` (Serverless).
    SigV4 {
        credentials: spillway_sigv4::Credentials,
        region: String,
        service: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Auth::SigV4 {
                credentials,
                region,
                service,
            } => f
                .debug_struct("SigV4")
                .field("access_key_id", &credentials.access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field(
                    "session_token",
                    &credentials.session_token.as_ref().map(|_| "<redacted>"),
                )
                .field("region", region)
                .field("service", service)
                .finish(),
        }
    }
}

/// Retries inside each request: exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait before retry number `retry` (0-based):
    /// `min(max_backoff, initial_backoff * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// A full-jitter wait before retry number `retry`: uniform in `[0, ceiling]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let mut c = SourceConfig::new("https://user:hunter2@example.com:9200");
        c.auth = Auth::Basic {
            username: "elastic".into(),
            password: "s3cr3t-pw".into(),
        };
        let d = format!("{c:?}");
        assert!(!d.contains("s3cr3t-pw"), "{d}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("elastic"));
        let k = format!(
            "{:?}",
            Auth::ApiKey("VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".into())
        );
        assert!(!k.contains("VnVh"), "{k}");
        let s = format!(
            "{:?}",
            Auth::SigV4 {
                credentials: spillway_sigv4::Credentials {
                    access_key_id: "AKIDEXAMPLE".into(),
                    secret_access_key: "wJalrXUtnFEMI/K7MDENG".into(),
                    session_token: Some("FQoGZXIvYXdzE".into()),
                },
                region: "eu-west-1".into(),
                service: "es".into(),
            }
        );
        assert!(!s.contains("wJalr") && !s.contains("FQoG"), "{s}");
        assert!(s.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(4), Duration::from_secs(1));
        assert_eq!(p.ceiling(40), Duration::from_secs(1));
        for r in 0..10 {
            assert!(p.backoff(r) <= p.ceiling(r));
        }
    }
}
