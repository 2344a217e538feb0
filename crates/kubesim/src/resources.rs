//! The resource registry: which (group, version, plural) paths exist, their kind, scope,
//! subresources, schema and the write rules that differ between built-in kinds and custom
//! resources. Built-in kinds are registered at start; every served version of a stored
//! CustomResourceDefinition adds one entry.

use serde_json::Value;

/// Everything the server knows about one served resource version.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural, the path segment.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// `<Kind>List`.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for discovery (`ej`).
    pub short_names: Vec<String>,
    /// Categories for discovery.
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status_subresource: bool,
    /// The CRD version's `openAPIV3Schema` (custom resources only).
    pub schema: Option<Value>,
    /// True for custom resources: generation, PUT needs an RV, no create on update, SMP 415.
    pub custom: bool,
    /// Maintains `metadata.generation`.
    pub has_generation: bool,
    /// PUT without resourceVersion is accepted (unconditional update).
    pub allow_unconditional_update: bool,
    /// PUT of a missing object creates it.
    pub allow_create_on_update: bool,
    /// Extra field-selector paths (CRD `selectableFields`), dotted without a leading dot.
    pub selectable_fields: Vec<String>,
    /// CRD `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key shared by all versions: (group, plural).
    pub fn storage_key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: false,
            schema: None,
            custom: false,
            has_generation: false,
            allow_unconditional_update: true,
            allow_create_on_update: false,
            selectable_fields: Vec::new(),
            printer_columns: Vec::new(),
        }
    }
}

/// The built-in kinds kubesim serves.
pub fn builtins() -> Vec<ResourceType> {
    let mut ns = ResourceType::builtin("", "v1", "namespaces", "Namespace", false);
    ns.short_names = vec!["ns".into()];
    ns.status_subresource = true;
    let secrets = ResourceType::builtin("", "v1", "secrets", "Secret", true);
    let mut cm = ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true);
    cm.short_names = vec!["cm".into()];
    let mut ev = ResourceType::builtin("", "v1", "events", "Event", true);
    ev.short_names = vec!["ev".into()];
    ev.allow_create_on_update = true;
    let mut ev2 = ResourceType::builtin("events.k8s.io", "v1", "events", "Event", true);
    ev2.short_names = vec!["ev".into()];
    ev2.allow_create_on_update = true;
    let mut sa = ResourceType::builtin("", "v1", "serviceaccounts", "ServiceAccount", true);
    sa.short_names = vec!["sa".into()];
    let mut lease = ResourceType::builtin("coordination.k8s.io", "v1", "leases", "Lease", true);
    lease.allow_create_on_update = true;
    let mut crd = ResourceType::builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    );
    crd.short_names = vec!["crd".into(), "crds".into()];
    crd.categories = vec!["api-extensions".into()];
    crd.status_subresource = true;
    crd.has_generation = true;
    vec![ns, secrets, cm, ev, sa, ev2, lease, crd]
}

/// The resource types one CRD object declares (one per served version). Errors name the
/// missing field.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = str_at(spec, "group").ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = str_at(names, "plural").ok_or("spec.names.plural: Required value")?;
    let kind = str_at(names, "kind").ok_or("spec.names.kind: Required value")?;
    let singular = str_at(names, "singular")
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(names, "listKind")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strings(names.get("shortNames"));
    let categories = strings(names.get("categories"));
    let namespaced = match str_at(spec, "scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        )?;
    let mut out = Vec::new();
    for v in versions {
        let name = str_at(v, "name").ok_or("spec.versions[].name: Required value")?;
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let subresources = v.get("subresources").or_else(|| spec.get("subresources"));
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .or_else(|| spec.pointer("/validation/openAPIV3Schema"))
            .cloned();
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        out.push(ResourceType {
            group: group.into(),
            version: name.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            status_subresource: subresources.and_then(|s| s.get("status")).is_some(),
            schema,
            custom: true,
            has_generation: true,
            allow_unconditional_update: false,
            allow_create_on_update: false,
            selectable_fields,
            printer_columns,
        });
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}
