//! The column layout of CSV and Parquet files, derived from the index mapping (never guessed
//! from the documents): ordered leaf columns with dotted names and one Arrow type each.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use spillway_api::manifest::ManifestColumn;

use crate::error::SinkError;

/// How a column's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// Text (keyword, text, ip, ...); numbers and booleans become their JSON text.
    Utf8,
    /// Text holding the value's compact JSON (nested, flattened, geo_*, unknown types).
    Json,
    Int64,
    Float64,
    Boolean,
    /// `date`: milliseconds since the epoch, UTC.
    TimestampMs,
    /// `date_nanos`: nanoseconds since the epoch, UTC.
    TimestampNs,
}

impl ColumnKind {
    /// The mapping type's column kind.
    pub fn from_mapping_type(t: &str) -> ColumnKind {
        match t {
            "keyword" | "text" | "match_only_text" | "wildcard" | "constant_keyword" | "ip"
            | "version" | "search_as_you_type" | "string" | "binary" | "completion" => {
                ColumnKind::Utf8
            }
            "long" | "integer" | "short" | "byte" | "unsigned_long" | "token_count" => {
                ColumnKind::Int64
            }
            "double" | "float" | "half_float" | "scaled_float" | "rank_feature" => {
                ColumnKind::Float64
            }
            "boolean" => ColumnKind::Boolean,
            "date" => ColumnKind::TimestampMs,
            "date_nanos" => ColumnKind::TimestampNs,
            _ => ColumnKind::Json,
        }
    }

    /// The type name recorded in the manifest.
    pub fn data_type(self) -> &'static str {
        match self {
            ColumnKind::Utf8 | ColumnKind::Json => "Utf8",
            ColumnKind::Int64 => "Int64",
            ColumnKind::Float64 => "Float64",
            ColumnKind::Boolean => "Boolean",
            ColumnKind::TimestampMs => "Timestamp(ms, UTC)",
            ColumnKind::TimestampNs => "Timestamp(ns, UTC)",
        }
    }

    /// The kind that holds values of both (for a field mapped differently across indices).
    fn widen(a: ColumnKind, b: ColumnKind) -> ColumnKind {
        use ColumnKind::*;
        match (a, b) {
            (x, y) if x == y => x,
            (Int64, Float64) | (Float64, Int64) => Float64,
            (TimestampMs, TimestampNs) | (TimestampNs, TimestampMs) => TimestampNs,
            (Json, _) | (_, Json) => Json,
            _ => Utf8,
        }
    }
}

/// One leaf column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Dotted path (`http.status`).
    pub name: String,
    pub kind: ColumnKind,
    /// The mapping type(s) it came from, e.g. `long` or `long|keyword`.
    pub mapping_type: String,
}

/// Columns of a set of indices, in the order fields first appear in the mappings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DocSchema {
    pub columns: Vec<Column>,
    /// Fields mapped differently across indices and how they were reconciled.
    pub warnings: Vec<String>,
    index: HashMap<String, usize>,
    objects: HashSet<String>,
}

/// Names the file formats use for their own columns.
pub const RESERVED: [&str; 3] = ["_index", "_id", "_extra"];

impl DocSchema {
    /// Builds the schema from the JSON of `GET /<indices>/_mapping`
    /// (`{"<index>": {"mappings": {"properties": ...}}}`); also accepts one index's
    /// `{"mappings": ...}` or a bare `{"properties": ...}`, and the typed mappings of
    /// Elasticsearch 6 (`{"mappings": {"_doc": {"properties": ...}}}`).
    pub fn from_mapping(v: &Value) -> Result<DocSchema, SinkError> {
        let obj = v
            .as_object()
            .ok_or_else(|| SinkError::Mapping("it is not a JSON object".into()))?;
        let mut mappings: Vec<(&str, &Value)> = Vec::new();
        if obj.contains_key("properties") {
            mappings.push(("(mapping)", v));
        } else if let Some(m) = obj.get("mappings") {
            mappings.push(("(mapping)", m));
        } else {
            for (index, def) in obj {
                let m = def.get("mappings").ok_or_else(|| {
                    SinkError::Mapping(format!("index {index} has no \"mappings\" member"))
                })?;
                mappings.push((index.as_str(), m));
            }
        }
        let mut b = Builder::default();
        for (index, m) in mappings {
            let props = properties_of(m);
            if let Some(props) = props {
                b.collect(index, props, "");
            }
        }
        Ok(b.build())
    }

    /// A schema from explicit columns (tests, or callers that know the layout).
    pub fn from_columns(columns: Vec<(String, ColumnKind)>) -> DocSchema {
        let mut b = Builder::default();
        for (name, kind) in columns {
            if let Some((parent, _)) = name.rsplit_once('.') {
                let mut p = String::new();
                for seg in parent.split('.') {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(seg);
                    b.objects.insert(p.clone());
                }
            }
            b.add_leaf("(columns)", name, kind, kind.data_type().to_string());
        }
        b.build()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Whether `name` is an object whose children are columns.
    pub fn is_object(&self, name: &str) -> bool {
        self.objects.contains(name)
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The typed columns as manifest entries (all nullable).
    pub fn manifest_columns(&self) -> Vec<ManifestColumn> {
        self.columns
            .iter()
            .map(|c| ManifestColumn {
                name: c.name.clone(),
                data_type: c.kind.data_type().into(),
                nullable: true,
            })
            .collect()
    }
}

fn properties_of(m: &Value) -> Option<&Map<String, Value>> {
    if let Some(p) = m.get("properties").and_then(Value::as_object) {
        return Some(p);
    }
    // Elasticsearch 6 typed mapping: a single type name level.
    let obj = m.as_object()?;
    let typed: Vec<&Value> = obj
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("properties").is_some_and(Value::is_object))
        .collect();
    match typed.as_slice() {
        [one] => one.get("properties").and_then(Value::as_object),
        _ => None,
    }
}

#[derive(Default)]
struct Builder {
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    objects: HashSet<String>,
    warnings: Vec<String>,
}

impl Builder {
    fn collect(&mut self, index: &str, props: &Map<String, Value>, prefix: &str) {
        for (field, def) in props {
            let name = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            let ty = def.get("type").and_then(Value::as_str);
            let children = def.get("properties").and_then(Value::as_object);
            match (ty, children) {
                (Some("alias"), _) => {}
                (None | Some("object"), Some(children)) => {
                    self.objects.insert(name.clone());
                    self.collect(index, children, &name);
                }
                (None | Some("object"), None) => {
                    self.add_leaf(index, name, ColumnKind::Json, "object".into())
                }
                (Some(t), _) => {
                    self.add_leaf(index, name, ColumnKind::from_mapping_type(t), t.to_string())
                }
            }
        }
    }

    fn add_leaf(&mut self, index: &str, name: String, kind: ColumnKind, ty: String) {
        if prefix_is_reserved(&name) {
            self.warnings.push(format!(
                "field {name} (index {index}) has a name the output uses for its own column; its values go to _extra"
            ));
            return;
        }
        match self.index.get(&name) {
            Some(&i) => {
                let c = &mut self.columns[i];
                let wide = ColumnKind::widen(c.kind, kind);
                if c.kind != kind || !c.mapping_type.split('|').any(|t| t == ty) {
                    if c.kind != kind {
                        self.warnings.push(format!(
                            "field {name} is mapped as {} in one index and {ty} in index {index}; exported as {}{}",
                            c.mapping_type,
                            wide.data_type(),
                            if wide == ColumnKind::Json { " (JSON text)" } else { "" }
                        ));
                    }
                    c.mapping_type.push('|');
                    c.mapping_type.push_str(&ty);
                }
                c.kind = wide;
            }
            None => {
                self.index.insert(name.clone(), self.columns.len());
                self.columns.push(Column {
                    name,
                    kind,
                    mapping_type: ty,
                });
            }
        }
    }

    fn build(mut self) -> DocSchema {
        // A name that is a leaf in one index and an object in another: keep the leaf as JSON
        // text of the whole value and drop the object's child columns.
        let conflicts: Vec<String> = self
            .columns
            .iter()
            .filter(|c| self.objects.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        for name in conflicts {
            let child = format!("{name}.");
            self.warnings.push(format!(
                "field {name} is an object in one index and a value in another; exported as one JSON text column"
            ));
            self.columns.retain(|c| !c.name.starts_with(&child));
            self.objects
                .retain(|o| o != &name && !o.starts_with(&child));
            if let Some(c) = self.columns.iter_mut().find(|c| c.name == name) {
                c.kind = ColumnKind::Json;
            }
        }
        let index = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        DocSchema {
            columns: self.columns,
            warnings: self.warnings,
            index,
            objects: self.objects,
        }
    }
}

fn prefix_is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_and_types_the_mapping() {
        let m = json!({"logs-1": {"mappings": {"properties": {
            "@timestamp": {"type": "date"},
            "http": {"properties": {"status": {"type": "short"}, "bytes": {"type": "long"}}},
            "msg": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
            "tags": {"type": "nested", "properties": {"k": {"type": "keyword"}}},
            "loc": {"type": "geo_point"},
            "ratio": {"type": "scaled_float", "scaling_factor": 100},
            "ok": {"type": "boolean"},
            "t_ns": {"type": "date_nanos"},
            "opaque": {"type": "object", "enabled": false},
            "al": {"type": "alias", "path": "msg"}
        }}}});
        let s = DocSchema::from_mapping(&m).unwrap();
        let cols: Vec<(&str, ColumnKind)> = s
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("@timestamp", ColumnKind::TimestampMs),
                ("http.status", ColumnKind::Int64),
                ("http.bytes", ColumnKind::Int64),
                ("msg", ColumnKind::Utf8),
                ("tags", ColumnKind::Json),
                ("loc", ColumnKind::Json),
                ("ratio", ColumnKind::Float64),
                ("ok", ColumnKind::Boolean),
                ("t_ns", ColumnKind::TimestampNs),
                ("opaque", ColumnKind::Json),
            ]
        );
        assert!(s.is_object("http"));
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn merges_indices_and_widens_conflicts() {
        let m = json!({
            "a": {"mappings": {"properties": {"x": {"type": "long"}, "y": {"type": "keyword"}, "o": {"properties": {"p": {"type": "long"}}}}}},
            "b": {"mappings": {"properties": {"x": {"type": "double"}, "z": {"type": "date"}, "y": {"type": "long"}, "o": {"type": "keyword"}}}}
        });
        let s = DocSchema::from_mapping(&m).unwrap();
        let cols: Vec<(&str, ColumnKind)> = s
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("x", ColumnKind::Float64),
                ("y", ColumnKind::Utf8),
                ("z", ColumnKind::TimestampMs),
                ("o", ColumnKind::Json),
            ]
        );
        assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
    }

    #[test]
    fn reads_typed_es6_mappings() {
        let m = json!({"old": {"mappings": {"_doc": {"properties": {"a": {"type": "integer"}}}}}});
        let s = DocSchema::from_mapping(&m).unwrap();
        assert_eq!(s.columns[0].name, "a");
    }
}
