//! The `Server`: shared state behind one axum router, served in-process (a `kube::Client`
//! whose transport is the router itself) and/or on 127.0.0.1, plus the request log, bearer
//! token identities and kubeconfig generation for kubectl and the Python client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{HeaderValue, Request, header};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::store::Store;

/// User name of requests without a bearer token.
pub const ANONYMOUS: &str = "system:anonymous";

/// Tunables of a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (the real server:
    /// about a minute; tests want it short).
    pub bookmark_interval: Duration,
    /// Number of events kept for watch replay; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Watch length when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// One request as the server saw it, for comparing RBAC rules with observed calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// User from the bearer token, or [`ANONYMOUS`]; empty when the token was rejected.
    pub user: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// for non-resource paths the lower-case HTTP method.
    pub verb: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `User-Agent` header.
    pub user_agent: String,
    /// API group of a resource request ("" for core).
    pub group: Option<String>,
    /// API version of a resource request.
    pub version: Option<String>,
    /// Plural resource name.
    pub resource: Option<String>,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// Namespace of the request.
    pub namespace: Option<String>,
    /// Object name of the request.
    pub name: Option<String>,
    /// HTTP status code answered (for watches: the code the stream started with).
    pub code: u16,
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    log: Mutex<Vec<RequestRecord>>,
    tokens: RwLock<HashMap<String, String>>,
    pub(crate) options: ServerOptions,
    addr: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field(
                "tokens",
                &format!("<{} redacted>", self.tokens.read().len()),
            )
            .field("options", &self.options)
            .field("addr", &*self.addr.lock())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn user_for_token(&self, token: &str) -> Option<String> {
        self.tokens.read().get(token).cloned()
    }

    pub(crate) fn record(&self, r: RequestRecord) {
        self.log.lock().push(r);
    }

    pub(crate) fn server_address(&self) -> String {
        self.addr
            .lock()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into())
    }
}

/// A running kubesim. Dropping it stops the listener.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    addr: Option<SocketAddr>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Server {
    /// An in-process server (no socket); use [`Server::client`].
    pub fn new(options: ServerOptions) -> Server {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit)),
            log: Mutex::new(Vec::new()),
            tokens: RwLock::new(HashMap::new()),
            options,
            addr: Mutex::new(None),
        });
        Server {
            shared,
            addr: None,
            task: None,
        }
    }

    /// Serves on 127.0.0.1 with an ephemeral port (also usable in-process).
    pub async fn start(options: ServerOptions) -> Result<Server> {
        Server::start_on(options, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves on the given address.
    pub async fn start_on(options: ServerOptions, addr: SocketAddr) -> Result<Server> {
        let mut server = Server::new(options);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        *server.shared.addr.lock() = Some(local);
        server.addr = Some(local);
        let router = server.router();
        server.task = Some(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "kubesim stopped serving");
            }
        }));
        Ok(server)
    }

    /// The axum router (every path goes to one handler).
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(crate::http::handle)
            .with_state(self.shared.clone())
    }

    /// `http://127.0.0.1:<port>` when listening.
    pub fn url(&self) -> Option<String> {
        self.addr.map(|a| format!("http://{a}"))
    }

    /// The bound address when listening.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Registers a bearer token and the user name requests carrying it are attributed to.
    /// Tokens never registered get 401; requests without a token are [`ANONYMOUS`].
    pub fn add_token(&self, token: &str, user: &str) {
        self.shared
            .tokens
            .write()
            .insert(token.to_string(), user.to_string());
    }

    /// An in-process `kube::Client` (anonymous) whose transport is the router.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// An in-process `kube::Client` that sends `Authorization: Bearer <token>`.
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: Request<kube::client::Body>| {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, value.clone());
                req
            })
            .service(self.router());
        kube::Client::new(service, "default")
    }

    /// A `kube::Client` over TCP built from [`Server::kubeconfig_yaml`] (so it exercises the
    /// generated kubeconfig); `token` selects that user's context.
    pub async fn http_client(&self, token: Option<&str>) -> Result<kube::Client> {
        let url = self.url().ok_or_else(|| Error::Client {
            url: "(not listening)".into(),
            message: "this server is in-process only; start it with Server::start".into(),
        })?;
        let fail = |m: String| Error::Client {
            url: url.clone(),
            message: m,
        };
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| fail(e.to_string()))?;
        let context = match token {
            None => "kubesim".to_string(),
            Some(t) => {
                let tokens = self.shared.tokens.read();
                let user = tokens.get(t).ok_or_else(|| {
                    fail("that token is not registered; call add_token first".into())
                })?;
                format!("kubesim-{user}")
            }
        };
        let opts = kube::config::KubeConfigOptions {
            context: Some(context),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| fail(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
    }

    /// A kubeconfig for kubectl / the Python client: context `kubesim` (anonymous, the
    /// current context) and one context `kubesim-<user>` per registered token. It holds the
    /// registered tokens, so treat the file as a credential.
    pub fn kubeconfig_yaml(&self) -> String {
        let server = self.url().unwrap_or_else(|| "http://127.0.0.1:0".into());
        let mut users = vec![serde_json::json!({"name": "kubesim-anonymous", "user": {}})];
        let mut contexts = vec![serde_json::json!({
            "name": "kubesim",
            "context": {"cluster": "kubesim", "user": "kubesim-anonymous", "namespace": "default"}
        })];
        let mut tokens: Vec<(String, String)> = self
            .shared
            .tokens
            .read()
            .iter()
            .map(|(t, u)| (t.clone(), u.clone()))
            .collect();
        tokens.sort_by(|a, b| a.1.cmp(&b.1));
        for (token, user) in tokens {
            users.push(
                serde_json::json!({"name": format!("kubesim-{user}"), "user": {"token": token}}),
            );
            contexts.push(serde_json::json!({
                "name": format!("kubesim-{user}"),
                "context": {"cluster": "kubesim", "user": format!("kubesim-{user}"), "namespace": "default"}
            }));
        }
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {"server": server}}],
            "users": users,
            "contexts": contexts,
            "current-context": "kubesim",
            "preferences": {},
        });
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }

    /// Writes [`Server::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.log.lock().clear();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }

    /// Drops the watch event history: watches and continue tokens from any older
    /// resourceVersion get 410 Gone afterwards.
    pub fn compact_history(&self) {
        self.shared.store.lock().compact();
    }
}
