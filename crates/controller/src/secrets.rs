//! Secrets read through the Kubernetes API, in the ExportJob's namespace. Values are held only
//! as long as a client or storage handle needs them, and never logged.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use spillway_engine::{EngineError, SecretResolver};

#[derive(Clone)]
pub struct KubeSecrets {
    client: Client,
    /// Namespace the Secrets are read from; jobs without one use the client's default.
    namespace: Option<String>,
}

impl KubeSecrets {
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        KubeSecrets { client, namespace }
    }

    fn api(&self) -> Api<Secret> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::default_namespaced(self.client.clone()),
        }
    }

    fn where_(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "default".into())
    }
}

#[async_trait]
impl SecretResolver for KubeSecrets {
    async fn get(&self, name: &str, key: &str) -> Result<String, EngineError> {
        self.get_optional(name, key).await?.ok_or_else(|| {
            EngineError::Secret(format!(
                "secret {}/{name} has no key {key:?}: add it (kubectl -n {} edit secret {name})",
                self.where_(),
                self.where_()
            ))
        })
    }

    async fn get_optional(&self, name: &str, key: &str) -> Result<Option<String>, EngineError> {
        let secret = self.api().get_opt(name).await.map_err(|e| {
            EngineError::Secret(format!(
                "cannot read secret {}/{name}: {e} (does the service account have `get` on secrets in this namespace?)",
                self.where_()
            ))
        })?;
        let Some(secret) = secret else {
            return Err(EngineError::Secret(format!(
                "secret {}/{name} does not exist: create it with the key {key:?}",
                self.where_()
            )));
        };
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(v.0.clone())
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|_| {
                    EngineError::Secret(format!(
                        "secret {}/{name} key {key:?} is not UTF-8 text",
                        self.where_()
                    ))
                });
        }
        Ok(secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned())
    }

    fn in_namespace(self: Arc<Self>, namespace: Option<&str>) -> Arc<dyn SecretResolver> {
        match namespace {
            Some(ns) if Some(ns) != self.namespace.as_deref() => Arc::new(KubeSecrets {
                client: self.client.clone(),
                namespace: Some(ns.to_string()),
            }),
            _ => self,
        }
    }
}
