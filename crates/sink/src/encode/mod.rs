//! Encoders: pages of search hits in, file bytes out. One streaming encoder per format behind
//! the [`Encoder`] trait; the caller feeds pages with [`Encoder::write_page`] and drains the
//! bytes produced so far with [`Encoder::take_output`] into upload parts, so memory stays
//! bounded by one Parquet row group (or a compressor's window), never by the file size.
//!
//! * NDJSON: each `_source` passes through byte for byte, one per line (a source spread over
//!   several lines is compacted: whitespace outside strings removed). With `includeMetadata`,
//!   `"_index"` and `"_id"` become the object's first members.
//! * CSV (RFC 4180, CRLF line ends): a header row, then `_index,_id` (with
//!   `includeMetadata`), one column per mapped leaf field in mapping order, and a trailing
//!   `_extra` column holding a JSON object of every field the mapping does not know, so
//!   nothing is lost. Strings are written as they are (dates as they appear in the source),
//!   numbers and booleans as their JSON text, arrays and objects as compact JSON.
//! * Parquet: `_index`, `_id`, the typed columns of the [`DocSchema`], then `_extra` (a JSON
//!   object of every field that is unmapped or whose value does not fit its column: an array
//!   on a scalar column, a string on a number column, ...). Row groups close when the
//!   buffered data reaches `rowGroupBytes`.
//! * NDJSON and CSV streams are wrapped in gzip or zstd (level 3) when configured.

use bytes::Bytes;
use spillway_api::manifest::ManifestColumn;
use spillway_api::{Compression, DocRef, Format, OutputSpec};

use crate::error::SinkError;

mod parquet;
mod raw;
mod schema;
mod text;

pub use schema::{Column, ColumnKind, DocSchema};

/// A streaming file encoder.
pub trait Encoder: Send {
    /// Encodes one page of documents.
    fn write_page(&mut self, docs: &[DocRef<'_>]) -> Result<(), SinkError>;
    /// The bytes finished so far (removed from the encoder).
    fn take_output(&mut self) -> Bytes;
    /// Ends the file and returns its remaining bytes.
    fn finish(self: Box<Self>) -> Result<Bytes, SinkError>;
    /// Documents encoded so far.
    fn rows(&self) -> u64;
    /// Columns of the file for the manifest (empty for NDJSON).
    fn columns(&self) -> Vec<ManifestColumn> {
        Vec::new()
    }
    /// Bytes held inside the encoder: buffered rows, compressor state, undrained output.
    fn buffered_bytes(&self) -> usize;
}

/// The encoder for an output spec.
pub fn encoder_for(output: &OutputSpec, schema: &DocSchema) -> Result<Box<dyn Encoder>, SinkError> {
    match output.format {
        Format::Ndjson => Ok(Box::new(text::TextEncoder::ndjson(
            output.include_metadata,
            output.compression,
        )?)),
        Format::Csv => Ok(Box::new(text::TextEncoder::csv(
            schema.clone(),
            output.include_metadata,
            output.compression,
        )?)),
        Format::Parquet => Ok(Box::new(parquet::ParquetEncoder::new(
            schema.clone(),
            output.compression,
            output.row_group_bytes,
        )?)),
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::Snappy => "snappy",
    }
}

/// A document's fields sorted into the schema's columns and the rest.
pub(crate) struct Flattened<'a> {
    /// One raw value per column (`None`: absent).
    pub cells: Vec<Option<&'a serde_json::value::RawValue>>,
    /// Fields with no column, by dotted name, in document order.
    pub extra: Vec<(String, &'a serde_json::value::RawValue)>,
}

pub(crate) fn flatten<'a>(
    schema: &DocSchema,
    doc: &DocRef<'a>,
) -> Result<Flattened<'a>, SinkError> {
    let obj = raw::parse_object(doc.source).map_err(|e| SinkError::BadSource {
        index: doc.index.to_string(),
        id: doc.id.to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Flattened {
        cells: vec![None; schema.len()],
        extra: Vec::new(),
    };
    walk(schema, obj, "", &mut out, doc)?;
    Ok(out)
}

fn walk<'a>(
    schema: &DocSchema,
    obj: raw::RawObject<'a>,
    prefix: &str,
    out: &mut Flattened<'a>,
    doc: &DocRef<'a>,
) -> Result<(), SinkError> {
    for (k, v) in obj.0 {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        if let Some(i) = schema.column_index(&name) {
            if out.cells[i].is_none() {
                out.cells[i] = Some(v);
            } else {
                // The same path twice (`"a.b"` and `"a": {"b"}`): keep the second in _extra.
                out.extra.push((name, v));
            }
        } else if schema.is_object(&name) && raw::kind(v.get()) == raw::RawKind::Object {
            let inner: raw::RawObject<'a> =
                raw::parse_object(v.get()).map_err(|e| SinkError::BadSource {
                    index: doc.index.to_string(),
                    id: doc.id.to_string(),
                    reason: e.to_string(),
                })?;
            walk(schema, inner, &name, out, doc)?;
        } else {
            out.extra.push((name, v));
        }
    }
    Ok(())
}

/// `{"name":raw,...}` of the extra fields, or `None` when there are none.
pub(crate) fn extra_json(extra: &[(String, &serde_json::value::RawValue)]) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    let mut s = String::from("{");
    for (i, (k, v)) in extra.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&raw::json_string(k));
        s.push(':');
        s.push_str(&raw::compact(v.get()));
    }
    s.push('}');
    Some(s)
}
