//! kubesim: a Kubernetes API-server emulator for tests, faithful enough that kube-rs
//! (`Api`, `runtime::watcher`, `Controller`, `finalizer`), kubectl and the Python
//! `kubernetes` client behave against it as against a real kube-apiserver.
//!
//! It keeps objects as JSON in memory and serves the same axum router in-process
//! ([`Server::client`]) and on 127.0.0.1 ([`Server::start`], [`Server::kubeconfig_yaml`]).
//!
//! What it implements:
//! - Built-in kinds: `v1` Namespaces, Secrets, ConfigMaps, ServiceAccounts, Events;
//!   `events.k8s.io/v1` Events; `coordination.k8s.io/v1` Leases;
//!   `apiextensions.k8s.io/v1` CustomResourceDefinitions. Creating a CRD serves its
//!   resources (namespaced or cluster-scoped) and updates discovery; deleting it deletes
//!   its objects.
//! - Discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) and
//!   OpenAPI v3 (`/openapi/v3`, `/openapi/v3/apis/<g>/<v>`); `/openapi/v2` is 404.
//! - CRUD with the real rules: uid, one global resourceVersion counter,
//!   creationTimestamp, generation (custom resources start at 1; with a status
//!   subresource only non-metadata, non-status changes bump it, plus once when
//!   `deletionTimestamp` is set), 409 AlreadyExists / Conflict, 422 for a PUT without
//!   resourceVersion on custom resources, PUT never creates a custom resource, no-op writes
//!   keep the resourceVersion, `Status` bodies with `reason`/`details`/`code`.
//! - PATCH: merge patch, JSON patch (failed `test` → 422), server-side apply
//!   (`fieldManager` required, create-by-apply, conflicts → 409 unless `force=true`,
//!   simplified ownership: leaf fields of maps, lists atomic), strategic merge patch → 415
//!   on custom resources (treated as a merge patch on built-in kinds).
//! - `/status` subresource; finalizers and `deletionTimestamp`; owner-reference garbage
//!   collection (Background, Foreground, Orphan), done synchronously.
//! - List with `labelSelector`, `fieldSelector` (`metadata.name`, `metadata.namespace`,
//!   CRD `selectableFields`), `limit`/`continue`; watch with replay from a
//!   resourceVersion, bookmarks, 410 Gone for compacted resourceVersions,
//!   `sendInitialEvents` with the `k8s.io/initial-events-end` bookmark, `timeoutSeconds`;
//!   `meta.k8s.io/v1` Table output for `kubectl get`.
//! - Custom resource schemas: defaulting (on write and on read), pruning, validation with
//!   field-named 422 causes, `fieldValidation=Strict|Warn|Ignore`.
//! - CEL `x-kubernetes-validations`: evaluated by a small interpreter ([`cel`]) covering
//!   the usual subset (see that module). **Not enforced:** rules outside that subset (they
//!   are skipped silently), `messageExpression`, `reason`, cost limits, and transition
//!   rules inside list items.
//! - Every request is logged with its verb, path, query, user agent and user
//!   ([`Server::requests`]); `Authorization: Bearer <token>` maps to a user registered with
//!   [`Server::add_token`].
//!
//! Not implemented: authorization (RBAC is not enforced, only observable through the log),
//! admission webhooks, conversion webhooks (versions of a CRD share one storage and only
//! `apiVersion` changes), protobuf, aggregated discovery (clients fall back to the plain
//! documents), `resourceVersionMatch=Exact` lists of past states, pod/deployment kinds.

pub mod cel;
pub mod discovery;
pub mod error;
mod http;
pub mod patch;
pub mod resources;
pub mod schema;
pub mod selector;
mod server;
pub mod store;

pub use error::{Error, Result};
pub use server::{ANONYMOUS, RequestRecord, Server, ServerOptions};
