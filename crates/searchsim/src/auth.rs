//! Authentication and authorisation: HTTP basic users and `ApiKey` credentials, an optional
//! read-only flag and allowed index patterns per principal, and the flavors' 401/403 answers
//! (OpenSearch: plain `Unauthorized`; Elasticsearch: JSON `security_exception` with
//! `WWW-Authenticate`). Secrets never appear in `Debug` output or errors.

use base64::Engine as _;

use crate::Flavor;
use crate::cluster::wildcard_match;
use crate::error::ApiError;

/// Permissions of a principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perms {
    /// Only read endpoints are allowed.
    pub read_only: bool,
    /// Index patterns the principal may touch (all when empty).
    pub indices: Vec<String>,
}

/// A basic-auth user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    password: String,
    /// Permissions.
    pub perms: Perms,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl User {
    /// A user with full access.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
            perms: Perms::default(),
        }
    }

    /// Parses `user:pass[:ro][:pattern,pattern]` (the CLI form).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(4, ':');
        let name = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or("basic-auth needs user:pass")?;
        let pass = parts.next().ok_or("basic-auth needs user:pass")?;
        let mut u = Self::new(name, pass);
        for extra in parts {
            if extra == "ro" {
                u.perms.read_only = true;
            } else if !extra.is_empty() {
                u.perms.indices = extra.split(',').map(str::to_string).collect();
            }
        }
        Ok(u)
    }

    /// Makes the user read-only.
    pub fn read_only(mut self) -> Self {
        self.perms.read_only = true;
        self
    }

    /// Restricts the user to index patterns.
    pub fn with_indices(mut self, patterns: &[&str]) -> Self {
        self.perms.indices = patterns.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// An API key (`Authorization: ApiKey base64(id:key)`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    key: String,
    /// Permissions.
    pub perms: Perms,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    /// A key with full access.
    pub fn new(id: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
            perms: Perms::default(),
        }
    }
}

/// Accepted credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Basic users.
    pub users: Vec<User>,
    /// API keys.
    pub api_keys: Vec<ApiKey>,
}

/// An authenticated principal.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Name (user name or key id).
    pub name: String,
    /// Permissions.
    pub perms: Perms,
}

impl Auth {
    /// Checks the `Authorization` header.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        flavor: Flavor,
        path: &str,
    ) -> Result<Principal, ApiError> {
        let fail = || unauthorized(flavor, path);
        let h = header.ok_or_else(fail)?;
        if let Some(b64) = h.strip_prefix("Basic ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| fail())?;
            let raw = String::from_utf8(raw).map_err(|_| fail())?;
            let (u, p) = raw.split_once(':').ok_or_else(fail)?;
            return self
                .users
                .iter()
                .find(|x| x.name == u && x.password == p)
                .map(|x| Principal {
                    name: x.name.clone(),
                    perms: x.perms.clone(),
                })
                .ok_or_else(fail);
        }
        if let Some(b64) = h.strip_prefix("ApiKey ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| fail())?;
            let raw = String::from_utf8(raw).map_err(|_| fail())?;
            let (id, key) = raw.split_once(':').ok_or_else(fail)?;
            return self
                .api_keys
                .iter()
                .find(|x| x.id == id && x.key == key)
                .map(|x| Principal {
                    name: x.id.clone(),
                    perms: x.perms.clone(),
                })
                .ok_or_else(fail);
        }
        Err(fail())
    }
}

/// The flavor's 401.
pub fn unauthorized(flavor: Flavor, path: &str) -> ApiError {
    match flavor {
        Flavor::OpenSearch => ApiError {
            status: 401,
            body: serde_json::Value::String("Unauthorized".into()),
            headers: vec![(
                "WWW-Authenticate".into(),
                "Basic realm=\"OpenSearch Security\"".into(),
            )],
        },
        Flavor::Elasticsearch => {
            let mut extra = serde_json::Map::new();
            extra.insert(
                "header".into(),
                serde_json::json!({"WWW-Authenticate": ["Basic realm=\"security\", charset=\"UTF-8\"", "ApiKey"]}),
            );
            ApiError::with_extra(
                401,
                "security_exception",
                format!("missing authentication credentials for REST request [{path}]"),
                extra,
            )
            .header(
                "WWW-Authenticate",
                "Basic realm=\"security\", charset=\"UTF-8\"",
            )
            .header("WWW-Authenticate", "ApiKey")
        }
    }
}

/// The flavor's 403 for `action` by `who`.
pub fn forbidden(flavor: Flavor, action: &str, who: &str) -> ApiError {
    match flavor {
        Flavor::OpenSearch => ApiError::new(
            403,
            "security_exception",
            format!(
                "no permissions for [{action}] and User [name={who}, backend_roles=[], requestedTenant=null]"
            ),
        ),
        Flavor::Elasticsearch => ApiError::new(
            403,
            "security_exception",
            format!(
                "action [{action}] is unauthorized for user [{who}] with effective roles [searchsim_role], this action is granted by the index privileges [read,all]"
            ),
        ),
    }
}

impl Principal {
    /// Whether the principal may run `write` on every index name given.
    pub fn allowed(&self, write: bool, indices: &[&str]) -> bool {
        if write && self.perms.read_only {
            return false;
        }
        if self.perms.indices.is_empty() {
            return true;
        }
        indices.iter().all(|i| {
            i.split(',').all(|part| {
                self.perms.indices.iter().any(|p| {
                    wildcard_match(p, part) || (part.contains('*') && wildcard_match(part, p))
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_api_key() {
        let auth = Auth {
            users: vec![User::new("u", "p"), User::parse("r:s:ro:logs-*").unwrap()],
            api_keys: vec![ApiKey::new("k1", "sec")],
        };
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p")
        );
        assert_eq!(
            auth.authenticate(Some(&basic), Flavor::OpenSearch, "/")
                .unwrap()
                .name,
            "u"
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:x")
        );
        assert_eq!(
            auth.authenticate(Some(&bad), Flavor::OpenSearch, "/")
                .unwrap_err()
                .status,
            401
        );
        let key = format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode("k1:sec")
        );
        assert_eq!(
            auth.authenticate(Some(&key), Flavor::Elasticsearch, "/")
                .unwrap()
                .name,
            "k1"
        );
        let ro = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("r:s")
        );
        let p = auth
            .authenticate(Some(&ro), Flavor::OpenSearch, "/")
            .unwrap();
        assert!(!p.allowed(true, &["logs-1"]));
        assert!(p.allowed(false, &["logs-1"]));
        assert!(!p.allowed(false, &["other"]));
        assert!(!format!("{:?}", auth).contains("sec"));
        assert!(!format!("{:?}", auth).contains("\"p\""));
    }
}
