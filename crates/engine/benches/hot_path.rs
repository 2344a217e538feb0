//! Micro-benchmarks of the export hot path on one search response page of 1000 hits, as the
//! cluster sends it: decoding it into a [`Page`] and encoding its documents to NDJSON or
//! Parquet, with exactly the calls the shard executor makes per page (`Page::parse`,
//! `page.docs().collect()`, `Encoder::write_page`, `Encoder::take_output`). Physical
//! references run on the same bytes: a `memcpy` of the body, JSON validation of the body
//! (`serde_json` into `IgnoredAny`, which skips strings without checking their UTF-8), UTF-8
//! validation of the body (`std::str::from_utf8`) and SHA-256 of the body (the executor hashes
//! the bytes it uploads). Every benchmark reports throughput in bytes of response body per
//! second on one core.
//!
//! The page comes from an in-process searchsim loaded with generated documents of about
//! 1 KiB (`avg_message_bytes` 580): the source client opens a PIT and reads two pages of a
//! shard; the second page's body (a steady-state page, without the first page's total count)
//! is kept. Each iteration hands `Page::parse` a fresh body that alone owns its bytes (made
//! outside the timing). Encoders live across iterations, as they live across the pages of a
//! shard, so a Parquet row group is closed (and its columns encoded and compressed) whenever
//! about `rowGroupBytes` of rows have been buffered, and that cost is spread over the pages
//! that filled it.
//!
//! Run with `cargo bench -p spillway-engine --bench hot_path`; `bench/micro.sh` runs it and
//! prints a Markdown table.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use searchsim::datagen::{self, DataSpec};
use searchsim::{Config, SearchSim};
use sha2::{Digest, Sha256};
use spillway_api::{
    Compression, Destination, DocRef, Format, OutputSpec, PartitionBy, VolumeDestination,
};
use spillway_sink::encode::{DocSchema, Encoder, encoder_for};
use spillway_source::{Client, ShardRequest, SourceConfig, Target};

/// Hits per page (the default `sharding.pageSize`).
const PAGE_DOCS: u32 = 1000;

/// Generated documents of about 1 KiB each, like the benchmark data set.
fn data_spec() -> DataSpec {
    DataSpec {
        docs: u64::from(PAGE_DOCS) * 3,
        days: 1,
        shards: 3,
        seed: 7,
        avg_message_bytes: 580,
        // One large (64-256 KiB) document in 10,000 would make this one page unrepresentative.
        large_every: 0,
        ..DataSpec::default()
    }
}

/// The response body of one steady-state page of `PAGE_DOCS` hits, fetched once from an
/// in-process searchsim through the source client, the way a shard reader fetches it.
fn fetch_page_body() -> Bytes {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the page fetch");
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = SearchSim::start(Config::opensearch_3().with_refresh_interval(None))
            .await
            .expect("searchsim starts on 127.0.0.1");
        let spec = data_spec();
        let loaded = datagen::load(sim.cluster(), &spec).expect("generated documents load");
        let client = Client::connect(SourceConfig::new(sim.url()))
            .await
            .expect("the source client connects to searchsim");
        let snapshot = client
            .open_snapshot(&loaded.indices, "5m")
            .await
            .expect("a point in time opens");
        let mut reader = client.read_shard(ShardRequest {
            target: Target::Snapshot(snapshot.clone()),
            query: serde_json::json!({"match_all": {}}),
            time_field: None,
            window: None,
            slice: None,
            page_size: PAGE_DOCS,
            source_includes: vec![],
            source_excludes: vec![],
            tiebreaker_field: None,
            index: None,
        });
        let mut body = None;
        for _ in 0..2 {
            let page = reader
                .next_page()
                .await
                .expect("a page is read")
                .expect("the shard has two full pages");
            assert_eq!(page.len(), PAGE_DOCS as usize, "a full page of hits");
            body = Some(Bytes::copy_from_slice(AsRef::<[u8]>::as_ref(page.body())));
        }
        let _ = client.close_snapshot(&snapshot).await;
        sim.shutdown().await;
        body.expect("two pages were read")
    })
}

fn output(format: Format, compression: Compression) -> OutputSpec {
    OutputSpec {
        format,
        compression,
        destination: Destination {
            s3: None,
            volume: Some(VolumeDestination {
                path: "/unused".into(),
            }),
        },
        partition_by: PartitionBy::None,
        include_metadata: false,
        row_group_bytes: 4 << 20,
        part_size_bytes: 5 << 20,
    }
}

/// A fresh copy of the body that alone owns its bytes.
fn owned_body(body: &Bytes) -> Bytes {
    Bytes::from(body.to_vec())
}

/// The executor's per-page work: decode, collect the documents, encode, drain the output.
fn encode_page(body: Bytes, encoder: &mut dyn Encoder) -> usize {
    let page = spillway_source::Page::parse(body).expect("the page parses");
    let docs: Vec<DocRef<'_>> = page.docs().collect();
    encoder.write_page(&docs).expect("the page encodes");
    let out = encoder.take_output();
    black_box(&out);
    out.len()
}

fn hot_path(c: &mut Criterion) {
    let body = fetch_page_body();
    let page = spillway_source::Page::parse(body.clone()).expect("the fetched page parses");
    let docs = page.len();
    let source_bytes: usize = page.docs().map(|d| d.source.len()).sum();
    println!(
        "hot_path page: docs={docs} body_bytes={} mean_source_bytes={:.0} mean_hit_bytes={:.0}",
        body.len(),
        source_bytes as f64 / docs as f64,
        body.len() as f64 / docs as f64,
    );
    let schema = DocSchema::from_mapping(&datagen::mapping()).expect("the generator's mapping");

    // Output size per page of each encoding, for the record.
    for (name, format, compression) in [
        ("ndjson", Format::Ndjson, Compression::None),
        ("ndjson_zstd", Format::Ndjson, Compression::Zstd),
    ] {
        let mut enc = encoder_for(&output(format, compression), &schema).expect("an encoder");
        let mut bytes = encode_page(owned_body(&body), enc.as_mut());
        bytes += enc.finish().expect("the file ends").len();
        println!("hot_path output: {name} bytes_per_page={bytes}");
    }

    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Bytes(body.len() as u64));

    let mut dst = vec![0u8; body.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&body[..]));
            black_box(&dst);
        })
    });
    group.bench_function("json_validate", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body[..]))
                .expect("the body is JSON")
        })
    });
    group.bench_function("sha256", |b| {
        b.iter(|| Sha256::digest(black_box(&body[..])))
    });
    group.bench_function("blake3", |b| {
        b.iter(|| spillway_sink::digest_of(black_box(&body[..])))
    });
    group.bench_function("utf8_validate", |b| {
        b.iter(|| std::str::from_utf8(black_box(&body[..])).is_ok())
    });
    group.bench_function("decode", |b| {
        b.iter_batched(
            || owned_body(&body),
            |body| {
                let page = spillway_source::Page::parse(black_box(body)).expect("parses");
                let docs: Vec<DocRef<'_>> = page.docs().collect();
                black_box(&docs);
                docs.len()
            },
            BatchSize::LargeInput,
        )
    });
    for (name, format, compression) in [
        ("decode_ndjson", Format::Ndjson, Compression::None),
        ("decode_ndjson_zstd", Format::Ndjson, Compression::Zstd),
        ("decode_parquet", Format::Parquet, Compression::None),
        ("decode_parquet_zstd", Format::Parquet, Compression::Zstd),
    ] {
        let mut enc = encoder_for(&output(format, compression), &schema).expect("an encoder");
        group.bench_function(name, |b| {
            b.iter_batched(
                || owned_body(&body),
                |body| encode_page(body, enc.as_mut()),
                BatchSize::LargeInput,
            )
        });
        black_box(enc.finish().expect("the file ends"));
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hot_path
}
criterion_main!(benches);
