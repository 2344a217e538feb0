//! NDJSON and CSV encoders, optionally gzip- or zstd-compressed.

use std::io::Write;

use bytes::buf::Writer;
use bytes::{BufMut, Bytes, BytesMut};
use spillway_api::manifest::ManifestColumn;
use spillway_api::{Compression, DocRef};

use super::raw::{self, RawKind};
use super::schema::DocSchema;
use super::{Encoder, compression_name, extra_json, flatten};
use crate::error::SinkError;

/// The byte sink behind a text encoder: plain, gzip or zstd into a drainable buffer. The
/// buffer is a `BytesMut` so that drained output goes out as `Bytes` without a copy, and the
/// allocation comes back on the next page once the upload has dropped it.
enum Out {
    Plain(BytesMut),
    Gzip(flate2::write::GzEncoder<Writer<BytesMut>>),
    Zstd(zstd::stream::write::Encoder<'static, Writer<BytesMut>>),
}

impl Out {
    fn new(c: Compression, format: &'static str) -> Result<Out, SinkError> {
        Ok(match c {
            Compression::None => Out::Plain(BytesMut::new()),
            Compression::Gzip => Out::Gzip(flate2::write::GzEncoder::new(
                BytesMut::new().writer(),
                flate2::Compression::default(),
            )),
            Compression::Zstd => Out::Zstd(
                zstd::stream::write::Encoder::new(BytesMut::new().writer(), 3).map_err(|e| {
                    SinkError::Encode {
                        format,
                        reason: format!("cannot start zstd: {e}"),
                    }
                })?,
            ),
            Compression::Snappy => {
                return Err(SinkError::UnsupportedCompression {
                    compression: compression_name(c),
                    format,
                });
            }
        })
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
            Out::Gzip(e) => e.write_all(b),
            Out::Zstd(e) => e.write_all(b),
        }
    }

    fn buffer(&mut self) -> &mut BytesMut {
        match self {
            Out::Plain(v) => v,
            Out::Gzip(e) => e.get_mut().get_mut(),
            Out::Zstd(e) => e.get_mut().get_mut(),
        }
    }

    fn take(&mut self) -> Bytes {
        self.buffer().split().freeze()
    }

    fn pending(&self) -> usize {
        match self {
            Out::Plain(v) => v.len(),
            Out::Gzip(e) => e.get_ref().get_ref().len(),
            Out::Zstd(e) => e.get_ref().get_ref().len(),
        }
    }

    fn finish(self) -> std::io::Result<Bytes> {
        Ok(match self {
            Out::Plain(v) => v,
            Out::Gzip(e) => e.finish()?.into_inner(),
            Out::Zstd(e) => e.finish()?.into_inner(),
        }
        .freeze())
    }
}

enum Kind {
    Ndjson,
    Csv {
        schema: DocSchema,
        header_done: bool,
    },
}

pub(crate) struct TextEncoder {
    kind: Kind,
    include_metadata: bool,
    out: Out,
    /// Compressed output: the page's lines, handed to the compressor in one write.
    line: BytesMut,
    rows: u64,
}

impl TextEncoder {
    pub(crate) fn ndjson(include_metadata: bool, c: Compression) -> Result<Self, SinkError> {
        Ok(TextEncoder {
            kind: Kind::Ndjson,
            include_metadata,
            out: Out::new(c, "NDJSON")?,
            line: BytesMut::new(),
            rows: 0,
        })
    }

    pub(crate) fn csv(
        schema: DocSchema,
        include_metadata: bool,
        c: Compression,
    ) -> Result<Self, SinkError> {
        Ok(TextEncoder {
            kind: Kind::Csv {
                schema,
                header_done: false,
            },
            include_metadata,
            out: Out::new(c, "CSV")?,
            line: BytesMut::new(),
            rows: 0,
        })
    }

    fn format(&self) -> &'static str {
        match self.kind {
            Kind::Ndjson => "NDJSON",
            Kind::Csv { .. } => "CSV",
        }
    }

    fn emit(&mut self) -> Result<(), SinkError> {
        let format = self.format();
        self.out
            .write_all(&self.line)
            .map_err(|e| SinkError::Encode {
                format,
                reason: format!("compression failed: {e}"),
            })?;
        self.line.clear();
        Ok(())
    }

    /// Appends the lines of `docs` to `buf`.
    fn encode_docs(&mut self, buf: &mut BytesMut, docs: &[DocRef<'_>]) -> Result<(), SinkError> {
        for doc in docs {
            match &self.kind {
                Kind::Ndjson => ndjson_line(buf, doc, self.include_metadata)?,
                Kind::Csv { schema, .. } => {
                    let flat = flatten(schema, doc)?;
                    let mut first = true;
                    let mut sep = |line: &mut BytesMut| {
                        if !first {
                            line.put_u8(b',');
                        }
                        first = false;
                    };
                    if self.include_metadata {
                        sep(buf);
                        csv_field(buf, doc.index);
                        sep(buf);
                        csv_field(buf, doc.id);
                    }
                    for cell in &flat.cells {
                        sep(buf);
                        if let Some(v) = cell {
                            csv_field(buf, &cell_text(v.get()));
                        }
                    }
                    sep(buf);
                    if let Some(extra) = extra_json(&flat.extra) {
                        csv_field(buf, &extra);
                    }
                    buf.extend_from_slice(b"\r\n");
                }
            }
            self.rows += 1;
        }
        Ok(())
    }

    fn ensure_header(&mut self) -> Result<(), SinkError> {
        let Kind::Csv {
            schema,
            header_done,
        } = &mut self.kind
        else {
            return Ok(());
        };
        if *header_done {
            return Ok(());
        }
        *header_done = true;
        let mut fields: Vec<&str> = Vec::new();
        if self.include_metadata {
            fields.extend(["_index", "_id"]);
        }
        fields.extend(schema.columns.iter().map(|c| c.name.as_str()));
        fields.push("_extra");
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.line.put_u8(b',');
            }
            csv_field(&mut self.line, f);
        }
        self.line.extend_from_slice(b"\r\n");
        self.emit()
    }
}

/// Appends one RFC 4180 field, quoted when it holds a comma, quote, CR or LF.
pub(crate) fn csv_field(out: &mut BytesMut, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.put_u8(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.put_u8(b'"');
            }
            out.put_u8(b);
        }
        out.put_u8(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// The CSV text of a raw JSON value.
fn cell_text(raw_value: &str) -> std::borrow::Cow<'_, str> {
    match raw::kind(raw_value) {
        RawKind::Null => "".into(),
        RawKind::String => raw::string_value(raw_value)
            .map(Into::into)
            .unwrap_or_else(|| raw_value.into()),
        RawKind::Bool | RawKind::Number => raw_value.into(),
        RawKind::Array | RawKind::Object => raw::compact(raw_value),
    }
}

fn ndjson_line(
    line: &mut BytesMut,
    doc: &DocRef<'_>,
    include_metadata: bool,
) -> Result<(), SinkError> {
    let src = doc.source.trim();
    let src = if memchr::memchr2(b'\n', b'\r', src.as_bytes()).is_some() {
        raw::compact(src)
    } else {
        src.into()
    };
    if !src.starts_with('{') || !src.ends_with('}') {
        return Err(SinkError::BadSource {
            index: doc.index.to_string(),
            id: doc.id.to_string(),
            reason: "it does not start with '{' and end with '}'".into(),
        });
    }
    if include_metadata {
        line.extend_from_slice(b"{\"_index\":");
        line.extend_from_slice(raw::json_string(doc.index).as_bytes());
        line.extend_from_slice(b",\"_id\":");
        line.extend_from_slice(raw::json_string(doc.id).as_bytes());
        let rest = &src[1..];
        if !rest.trim_start().starts_with('}') {
            line.put_u8(b',');
        }
        line.extend_from_slice(rest.as_bytes());
    } else {
        line.extend_from_slice(src.as_bytes());
    }
    line.put_u8(b'\n');
    Ok(())
}

impl Encoder for TextEncoder {
    fn write_page(&mut self, docs: &[DocRef<'_>]) -> Result<(), SinkError> {
        self.ensure_header()?;
        // Plain output: lines go straight into the output buffer. Compressed: into `line`,
        // then one compressor write per page, not one per line.
        let plain = matches!(self.out, Out::Plain(_));
        let mut buf = if plain {
            std::mem::take(self.out.buffer())
        } else {
            std::mem::take(&mut self.line)
        };
        buf.reserve(
            docs.iter()
                .map(|d| d.source.len() + 2 + d.id.len() + d.index.len())
                .sum(),
        );
        let encoded = self.encode_docs(&mut buf, docs);
        if plain {
            *self.out.buffer() = buf;
        } else {
            self.line = buf;
        }
        encoded?;
        if plain { Ok(()) } else { self.emit() }
    }

    fn take_output(&mut self) -> Bytes {
        self.out.take()
    }

    fn finish(mut self: Box<Self>) -> Result<Bytes, SinkError> {
        self.ensure_header()?;
        let format = self.format();
        self.out.finish().map_err(|e| SinkError::Encode {
            format,
            reason: format!("cannot finish the compressed stream: {e}"),
        })
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn columns(&self) -> Vec<ManifestColumn> {
        match &self.kind {
            Kind::Ndjson => Vec::new(),
            Kind::Csv { schema, .. } => {
                let mut cols = Vec::new();
                let text = |name: &str| ManifestColumn {
                    name: name.into(),
                    data_type: "Utf8".into(),
                    nullable: true,
                };
                if self.include_metadata {
                    cols.push(text("_index"));
                    cols.push(text("_id"));
                }
                cols.extend(schema.columns.iter().map(|c| text(&c.name)));
                cols.push(text("_extra"));
                cols
            }
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.out.pending() + self.line.capacity()
    }
}
