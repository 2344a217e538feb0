//! The Parquet encoder: Arrow record batches per page into an `ArrowWriter` whose sink is a
//! `Vec` drained after every page; a row group closes once the writer buffers `rowGroupBytes`
//! (its `memory_size`: encoded pages, dictionaries and buffered values), so memory is bounded.
//!
//! What a writer holds besides the row group is kept small on purpose, because a worker runs
//! several encoders at once and every column of a row group has its own page buffer,
//! dictionary and compressor: pages stop at [`PAGE_LIMIT`] (a zstd context is sized by the
//! largest page it compressed: about 1.4 MiB per column for the writer's default 1 MiB
//! pages), dictionaries at the same size (a column with more distinct values falls back to
//! plain encoding, which zstd compresses about as well), `_id` never gets a dictionary
//! (every value is distinct), and the sink is reserved to the row group's size before each
//! flush so it never doubles past it.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use spillway_api::manifest::ManifestColumn;
use spillway_api::{Compression, DocRef};

use super::raw::{self, RawKind};
use super::schema::{ColumnKind, DocSchema};
use super::{Encoder, extra_json, flatten};
use crate::error::SinkError;

/// Largest data page and dictionary page, in bytes before compression. The writer's
/// default (1 MiB) costs a 1 MiB page buffer and a ~1.4 MiB zstd context per column, and
/// several MiB of dictionary per high-cardinality column; 64 KiB pages keep every
/// low-cardinality column dictionary-encoded and cut those costs several times over.
pub const PAGE_LIMIT: usize = 64 << 10;

/// Most rows per data page. A dictionary-encoded column buffers one 8-byte index per row of
/// its open page; the writer's default (20 000 rows) makes that 256 KiB per column.
pub const PAGE_ROWS: usize = 8 << 10;

/// Room for the footer (schema, row group and page index metadata) when reserving the sink.
const FOOTER_SLACK: usize = 64 << 10;

/// The Arrow type of a column kind.
pub fn arrow_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Utf8 | ColumnKind::Json => DataType::Utf8,
        ColumnKind::Int64 => DataType::Int64,
        ColumnKind::Float64 => DataType::Float64,
        ColumnKind::Boolean => DataType::Boolean,
        ColumnKind::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ColumnKind::TimestampNs => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
    }
}

/// The Arrow schema of the Parquet files of `schema`.
pub fn arrow_schema(schema: &DocSchema) -> SchemaRef {
    let mut fields = vec![
        Field::new("_index", DataType::Utf8, false),
        Field::new("_id", DataType::Utf8, false),
    ];
    fields.extend(
        schema
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), true)),
    );
    fields.push(Field::new("_extra", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

enum ColBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    TsMs(TimestampMillisecondBuilder),
    TsNs(TimestampNanosecondBuilder),
}

impl ColBuilder {
    fn new(kind: ColumnKind, cap: usize) -> ColBuilder {
        match kind {
            ColumnKind::Utf8 | ColumnKind::Json => {
                ColBuilder::Str(StringBuilder::with_capacity(cap, cap * 16))
            }
            ColumnKind::Int64 => ColBuilder::I64(Int64Builder::with_capacity(cap)),
            ColumnKind::Float64 => ColBuilder::F64(Float64Builder::with_capacity(cap)),
            ColumnKind::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            ColumnKind::TimestampMs => ColBuilder::TsMs(
                TimestampMillisecondBuilder::with_capacity(cap).with_timezone("UTC"),
            ),
            ColumnKind::TimestampNs => ColBuilder::TsNs(
                TimestampNanosecondBuilder::with_capacity(cap).with_timezone("UTC"),
            ),
        }
    }

    fn null(&mut self) {
        match self {
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::TsMs(b) => b.append_null(),
            ColBuilder::TsNs(b) => b.append_null(),
        }
    }

    /// Appends the value if it fits the column; `false` (and nothing appended) otherwise.
    fn push(&mut self, kind: ColumnKind, v: &str) -> bool {
        if raw::kind(v) == RawKind::Null {
            self.null();
            return true;
        }
        match self {
            ColBuilder::Str(b) => {
                if kind == ColumnKind::Json {
                    b.append_value(raw::compact(v));
                    return true;
                }
                match raw::kind(v) {
                    RawKind::String => match raw::string_value(v) {
                        Some(s) => b.append_value(s),
                        None => return false,
                    },
                    RawKind::Number | RawKind::Bool => b.append_value(v),
                    _ => return false,
                }
            }
            ColBuilder::I64(b) => match raw::to_i64(v) {
                Some(x) => b.append_value(x),
                None => return false,
            },
            ColBuilder::F64(b) => match raw::to_f64(v) {
                Some(x) => b.append_value(x),
                None => return false,
            },
            ColBuilder::Bool(b) => match raw::to_bool(v) {
                Some(x) => b.append_value(x),
                None => return false,
            },
            ColBuilder::TsMs(b) => match raw::to_epoch_nanos(v)
                .map(|n| n.div_euclid(1_000_000))
                .and_then(|ms| i64::try_from(ms).ok())
            {
                Some(x) => b.append_value(x),
                None => return false,
            },
            ColBuilder::TsNs(b) => match raw::to_epoch_nanos(v).and_then(|n| i64::try_from(n).ok())
            {
                Some(x) => b.append_value(x),
                None => return false,
            },
        }
        true
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::TsMs(b) => Arc::new(b.finish()),
            ColBuilder::TsNs(b) => Arc::new(b.finish()),
        }
    }
}

pub(crate) struct ParquetEncoder {
    schema: DocSchema,
    arrow: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    row_group_bytes: usize,
    rows: u64,
}

fn pq_err(e: impl std::fmt::Display) -> SinkError {
    SinkError::Encode {
        format: "Parquet",
        reason: e.to_string(),
    }
}

impl ParquetEncoder {
    pub(crate) fn new(
        schema: DocSchema,
        compression: Compression,
        row_group_bytes: u64,
    ) -> Result<Self, SinkError> {
        let codec = match compression {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Gzip => PqCompression::GZIP(GzipLevel::default()),
            Compression::Zstd => PqCompression::ZSTD(ZstdLevel::try_new(3).map_err(pq_err)?),
        };
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_data_page_size_limit(PAGE_LIMIT)
            .set_dictionary_page_size_limit(PAGE_LIMIT)
            .set_data_page_row_count_limit(PAGE_ROWS)
            .set_column_dictionary_enabled(ColumnPath::from("_id"), false)
            .set_created_by(format!("spillway {}", env!("CARGO_PKG_VERSION")))
            .build();
        let arrow = arrow_schema(&schema);
        let writer =
            ArrowWriter::try_new(Vec::new(), arrow.clone(), Some(props)).map_err(pq_err)?;
        Ok(ParquetEncoder {
            schema,
            arrow,
            writer,
            row_group_bytes: usize::try_from(row_group_bytes.max(1)).unwrap_or(usize::MAX),
            rows: 0,
        })
    }
}

impl ParquetEncoder {
    /// Reserves the sink for the in-progress row group plus `extra` bytes, so writing it out
    /// allocates once at about its size instead of doubling (up to 2x the row group).
    fn reserve_sink(&mut self, extra: usize) {
        let need = self.writer.in_progress_size() + extra;
        self.writer.inner_mut().reserve_exact(need);
    }
}

impl Encoder for ParquetEncoder {
    fn write_page(&mut self, docs: &[DocRef<'_>]) -> Result<(), SinkError> {
        if docs.is_empty() {
            return Ok(());
        }
        let n = docs.len();
        let mut index = StringBuilder::with_capacity(n, n * 16);
        let mut id = StringBuilder::with_capacity(n, n * 24);
        let mut extra = StringBuilder::with_capacity(n, 0);
        let mut cols: Vec<ColBuilder> = self
            .schema
            .columns
            .iter()
            .map(|c| ColBuilder::new(c.kind, n))
            .collect();
        for doc in docs {
            let mut flat = flatten(&self.schema, doc)?;
            index.append_value(doc.index);
            id.append_value(doc.id);
            for (i, (b, col)) in cols.iter_mut().zip(&self.schema.columns).enumerate() {
                match flat.cells[i] {
                    None => b.null(),
                    Some(v) => {
                        if !b.push(col.kind, v.get()) {
                            b.null();
                            flat.extra.push((col.name.clone(), v));
                        }
                    }
                }
            }
            match extra_json(&flat.extra) {
                Some(s) => extra.append_value(s),
                None => extra.append_null(),
            }
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len() + 3);
        arrays.push(Arc::new(index.finish()));
        arrays.push(Arc::new(id.finish()));
        arrays.extend(cols.iter_mut().map(ColBuilder::finish));
        arrays.push(Arc::new(extra.finish()));
        let batch = RecordBatch::try_new(self.arrow.clone(), arrays).map_err(pq_err)?;
        self.writer.write(&batch).map_err(pq_err)?;
        if self.writer.memory_size() >= self.row_group_bytes {
            self.reserve_sink(0);
            self.writer.flush().map_err(pq_err)?;
        }
        self.rows += n as u64;
        Ok(())
    }

    fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.inner_mut()))
    }

    fn finish(mut self: Box<Self>) -> Result<Bytes, SinkError> {
        self.reserve_sink(FOOTER_SLACK);
        self.writer.into_inner().map(Bytes::from).map_err(pq_err)
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn columns(&self) -> Vec<ManifestColumn> {
        let text = |name: &str, nullable| ManifestColumn {
            name: name.into(),
            data_type: "Utf8".into(),
            nullable,
        };
        let mut cols = vec![text("_index", false), text("_id", false)];
        cols.extend(self.schema.manifest_columns());
        cols.push(text("_extra", true));
        cols
    }

    fn buffered_bytes(&self) -> usize {
        self.writer.memory_size() + self.writer.inner().len()
    }
}
