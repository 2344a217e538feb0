//! Encoder round trips: NDJSON equals the sources, CSV parses back to the flattened values,
//! Parquet reads back with the arrow reader for every type with misfits in `_extra`,
//! compressed outputs decompress to the plain ones, and memory stays bounded.

use std::io::Read;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int64Type, TimestampMillisecondType, TimestampNanosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use spillway_api::{
    Compression, Destination, DocRef, Format, OutputSpec, PartitionBy, VolumeDestination,
};
use spillway_sink::encode::ColumnKind;
use spillway_sink::{DocSchema, Encoder, encoder_for};

fn spec(format: Format, compression: Compression, include_metadata: bool) -> OutputSpec {
    OutputSpec {
        format,
        compression,
        destination: Destination {
            s3: None,
            volume: Some(VolumeDestination {
                path: "/tmp/x".into(),
            }),
        },
        partition_by: PartitionBy::None,
        include_metadata,
        row_group_bytes: 1 << 20,
        part_size_bytes: 8 << 20,
    }
}

fn mapping() -> Value {
    json!({"logs": {"mappings": {"properties": {
        "@timestamp": {"type": "date"},
        "t_ns": {"type": "date_nanos"},
        "http": {"properties": {"status": {"type": "short"}, "bytes": {"type": "long"}}},
        "msg": {"type": "text"},
        "host": {"type": "keyword"},
        "ratio": {"type": "double"},
        "ok": {"type": "boolean"},
        "tags": {"type": "nested", "properties": {"k": {"type": "keyword"}}},
        "loc": {"type": "geo_point"}
    }}}})
}

/// Sources exercising every type, quoting, unicode and misfits.
fn sources() -> Vec<(String, String)> {
    let docs = [
        r#"{"@timestamp":"2024-03-15T07:30:00.123Z","t_ns":"2024-03-15T07:30:00.123456789+01:00","http":{"status":200,"bytes":1234},"msg":"hello, \"world\"\nline two","host":"web-1","ratio":0.25,"ok":true,"tags":[{"k":"a"},{"k":"b"}],"loc":{"lat":1.5,"lon":2.5}}"#,
        r#"{"@timestamp":1710487800000,"http":{"status":"404"},"msg":"日本語 ✓","host":["a","b"],"ratio":"1.5","ok":"false","unmapped":{"x":[1,2]}}"#,
        r#"{"@timestamp":"2024-03-15","http.status":500,"msg":null,"ratio":"not a number","ok":1,"extra_top":"x,y"}"#,
        r#"{}"#,
        r#"{ "msg" : "spaced",  "http" : { "bytes" : 9223372036854775807 } }"#,
    ];
    docs.iter()
        .enumerate()
        .map(|(i, s)| (format!("id-{i}\"q"), s.to_string()))
        .collect()
}

fn refs(src: &[(String, String)]) -> Vec<DocRef<'_>> {
    src.iter()
        .map(|(id, s)| DocRef {
            index: "logs-2024.03.15",
            id,
            source: s,
        })
        .collect()
}

/// Encodes in pages of 2, draining after every page.
fn encode_all(mut enc: Box<dyn Encoder>, docs: &[DocRef<'_>]) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    for page in docs.chunks(2) {
        enc.write_page(page).unwrap();
        out.extend(enc.take_output());
    }
    let rows = enc.rows();
    out.extend(enc.finish().unwrap());
    (out, rows)
}

#[test]
fn ndjson_passes_sources_through() {
    let src = sources();
    let docs = refs(&src);
    let schema = DocSchema::from_mapping(&mapping()).unwrap();
    let (out, rows) = encode_all(
        encoder_for(&spec(Format::Ndjson, Compression::None, false), &schema).unwrap(),
        &docs,
    );
    assert_eq!(rows, docs.len() as u64);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), docs.len());
    for (line, d) in lines.iter().zip(&docs) {
        assert_eq!(*line, d.source, "byte for byte");
    }
}

#[test]
fn ndjson_with_metadata_puts_index_and_id_first() {
    let src = sources();
    let docs = refs(&src);
    let schema = DocSchema::default();
    let (out, _) = encode_all(
        encoder_for(&spec(Format::Ndjson, Compression::None, true), &schema).unwrap(),
        &docs,
    );
    let text = String::from_utf8(out).unwrap();
    for (line, d) in text.lines().zip(&docs) {
        let v: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let keys: Vec<&String> = v.keys().collect();
        assert_eq!(keys[0], "_index");
        assert_eq!(keys[1], "_id");
        assert_eq!(v["_id"], json!(d.id));
        assert_eq!(v["_index"], json!(d.index));
        let mut orig: serde_json::Map<String, Value> = serde_json::from_str(d.source).unwrap();
        let mut rest = v.clone();
        rest.remove("_index");
        rest.remove("_id");
        orig.sort_keys();
        rest.sort_keys();
        assert_eq!(rest, orig);
    }
    // The empty object gets no dangling comma.
    assert!(
        text.contains(r#"{"_index":"logs-2024.03.15","_id":"id-3\"q"}"#),
        "{text}"
    );
}

#[test]
fn ndjson_compacts_multi_line_sources() {
    let src = "{\n  \"a\": \"x\\ny\",\n  \"b\": [1, 2]\n}";
    let docs = [DocRef {
        index: "i",
        id: "1",
        source: src,
    }];
    let (out, _) = encode_all(
        encoder_for(
            &spec(Format::Ndjson, Compression::None, false),
            &DocSchema::default(),
        )
        .unwrap(),
        &docs,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"a\":\"x\\ny\",\"b\":[1,2]}\n"
    );
}

/// A small RFC 4180 reader for the test.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {
                    assert_eq!(chars.next(), Some('\n'), "CR must be followed by LF");
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                _ => field.push(c),
            }
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "file must end with CRLF"
    );
    rows
}

#[test]
fn csv_parses_back_to_the_flattened_values() {
    let src = sources();
    let docs = refs(&src);
    let schema = DocSchema::from_mapping(&mapping()).unwrap();
    let (out, _) = encode_all(
        encoder_for(&spec(Format::Csv, Compression::None, true), &schema).unwrap(),
        &docs,
    );
    let rows = parse_csv(std::str::from_utf8(&out).unwrap());
    assert_eq!(
        rows[0],
        [
            "_index",
            "_id",
            "@timestamp",
            "t_ns",
            "http.status",
            "http.bytes",
            "msg",
            "host",
            "ratio",
            "ok",
            "tags",
            "loc",
            "_extra"
        ]
    );
    assert_eq!(rows.len(), docs.len() + 1);
    assert_eq!(
        rows[1],
        [
            "logs-2024.03.15",
            "id-0\"q",
            "2024-03-15T07:30:00.123Z",
            "2024-03-15T07:30:00.123456789+01:00",
            "200",
            "1234",
            "hello, \"world\"\nline two",
            "web-1",
            "0.25",
            "true",
            r#"[{"k":"a"},{"k":"b"}]"#,
            r#"{"lat":1.5,"lon":2.5}"#,
            ""
        ]
    );
    assert_eq!(
        rows[2],
        [
            "logs-2024.03.15",
            "id-1\"q",
            "1710487800000",
            "",
            "404",
            "",
            "日本語 ✓",
            r#"["a","b"]"#,
            "1.5",
            "false",
            "",
            "",
            r#"{"unmapped":{"x":[1,2]}}"#
        ]
    );
    // A dotted key fills the same column as the nested object would; unmapped fields
    // land in _extra.
    assert_eq!(rows[3][4], "500");
    assert_eq!(rows[3][6], "");
    assert_eq!(rows[3][12], r#"{"extra_top":"x,y"}"#);
    assert!(rows[4][2..].iter().all(String::is_empty));
    assert_eq!(rows[5][6], "spaced");
    assert_eq!(rows[5][5], "9223372036854775807");
}

fn read_parquet(bytes: Vec<u8>) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    reader.map(|b| b.unwrap()).collect()
}

fn parquet_of(docs: &[DocRef<'_>], c: Compression) -> Vec<u8> {
    let schema = DocSchema::from_mapping(&mapping()).unwrap();
    let enc = encoder_for(&spec(Format::Parquet, c, false), &schema).unwrap();
    encode_all(enc, docs).0
}

#[test]
fn parquet_reads_back_every_type_with_misfits_in_extra() {
    let src = sources();
    let docs = refs(&src);
    let batches = read_parquet(parquet_of(&docs, Compression::Zstd));
    let batch = arrow_select_concat(&batches);
    let s = batch.schema();
    let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "_index",
            "_id",
            "@timestamp",
            "t_ns",
            "http.status",
            "http.bytes",
            "msg",
            "host",
            "ratio",
            "ok",
            "tags",
            "loc",
            "_extra"
        ]
    );
    assert_eq!(
        s.field_with_name("@timestamp").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(
        s.field_with_name("t_ns").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    );
    assert_eq!(batch.num_rows(), 5);
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();

    let id = col("_id");
    assert_eq!(id.as_string::<i32>().value(0), "id-0\"q");
    let ts = col("@timestamp");
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_710_487_800_123);
    assert_eq!(ts.value(1), 1_710_487_800_000);
    assert_eq!(ts.value(2), 1_710_460_800_000);
    assert!(ts.is_null(3));
    let ns = col("t_ns");
    let ns = ns.as_primitive::<TimestampNanosecondType>();
    assert_eq!(ns.value(0), 1_710_484_200_123_456_789);
    let status = col("http.status");
    let status = status.as_primitive::<Int64Type>();
    assert_eq!(
        (status.value(0), status.value(1), status.value(2)),
        (200, 404, 500)
    );
    let bytes = col("http.bytes");
    let bytes = bytes.as_primitive::<Int64Type>();
    assert_eq!(bytes.value(0), 1234);
    assert_eq!(bytes.value(4), i64::MAX);
    let msg = col("msg");
    let msg = msg.as_string::<i32>();
    assert_eq!(msg.value(0), "hello, \"world\"\nline two");
    assert_eq!(msg.value(1), "日本語 ✓");
    assert!(msg.is_null(2));
    let ratio = col("ratio");
    let ratio = ratio.as_primitive::<Float64Type>();
    assert_eq!((ratio.value(0), ratio.value(1)), (0.25, 1.5));
    assert!(ratio.is_null(2));
    let ok = col("ok");
    let ok = ok.as_boolean();
    assert!(ok.value(0));
    assert!(!ok.value(1));
    assert!(ok.is_null(2));
    let tags = col("tags");
    assert_eq!(tags.as_string::<i32>().value(0), r#"[{"k":"a"},{"k":"b"}]"#);
    let host = col("host");
    assert!(host.is_null(1), "an array on a keyword column does not fit");

    let extra = col("_extra");
    let extra = extra.as_string::<i32>();
    assert!(extra.is_null(0));
    let e1: Value = serde_json::from_str(extra.value(1)).unwrap();
    assert_eq!(e1, json!({"unmapped": {"x": [1, 2]}, "host": ["a", "b"]}));
    let e2: Value = serde_json::from_str(extra.value(2)).unwrap();
    assert_eq!(
        e2,
        json!({"extra_top": "x,y", "ratio": "not a number", "ok": 1})
    );
    assert!(extra.is_null(3));
}

/// The small test files hold fewer rows than one reader batch.
fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    assert_eq!(batches.len(), 1);
    batches[0].clone()
}

#[test]
fn parquet_codecs_read_back_equal() {
    let src = sources();
    let docs = refs(&src);
    let base = arrow_select_concat(&read_parquet(parquet_of(&docs, Compression::None)));
    for c in [Compression::Zstd, Compression::Snappy, Compression::Gzip] {
        let got = arrow_select_concat(&read_parquet(parquet_of(&docs, c)));
        assert_eq!(got, base, "{c:?}");
    }
}

#[test]
fn compressed_text_decompresses_to_plain() {
    let src = sources();
    let docs = refs(&src);
    let schema = DocSchema::from_mapping(&mapping()).unwrap();
    for format in [Format::Ndjson, Format::Csv] {
        let plain = encode_all(
            encoder_for(&spec(format, Compression::None, true), &schema).unwrap(),
            &docs,
        )
        .0;
        let gz = encode_all(
            encoder_for(&spec(format, Compression::Gzip, true), &schema).unwrap(),
            &docs,
        )
        .0;
        let zs = encode_all(
            encoder_for(&spec(format, Compression::Zstd, true), &schema).unwrap(),
            &docs,
        )
        .0;
        let mut g = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut g)
            .unwrap();
        assert_eq!(g, plain, "{format:?} gzip");
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), plain, "{format:?} zstd");
        assert_ne!(gz, plain);
    }
    let err = encoder_for(&spec(Format::Ndjson, Compression::Snappy, false), &schema);
    assert!(err.is_err());
}

#[test]
fn manifest_columns_list_the_file_schema() {
    let schema = DocSchema::from_mapping(&mapping()).unwrap();
    let enc = encoder_for(&spec(Format::Parquet, Compression::Zstd, false), &schema).unwrap();
    let cols = enc.columns();
    assert_eq!(cols.first().unwrap().name, "_index");
    assert_eq!(cols.last().unwrap().name, "_extra");
    let ts = cols.iter().find(|c| c.name == "@timestamp").unwrap();
    assert_eq!(ts.data_type, "Timestamp(ms, UTC)");
    let enc = encoder_for(&spec(Format::Ndjson, Compression::Zstd, false), &schema).unwrap();
    assert!(enc.columns().is_empty());
}

#[test]
fn parquet_memory_stays_bounded_by_row_groups() {
    let schema = DocSchema::from_columns(vec![
        ("@timestamp".into(), ColumnKind::TimestampMs),
        ("host".into(), ColumnKind::Utf8),
        ("n".into(), ColumnKind::Int64),
        ("msg".into(), ColumnKind::Utf8),
    ]);
    let mut s = spec(Format::Parquet, Compression::Zstd, false);
    s.row_group_bytes = 1 << 20;
    let mut enc = encoder_for(&s, &schema).unwrap();
    let mut file: Vec<u8> = Vec::new();
    let mut peak = 0usize;
    let mut x: u64 = 12345;
    for page in 0..200 {
        let srcs: Vec<(String, String)> = (0..1000)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let n = page * 1000 + i;
                (
                    format!("{n:08}"),
                    format!(
                        r#"{{"@timestamp":{},"host":"host-{}","n":{},"msg":"message {:x} with some text"}}"#,
                        1_700_000_000_000u64 + n as u64,
                        x % 50,
                        x >> 20,
                        x
                    ),
                )
            })
            .collect();
        let docs: Vec<DocRef<'_>> = srcs
            .iter()
            .map(|(id, s)| DocRef {
                index: "big",
                id,
                source: s,
            })
            .collect();
        enc.write_page(&docs).unwrap();
        peak = peak.max(enc.buffered_bytes());
        file.extend(enc.take_output());
    }
    assert_eq!(enc.rows(), 200_000);
    file.extend(enc.finish().unwrap());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
    let groups = reader.metadata().num_row_groups();
    assert!(
        groups >= 3,
        "the file must span several row groups of about rowGroupBytes each, got {groups}"
    );
    assert!(
        peak < 2 * (1 << 20),
        "peak buffered {peak} bytes exceeds 2x rowGroupBytes"
    );
}

#[test]
fn text_encoders_hold_little_when_drained() {
    let schema = DocSchema::from_columns(vec![
        ("n".into(), ColumnKind::Int64),
        ("s".into(), ColumnKind::Utf8),
    ]);
    for (format, c) in [
        (Format::Ndjson, Compression::Zstd),
        (Format::Csv, Compression::Gzip),
        (Format::Ndjson, Compression::None),
    ] {
        let mut enc = encoder_for(&spec(format, c, true), &schema).unwrap();
        let mut peak = 0;
        let mut total = 0;
        for page in 0..100 {
            let srcs: Vec<(String, String)> = (0..1000)
                .map(|i| {
                    let n = page * 1000 + i;
                    (
                        format!("{n}"),
                        format!(r#"{{"n":{n},"s":"value {n:x} {}"}}"#, n * 7919 % 10007),
                    )
                })
                .collect();
            let docs: Vec<DocRef<'_>> = srcs
                .iter()
                .map(|(id, s)| DocRef {
                    index: "i",
                    id,
                    source: s,
                })
                .collect();
            enc.write_page(&docs).unwrap();
            peak = peak.max(enc.buffered_bytes());
            total += enc.take_output().len();
        }
        total += enc.finish().unwrap().len();
        assert!(total > 500_000, "{format:?}/{c:?}: output {total}");
        assert!(
            peak < 256 << 10,
            "{format:?}/{c:?}: {peak} bytes held between drains"
        );
    }
}
