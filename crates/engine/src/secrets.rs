//! Resolving the Secrets an ExportJob references. In Kubernetes they are read through the API
//! (or mounted); locally they come from a directory laid out like a mounted Secret
//! (`<dir>/<secret name>/<key>`) or from environment variables
//! `SPILLWAY_SECRET_<NAME>_<KEY>` (upper-cased, other characters as `_`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::EngineError;

#[async_trait]
pub trait SecretResolver: Send + Sync {
    /// The value of `key` in Secret `name`, or an error that names both (never the value).
    async fn get(&self, name: &str, key: &str) -> Result<String, EngineError>;
    /// Like `get`, but a missing key is `None`.
    async fn get_optional(&self, name: &str, key: &str) -> Result<Option<String>, EngineError>;
    /// The resolver for a job in `namespace` (Kubernetes Secrets are namespaced). Resolvers
    /// without namespaces return themselves.
    fn in_namespace(self: Arc<Self>, namespace: Option<&str>) -> Arc<dyn SecretResolver>;
}

/// Secrets for `spillway run`: files first, then environment variables.
#[derive(Clone, Debug, Default)]
pub struct LocalSecrets {
    pub dir: Option<PathBuf>,
}

impl LocalSecrets {
    pub fn env_name(name: &str, key: &str) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!("SPILLWAY_SECRET_{}_{}", clean(name), clean(key))
    }
}

#[async_trait]
impl SecretResolver for LocalSecrets {
    async fn get(&self, name: &str, key: &str) -> Result<String, EngineError> {
        self.get_optional(name, key).await?.ok_or_else(|| {
            let file_hint = match &self.dir {
                Some(d) => format!("{}/{name}/{key} or ", d.display()),
                None => String::new(),
            };
            EngineError::Secret(format!(
                "secret {name:?} has no key {key:?}: provide {file_hint}the environment variable {}",
                Self::env_name(name, key)
            ))
        })
    }

    async fn get_optional(&self, name: &str, key: &str) -> Result<Option<String>, EngineError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(name).join(key);
            match tokio::fs::read_to_string(&path).await {
                Ok(v) => return Ok(Some(v.trim_end_matches(['\n', '\r']).to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(EngineError::Secret(format!(
                        "cannot read secret file {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(std::env::var(Self::env_name(name, key)).ok())
    }

    fn in_namespace(self: Arc<Self>, _namespace: Option<&str>) -> Arc<dyn SecretResolver> {
        self
    }
}
