//! The crate's one error type. Most variants are API errors that leave the server as a
//! Kubernetes `Status` body with the same `reason`, `code` and `details` shape as the real
//! kube-apiserver; the rest are start-up failures of the `Server` itself.

use serde_json::{Value, json};

/// One field-level cause of an `Invalid` (422) or `Conflict` (409) answer, as in
/// `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, ...
    pub reason: String,
    /// Human-readable, starts with the field path.
    pub message: String,
    /// The field path, e.g. `spec.retry.maxAttempts`.
    pub field: String,
}

/// Names the object an API error is about, for `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// API group, empty for the core group.
    pub group: String,
    /// Plural resource name (`NotFound`, `AlreadyExists`, `Conflict`) or kind (`Invalid`).
    pub kind: String,
    /// Object name, may be empty.
    pub name: String,
}

impl Subject {
    /// `widgets.example.com` or `secrets` (core group), as the real messages print it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Everything that can go wrong in kubesim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the object (or its namespace) does not exist.
    #[error("{} \"{}\" not found", .0.qualified(), .0.name)]
    NotFound(Subject),
    /// 404 for a path that names no known resource.
    #[error(
        "the server could not find the requested resource ({0}); create the CRD first or check the group/version/plural"
    )]
    NoSuchResource(String),
    /// 409: create of a name that exists.
    #[error("{} \"{}\" already exists", .0.qualified(), .0.name)]
    AlreadyExists(Subject),
    /// 409: stale resourceVersion, failed precondition or field-manager conflict.
    #[error("{message}")]
    Conflict {
        /// What the conflict is about.
        subject: Subject,
        /// Full message.
        message: String,
        /// Field-manager conflicts list each field here.
        causes: Vec<Cause>,
    },
    /// 422: the object fails validation.
    #[error("{} \"{}\" is invalid: {}", .subject.qualified(), .subject.name, format_causes(.causes))]
    Invalid {
        /// Kind and group of the object.
        subject: Subject,
        /// One entry per failing field.
        causes: Vec<Cause>,
    },
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported on this path.
    #[error("the server does not allow this method on the requested resource ({0})")]
    MethodNotAllowed(String),
    /// 415: unsupported patch or body content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410: a resourceVersion or continue token older than the kept history.
    #[error("{0}")]
    Gone(String),
    /// 401: a bearer token the server does not know.
    #[error("Unauthorized: unknown bearer token; register it with Server::add_token")]
    Unauthorized,
    /// 500: a rule of the real server that answers with an internal error.
    #[error("{0}")]
    Internal(String),
    /// Binding the listening socket failed.
    #[error("kubesim could not listen on {addr}: {source}; pick another port or free this one")]
    Bind {
        /// Requested address.
        addr: String,
        /// Underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// A kube client could not be built for the served URL.
    #[error("kubesim could not build a kube client for {url}: {message}")]
    Client {
        /// Server URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

fn format_causes(causes: &[Cause]) -> String {
    match causes {
        [one] => one.message.clone(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|c| c.message.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Crate result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status code of the answer.
    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound(_) | Error::NoSuchResource(_) => 404,
            Error::AlreadyExists(_) | Error::Conflict { .. } => 409,
            Error::Invalid { .. } => 422,
            Error::BadRequest(_) => 400,
            Error::MethodNotAllowed(_) => 405,
            Error::UnsupportedMediaType(_) => 415,
            Error::Gone(_) => 410,
            Error::Unauthorized => 401,
            Error::Internal(_) | Error::Bind { .. } | Error::Client { .. } => 500,
        }
    }

    /// The `Status.reason` string.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound(_) | Error::NoSuchResource(_) => "NotFound",
            Error::AlreadyExists(_) => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::Invalid { .. } => "Invalid",
            Error::BadRequest(_) => "BadRequest",
            Error::MethodNotAllowed(_) => "MethodNotAllowed",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::Gone(_) => "Expired",
            Error::Unauthorized => "Unauthorized",
            Error::Internal(_) | Error::Bind { .. } | Error::Client { .. } => "InternalError",
        }
    }

    /// A `Status` object as the real API server returns it.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            Error::NotFound(s) | Error::AlreadyExists(s) => Some(subject_details(s, &[])),
            Error::Conflict {
                subject, causes, ..
            }
            | Error::Invalid { subject, causes } => Some(subject_details(subject, causes)),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }

    /// Shorthand for a stale-resourceVersion conflict.
    pub fn stale(subject: Subject) -> Error {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            subject.qualified(),
            subject.name
        );
        Error::Conflict {
            subject,
            message,
            causes: Vec::new(),
        }
    }

    /// Shorthand for one invalid field.
    pub fn invalid(subject: Subject, reason: &str, field: &str, message: String) -> Error {
        Error::Invalid {
            subject,
            causes: vec![Cause {
                reason: reason.to_string(),
                message,
                field: field.to_string(),
            }],
        }
    }
}

fn subject_details(s: &Subject, causes: &[Cause]) -> Value {
    let mut d = serde_json::Map::new();
    if !s.name.is_empty() {
        d.insert("name".into(), json!(s.name));
    }
    if !s.group.is_empty() {
        d.insert("group".into(), json!(s.group));
    }
    d.insert("kind".into(), json!(s.kind));
    if !causes.is_empty() {
        d.insert(
            "causes".into(),
            Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            ),
        );
    }
    Value::Object(d)
}
