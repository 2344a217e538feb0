//! Schema helpers for fields a derived schema cannot describe structurally.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An arbitrary JSON object kept as is (the query DSL).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
