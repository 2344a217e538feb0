//! The object store and the write rules of the real API server: one global resourceVersion
//! counter, uid/creationTimestamp/generation, optimistic concurrency, the status split,
//! finalizers and `deletionTimestamp`, owner-reference garbage collection, namespaces,
//! CRD registration, and the bounded event history that watches replay from.
//!
//! Objects are kept as `serde_json::Value` keyed by storage key (group, plural) and
//! (namespace, name); a CRD's versions share one storage (conversion strategy `None`: only
//! `apiVersion` changes between versions).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::{Cause, Error, Result, Subject};
use crate::patch::{self, Managers};
use crate::resources::{self, ResourceType};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The watch wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Storage key (group, plural).
    pub key: (String, String),
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (the last state for DELETED).
    pub object: Value,
    /// The object before the change (MODIFIED only).
    pub prev: Option<Value>,
}

/// How unknown fields are treated (`fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Prune silently.
    Ignore,
    /// Prune and answer with `Warning` headers (the default).
    #[default]
    Warn,
    /// Reject with 400.
    Strict,
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `fieldManager=` or a name derived from the user agent.
    pub field_manager: String,
    /// Whether `fieldManager` was given explicitly.
    pub explicit_manager: bool,
    /// `fieldValidation=`.
    pub field_validation: FieldValidation,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `force=true` (server-side apply).
    pub force: bool,
}

/// Parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// Parsed label selector.
    pub labels: LabelSelector,
    /// Parsed field selector.
    pub fields: FieldSelector,
    /// `limit=`, 0 for none.
    pub limit: usize,
    /// `continue=`.
    pub continue_token: Option<String>,
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun`.
    pub dry_run: bool,
}

/// What a write returns: HTTP code, body and `Warning` texts.
#[derive(Debug)]
pub struct Written {
    /// 200, 201 or 202.
    pub code: u16,
    /// Response body (stored form; the caller presents it).
    pub body: Value,
    /// Warning header texts.
    pub warnings: Vec<String>,
    /// The body is a `Status`, not an object.
    pub is_status: bool,
}

type ObjKey = (String, String);

/// The whole server state.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    objects: HashMap<(String, String), BTreeMap<ObjKey, Value>>,
    managers: HashMap<(String, String, String, String), Managers>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted_rv: u64,
    tx: broadcast::Sender<Arc<Event>>,
    /// Bumped whenever the set of served resources changes.
    pub discovery_generation: u64,
}

/// RFC 3339 with seconds, as Kubernetes prints timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn subject(rt: &ResourceType, name: &str) -> Subject {
    Subject {
        group: rt.group.clone(),
        kind: rt.plural.clone(),
        name: name.to_string(),
    }
}

fn kind_subject(rt: &ResourceType, name: &str) -> Subject {
    Subject {
        group: rt.group.clone(),
        kind: rt.kind.clone(),
        name: name.to_string(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The object without the fields that never count as a change (resourceVersion,
/// managedFields).
fn comparable(obj: &Value) -> Value {
    let mut c = obj.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    c
}

/// Everything that counts towards `generation`: all but metadata (and status when the
/// status subresource exists).
fn spec_part(obj: &Value, status_split: bool) -> Value {
    let mut c = obj.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_split {
            m.remove("status");
        }
    }
    c
}

impl Store {
    /// An empty store with the built-in kinds and the standard namespaces.
    pub fn new(history_limit: usize) -> Store {
        let (tx, _) = broadcast::channel(history_limit.max(16));
        let mut s = Store {
            rv: 1,
            types: BTreeMap::new(),
            objects: HashMap::new(),
            managers: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            tx,
            discovery_generation: 1,
        };
        for rt in resources::builtins() {
            s.types.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let rt = s
                .lookup("", "v1", "namespaces")
                .expect("namespaces are built in");
            let opts = WriteOpts {
                field_manager: "kubesim".into(),
                ..WriteOpts::default()
            };
            s.create(&rt, None, body, &opts)
                .expect("the standard namespaces are valid");
        }
        s
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The highest resourceVersion no longer in the event history.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// Drops the whole event history, so watches from any older RV get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// A served resource by (group, version, plural).
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// All served resources.
    pub fn types(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Subscribes to future events; the caller must hold the store lock, so the receiver
    /// sees exactly the events after `resource_version()`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// History events after `rv` (the caller checks `compacted_rv` first).
    pub fn history_after(&self, rv: u64) -> Vec<Arc<Event>> {
        self.history.iter().filter(|e| e.rv > rv).cloned().collect()
    }

    /// The stored objects of one resource, optionally in one namespace.
    pub fn objects(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        let Some(map) = self.objects.get(&rt.storage_key()) else {
            return Vec::new();
        };
        map.iter()
            .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn get_stored(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    /// The form clients see: `apiVersion` of the requested version, schema defaults
    /// (defaulting from storage), `managedFields`.
    pub fn present(&self, rt: &ResourceType, obj: &Value) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = Value::String(rt.api_version());
        o["kind"] = Value::String(rt.kind.clone());
        if let Some(s) = &rt.schema {
            schema::apply_defaults(&mut o, s);
        }
        let ns = meta_str(obj, "namespace").unwrap_or("").to_string();
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let (g, p) = rt.storage_key();
        if let Some(m) = self.managers.get(&(g, p, ns, name))
            && !m.is_empty()
        {
            meta_mut(&mut o).insert(
                "managedFields".into(),
                patch::managed_fields_json(m, &rt.api_version()),
            );
        }
        o
    }

    /// GET one object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        self.get_stored(rt, ns.unwrap_or(""), name)
            .cloned()
            .ok_or_else(|| Error::NotFound(subject(rt, name)))
    }

    fn ensure_namespace(&self, rt: &ResourceType, ns: Option<&str>) -> Result<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns = ns.unwrap_or("");
        let ns_rt = self
            .lookup("", "v1", "namespaces")
            .expect("namespaces are built in");
        if self.get_stored(&ns_rt, "", ns).is_none() {
            return Err(Error::NotFound(Subject {
                group: String::new(),
                kind: "namespaces".into(),
                name: ns.to_string(),
            }));
        }
        Ok(())
    }

    fn commit(
        &mut self,
        rt: &ResourceType,
        kind: EventType,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let ns = meta_str(&obj, "namespace").unwrap_or("").to_string();
        let name = meta_str(&obj, "name").unwrap_or("").to_string();
        let skey = rt.storage_key();
        let map = self.objects.entry(skey.clone()).or_default();
        match kind {
            EventType::Deleted => {
                map.remove(&(ns.clone(), name.clone()));
                self.managers
                    .remove(&(skey.0.clone(), skey.1.clone(), ns.clone(), name.clone()));
            }
            _ => {
                map.insert((ns.clone(), name.clone()), obj.clone());
            }
        }
        let ev = Arc::new(Event {
            rv,
            key: skey,
            namespace: ns,
            kind,
            object: obj.clone(),
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        let _ = self.tx.send(ev);
        obj
    }

    fn set_managers(&mut self, rt: &ResourceType, ns: &str, name: &str, m: Managers) {
        let (g, p) = rt.storage_key();
        self.managers
            .insert((g, p, ns.to_string(), name.to_string()), m);
    }

    fn managers_of(&self, rt: &ResourceType, ns: &str, name: &str) -> Managers {
        let (g, p) = rt.storage_key();
        self.managers
            .get(&(g, p, ns.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Schema defaulting, pruning and validation of a custom resource.
    fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let mut causes: Vec<Cause> = Vec::new();
        if rt.custom {
            let s = rt.schema.clone().unwrap_or_else(schema::permissive);
            let unknown = schema::process(obj, &s, old, &mut causes);
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list = unknown
                            .iter()
                            .map(|u| format!("unknown field \"{u}\""))
                            .collect::<Vec<_>>();
                        return Err(Error::BadRequest(format!(
                            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                            rt.kind,
                            rt.api_version(),
                            rt.kind,
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")));
                    }
                    FieldValidation::Ignore => {}
                }
            }
        }
        if rt.plural == "customresourcedefinitions" && rt.group == "apiextensions.k8s.io" {
            match resources::from_crd(obj) {
                Err(msg) => {
                    let field = msg.split(':').next().unwrap_or("spec").to_string();
                    causes.push(Cause {
                        reason: "FieldValueInvalid".into(),
                        message: msg,
                        field,
                    });
                }
                Ok(types) => {
                    if let Some(t) = types.first() {
                        let want = format!("{}.{}", t.plural, t.group);
                        if name != want {
                            causes.push(Cause {
                                reason: "FieldValueInvalid".into(),
                                message: format!(
                                    "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                                ),
                                field: "metadata.name".into(),
                            });
                        }
                    }
                }
            }
        }
        if let (Some(old), Some(m)) = (old, meta(obj))
            && meta(old).is_some_and(|om| om.contains_key("deletionTimestamp"))
        {
            let before = finalizers(old);
            let _ = m;
            for f in finalizers(obj) {
                if !before.contains(&f) {
                    causes.push(Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!(
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{f}\"}}"
                        ),
                        field: "metadata.finalizers".into(),
                    });
                }
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                subject: kind_subject(rt, &name),
                causes,
            })
        }
    }

    fn check_identity(&self, rt: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<()> {
        if !obj.is_object() {
            return Err(Error::BadRequest(format!(
                "the body of the request must be a {} object",
                rt.kind
            )));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            let group_of = |s: &str| {
                s.rsplit_once('/')
                    .map(|(g, _)| g.to_string())
                    .unwrap_or_default()
            };
            if group_of(av) != rt.group {
                return Err(Error::BadRequest(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != rt.kind
        {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.clone());
        if rt.group.is_empty() && rt.plural == "secrets" {
            fold_string_data(obj);
        }
        let m = meta_mut(obj);
        m.remove("managedFields");
        m.remove("selfLink");
        if rt.namespaced {
            let ns = ns.unwrap_or("");
            match m.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(Error::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request"
                            .into(),
                    ));
                }
                _ => {
                    m.insert("namespace".into(), Value::String(ns.to_string()));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// POST: create an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.check_identity(rt, ns, &mut obj)?;
        self.ensure_namespace(rt, ns)?;
        let m = meta_mut(&mut obj);
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(Error::Internal(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(n) => n.to_string(),
            None => match m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(prefix) => {
                    let n = format!("{prefix}{}", random_suffix());
                    m.insert("name".into(), Value::String(n.clone()));
                    n
                }
                None => {
                    return Err(Error::invalid(
                        kind_subject(rt, ""),
                        "FieldValueRequired",
                        "metadata.name",
                        "metadata.name: Required value: name or generateName is required".into(),
                    ));
                }
            },
        };
        if !valid_name(&name) {
            return Err(Error::invalid(
                kind_subject(rt, &name),
                "FieldValueInvalid",
                "metadata.name",
                format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        if self.get_stored(rt, ns.unwrap_or(""), &name).is_some() {
            return Err(Error::AlreadyExists(subject(rt, &name)));
        }
        let m = meta_mut(&mut obj);
        m.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if rt.has_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if rt.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            obj["status"] = json!({"phase": "Active"});
        }
        let mut warnings = Vec::new();
        self.admit(rt, &mut obj, None, opts, &mut warnings)?;
        if rt.plural == "customresourcedefinitions" {
            let kind_names = obj["spec"]["names"].clone();
            obj["status"] = json!({
                "acceptedNames": kind_names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now_rfc3339()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now_rfc3339()}
                ],
                "storedVersions": obj["spec"]["versions"].as_array().map(|vs| vs.iter()
                    .filter(|v| v["storage"].as_bool() == Some(true))
                    .map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default()
            });
        }
        if opts.dry_run {
            return Ok(Written {
                code: 201,
                body: obj,
                warnings,
                is_status: false,
            });
        }
        let mut managers = Managers::new();
        patch::record_update(
            None,
            &obj,
            &opts.field_manager,
            &mut managers,
            &now_rfc3339(),
            "",
        );
        let stored = self.commit(rt, EventType::Added, obj, None);
        self.set_managers(rt, ns.unwrap_or(""), &name, managers);
        if rt.plural == "customresourcedefinitions" {
            self.sync_crd(&stored);
        }
        Ok(Written {
            code: 201,
            body: stored,
            warnings,
            is_status: false,
        })
    }

    fn sync_crd(&mut self, crd: &Value) {
        let name = meta_str(crd, "name").unwrap_or("");
        let (group, plural) = name
            .split_once('.')
            .map(|(p, g)| (g.to_string(), p.to_string()))
            .unwrap_or_default();
        self.types
            .retain(|(g, _, p), rt| !(rt.custom && *g == group && *p == plural));
        if let Ok(types) = resources::from_crd(crd) {
            for rt in types {
                self.types.insert(
                    (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                    Arc::new(rt),
                );
            }
        }
        self.discovery_generation += 1;
    }

    /// The shared update path of PUT and every PATCH flavor. `new` is the full desired
    /// object; `require_rv` is true for PUT.
    #[allow(clippy::too_many_arguments)]
    fn update_with(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Value,
        mut new: Value,
        status_only: bool,
        require_rv: bool,
        opts: &WriteOpts,
        managers: Option<Managers>,
    ) -> Result<Written> {
        self.check_identity(rt, ns, &mut new)?;
        match meta_str(&new, "name") {
            Some(n) if n != name => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta_mut(&mut new).insert("name".into(), Value::String(name.to_string()));
            }
        }
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        match meta_str(&new, "resourceVersion").filter(|s| !s.is_empty()) {
            Some(rv) if rv != old_rv => return Err(Error::stale(subject(rt, name))),
            Some(_) => {}
            None if require_rv && !rt.allow_unconditional_update => {
                return Err(Error::invalid(
                    kind_subject(rt, name),
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .into(),
                ));
            }
            None => {}
        }
        let old_uid = meta_str(&old, "uid").unwrap_or("").to_string();
        if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty())
            && uid != old_uid
        {
            return Err(Error::Conflict {
                subject: subject(rt, name),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}",
                    subject(rt, name).qualified()
                ),
                causes: Vec::new(),
            });
        }
        if status_only {
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new = merged;
        } else {
            // server-owned metadata always comes from the stored object
            let om = meta(&old).cloned().unwrap_or_default();
            let nm = meta_mut(&mut new);
            for key in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(key) {
                    Some(v) => {
                        nm.insert(key.into(), v.clone());
                    }
                    None => {
                        nm.remove(key);
                    }
                }
            }
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
        }
        meta_mut(&mut new).insert("resourceVersion".into(), Value::String(old_rv.clone()));
        let mut warnings = Vec::new();
        self.admit(rt, &mut new, Some(&old), opts, &mut warnings)?;
        if rt.has_generation
            && spec_part(&new, rt.status_subresource) != spec_part(&old, rt.status_subresource)
        {
            let g = meta(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let ns_s = ns.unwrap_or("").to_string();
        let mut managers = managers.unwrap_or_else(|| {
            let mut m = self.managers_of(rt, &ns_s, name);
            patch::record_update(
                Some(&old),
                &new,
                &opts.field_manager,
                &mut m,
                &now_rfc3339(),
                if status_only { "status" } else { "" },
            );
            m
        });
        if comparable(&new) == comparable(&old) {
            // no-op: no new resourceVersion, no event
            if managers != self.managers_of(rt, &ns_s, name) && !opts.dry_run {
                managers.retain(|_, e| !e.fields.is_empty());
                self.set_managers(rt, &ns_s, name, managers);
            }
            return Ok(Written {
                code: 200,
                body: old,
                warnings,
                is_status: false,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                code: 200,
                body: new,
                warnings,
                is_status: false,
            });
        }
        let deleting = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting && finalizers(&new).is_empty() {
            let body = self.commit(rt, EventType::Deleted, new, Some(old));
            self.after_delete(rt, &body);
            return Ok(Written {
                code: 200,
                body,
                warnings,
                is_status: false,
            });
        }
        let body = self.commit(rt, EventType::Modified, new, Some(old));
        self.set_managers(rt, &ns_s, name, managers);
        if rt.plural == "customresourcedefinitions" {
            self.sync_crd(&body);
        }
        Ok(Written {
            code: 200,
            body,
            warnings,
            is_status: false,
        })
    }

    /// PUT (main resource or `/status`).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        match self.get_stored(rt, ns.unwrap_or(""), name).cloned() {
            Some(old) => self.update_with(rt, ns, name, old, obj, status_only, true, opts, None),
            None if rt.allow_create_on_update && !status_only => {
                let mut obj = obj;
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                    m.insert("name".into(), Value::String(name.to_string()));
                }
                self.create(rt, ns, obj, opts)
            }
            None => Err(Error::NotFound(subject(rt, name))),
        }
    }

    /// PATCH with any supported content type.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<Written> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let existing = self.get_stored(rt, ns.unwrap_or(""), name).cloned();
        match ct {
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                if !opts.explicit_manager {
                    return Err(Error::BadRequest(
                        "PATCH, application/apply-patch+yaml requires fieldManager parameter"
                            .into(),
                    ));
                }
                let applied: Value = serde_yaml_ng::from_slice(body)
                    .map_err(|e| Error::BadRequest(format!("error decoding YAML: {e}")))?;
                if !applied.is_object() {
                    return Err(Error::BadRequest(
                        "an apply configuration must be an object".into(),
                    ));
                }
                let mut applied = applied;
                if status_only {
                    // only status is applied through the status subresource
                    let status = applied.get("status").cloned();
                    let mut keep = json!({});
                    for k in ["apiVersion", "kind", "metadata"] {
                        if let Some(v) = applied.get(k) {
                            keep[k] = v.clone();
                        }
                    }
                    if let Some(s) = status {
                        keep["status"] = s;
                    }
                    applied = keep;
                } else if rt.status_subresource
                    && let Some(o) = applied.as_object_mut()
                {
                    o.remove("status");
                }
                let ns_s = ns.unwrap_or("").to_string();
                let mut managers = self.managers_of(rt, &ns_s, name);
                let sub = if status_only { "status" } else { "" };
                let merged = patch::server_side_apply(
                    existing.as_ref(),
                    &applied,
                    &opts.field_manager,
                    opts.force,
                    &mut managers,
                    &now_rfc3339(),
                    sub,
                )
                .map_err(|conflicts| {
                    let causes: Vec<Cause> = conflicts
                        .iter()
                        .map(|c| Cause {
                            reason: "FieldManagerConflict".into(),
                            message: format!("conflict with \"{}\"", c.manager),
                            field: c.field.clone(),
                        })
                        .collect();
                    let lines = conflicts
                        .iter()
                        .map(|c| format!("- {}", c.field))
                        .collect::<Vec<_>>();
                    let who = conflicts
                        .first()
                        .map(|c| c.manager.clone())
                        .unwrap_or_default();
                    Error::Conflict {
                        subject: subject(rt, name),
                        message: format!(
                            "Apply failed with {} conflict{}: conflict with \"{who}\": {}",
                            conflicts.len(),
                            if conflicts.len() == 1 { "" } else { "s" },
                            lines.join("\n")
                        ),
                        causes,
                    }
                })?;
                match existing {
                    None => {
                        if status_only {
                            return Err(Error::NotFound(subject(rt, name)));
                        }
                        let mut obj = merged;
                        meta_mut(&mut obj).insert("name".into(), Value::String(name.to_string()));
                        let mut w = self.create(rt, ns, obj, opts)?;
                        if !opts.dry_run {
                            self.set_managers(rt, &ns_s, name, managers);
                            w.body = self.get_stored(rt, &ns_s, name).cloned().unwrap_or(w.body);
                        }
                        Ok(w)
                    }
                    Some(old) => {
                        let mut new = merged;
                        // the RV of the applied configuration (if any) is a precondition
                        let want_rv = applied.pointer("/metadata/resourceVersion").cloned();
                        match want_rv {
                            Some(v) => {
                                meta_mut(&mut new).insert("resourceVersion".into(), v);
                            }
                            None => {
                                meta_mut(&mut new).remove("resourceVersion");
                            }
                        }
                        self.update_with(
                            rt,
                            ns,
                            name,
                            old,
                            new,
                            status_only,
                            false,
                            opts,
                            Some(managers),
                        )
                    }
                }
            }
            "application/merge-patch+json"
            | "application/json-patch+json"
            | "application/strategic-merge-patch+json" => {
                if ct == "application/strategic-merge-patch+json" && rt.custom {
                    return Err(Error::UnsupportedMediaType(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (patch type {ct} is not supported for custom resources)"
                    )));
                }
                let Some(old) = existing else {
                    return Err(Error::NotFound(subject(rt, name)));
                };
                let patch_doc: Value = serde_json::from_slice(body)
                    .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
                let mut new = old.clone();
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                let old_rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
                if ct == "application/json-patch+json" {
                    // JSON patch sees the RV so a `test` on it works; it stays a precondition
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), Value::String(old_rv.clone()));
                    match patch::json_patch(&mut new, &patch_doc) {
                        Ok(()) => {}
                        Err(Ok(bad)) => return Err(Error::BadRequest(bad)),
                        Err(Err(msg)) => {
                            return Err(Error::invalid(
                                kind_subject(rt, name),
                                "FieldValueInvalid",
                                "",
                                msg,
                            ));
                        }
                    }
                    if meta_str(&new, "resourceVersion") == Some(old_rv.as_str()) {
                        meta_mut(&mut new).remove("resourceVersion");
                    }
                } else {
                    patch::merge_patch(&mut new, &patch_doc);
                }
                self.update_with(rt, ns, name, old, new, status_only, false, opts, None)
            }
            other => Err(Error::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }

    /// DELETE one object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Written> {
        let ns_s = ns.unwrap_or("").to_string();
        let Some(old) = self.get_stored(rt, &ns_s, name).cloned() else {
            return Err(Error::NotFound(subject(rt, name)));
        };
        let uid = meta_str(&old, "uid").unwrap_or("").to_string();
        let rv = meta_str(&old, "resourceVersion").unwrap_or("").to_string();
        let precondition = |what: &str, want: &str, have: &str| Error::Conflict {
            subject: subject(rt, name),
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}",
                subject(rt, name).qualified()
            ),
            causes: Vec::new(),
        };
        if let Some(u) = &opts.uid
            && *u != uid
        {
            return Err(precondition("UID", u, &uid));
        }
        if let Some(r) = &opts.resource_version
            && *r != rv
        {
            return Err(precondition("ResourceVersion", r, &rv));
        }
        if opts.dry_run {
            return Ok(Written {
                code: 200,
                body: old,
                warnings: Vec::new(),
                is_status: false,
            });
        }
        let is_namespace = rt.plural == "namespaces" && rt.group.is_empty();
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Ok(Written {
                code: 202,
                body: old,
                warnings: Vec::new(),
                is_status: false,
            });
        }
        match opts.propagation.as_deref() {
            Some("Orphan") => self.orphan_dependents(&uid),
            _ => self.delete_dependents(&uid),
        }
        if !finalizers(&old).is_empty() || is_namespace {
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if rt.has_generation {
                let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                m.insert("generation".into(), json!(g + 1));
            }
            if is_namespace {
                new["status"] = json!({"phase": "Terminating"});
            }
            let body = self.commit(rt, EventType::Modified, new, Some(old));
            if is_namespace {
                self.drain_namespace(name);
                return Ok(Written {
                    code: 200,
                    body: self.get_stored(rt, "", name).cloned().unwrap_or(body),
                    warnings: Vec::new(),
                    is_status: false,
                });
            }
            return Ok(Written {
                code: 202,
                body,
                warnings: Vec::new(),
                is_status: false,
            });
        }
        let body = self.commit(rt, EventType::Deleted, old, None);
        self.after_delete(rt, &body);
        let mut details = json!({"name": name, "kind": rt.plural, "uid": uid});
        if !rt.group.is_empty() {
            details["group"] = Value::String(rt.group.clone());
        }
        Ok(Written {
            code: 200,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            warnings: Vec::new(),
            is_status: true,
        })
    }

    /// Bookkeeping after an object left the store: CRD types, namespace completion.
    fn after_delete(&mut self, rt: &ResourceType, obj: &Value) {
        if rt.plural == "customresourcedefinitions" && rt.group == "apiextensions.k8s.io" {
            let name = meta_str(obj, "name").unwrap_or("").to_string();
            if let Some((plural, group)) = name.split_once('.') {
                let custom: Vec<Arc<ResourceType>> = self
                    .types
                    .values()
                    .filter(|t| t.custom && t.group == group && t.plural == plural)
                    .cloned()
                    .collect();
                if let Some(t) = custom.first() {
                    for o in self.objects(t, None) {
                        self.commit(t, EventType::Deleted, o, None);
                    }
                }
                let (g, p) = (group.to_string(), plural.to_string());
                self.types
                    .retain(|(tg, _, tp), t| !(t.custom && *tg == g && *tp == p));
                self.discovery_generation += 1;
            }
        }
        if rt.namespaced {
            let ns = meta_str(obj, "namespace").unwrap_or("").to_string();
            self.finish_namespace_if_empty(&ns);
        }
    }

    fn all_namespaced(&self) -> Vec<Arc<ResourceType>> {
        let mut seen = std::collections::HashSet::new();
        self.types
            .values()
            .filter(|t| t.namespaced && seen.insert(t.storage_key()))
            .cloned()
            .collect()
    }

    fn drain_namespace(&mut self, ns: &str) {
        for t in self.all_namespaced() {
            for o in self.objects(&t, Some(ns)) {
                let name = meta_str(&o, "name").unwrap_or("").to_string();
                let _ = self.delete(&t, Some(ns), &name, &DeleteOpts::default());
            }
        }
        self.finish_namespace_if_empty(ns);
    }

    fn finish_namespace_if_empty(&mut self, ns: &str) {
        let ns_rt = self
            .lookup("", "v1", "namespaces")
            .expect("namespaces are built in");
        let Some(nsobj) = self.get_stored(&ns_rt, "", ns).cloned() else {
            return;
        };
        if !meta(&nsobj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return;
        }
        let empty = self
            .all_namespaced()
            .iter()
            .all(|t| self.objects(t, Some(ns)).is_empty());
        if empty {
            self.commit(&ns_rt, EventType::Deleted, nsobj, None);
        }
    }

    fn dependents(&self, uid: &str) -> Vec<(Arc<ResourceType>, Value)> {
        if uid.is_empty() {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for t in self.types.values() {
            if !seen.insert(t.storage_key()) {
                continue;
            }
            for o in self.objects(t, None) {
                let owned = meta(&o)
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    out.push((t.clone(), o));
                }
            }
        }
        out
    }

    fn delete_dependents(&mut self, uid: &str) {
        for (t, o) in self.dependents(uid) {
            let ns = meta_str(&o, "namespace").map(str::to_string);
            let name = meta_str(&o, "name").unwrap_or("").to_string();
            let _ = self.delete(&t, ns.as_deref(), &name, &DeleteOpts::default());
        }
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for (t, o) in self.dependents(uid) {
            let mut new = o.clone();
            if let Some(refs) = meta_mut(&mut new)
                .get_mut("ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            self.commit(&t, EventType::Modified, new, Some(o));
        }
    }

    /// LIST with selectors and paging.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOpts) -> Result<Value> {
        let (list_rv, start_after) = match &opts.continue_token {
            Some(tok) => {
                let (rv, start) = decode_continue(tok).ok_or_else(|| {
                    Error::BadRequest(format!("continue key is not valid: {tok}"))
                })?;
                if rv < self.compacted_rv {
                    return Err(Error::Gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.".into(),
                    ));
                }
                (rv, Some(start))
            }
            None => (self.rv, None),
        };
        let matching: Vec<Value> = self
            .objects
            .get(&rt.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
                    .filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s))
                    .filter(|(_, o)| opts.labels.matches(o) && opts.fields.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        let total = matching.len();
        let take = if opts.limit > 0 {
            opts.limit.min(total)
        } else {
            total
        };
        let items: Vec<Value> = matching[..take]
            .iter()
            .map(|o| self.present(rt, o))
            .collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if take < total {
            let last = &matching[take - 1];
            let key = (
                meta_str(last, "namespace").unwrap_or("").to_string(),
                meta_str(last, "name").unwrap_or("").to_string(),
            );
            metadata["continue"] = Value::String(encode_continue(list_rv, &key));
            metadata["remainingItemCount"] = json!(total - take);
        }
        Ok(json!({
            "kind": rt.list_kind,
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }
}

/// Secrets: `stringData` is write-only; its entries go into `data` base64-encoded.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    let data = obj["data"]
        .as_object_mut()
        .expect("data was just made an object");
    for (k, v) in sd {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        data.insert(
            k,
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> Option<(u64, ObjKey)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let rv = v.get("rv")?.as_u64()?;
    let start = v.get("start")?.as_array()?;
    Some((
        rv,
        (
            start.first()?.as_str()?.to_string(),
            start.get(1)?.as_str()?.to_string(),
        ),
    ))
}
