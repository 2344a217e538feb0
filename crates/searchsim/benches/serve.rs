//! Serving benchmark: loads generated documents, then pages through them with PIT +
//! `search_after` (1000 hits per page) over real HTTP from one client task, printing docs/s,
//! MB/s and pages/s. Run with `cargo bench -p searchsim --bench serve` (env `SEARCHSIM_BENCH_DOCS`
//! overrides the default 200,000 documents).

use std::time::Instant;

use searchsim::datagen::{DataSpec, load};
use searchsim::{Config, SearchSim};
use serde_json::{Value, json};

struct Row {
    name: &'static str,
    docs: u64,
    bytes: u64,
    pages: u64,
    secs: f64,
}

async fn page_through(
    c: &reqwest::Client,
    url: &str,
    pit: &str,
    sort: Value,
    slice: Option<(u32, u32)>,
) -> (u64, u64, u64) {
    let (mut docs, mut bytes, mut pages) = (0u64, 0u64, 0u64);
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"pit": {"id": pit, "keep_alive": "5m"}, "size": 1000, "sort": sort, "track_total_hits": false});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        if let Some((id, max)) = slice {
            body["slice"] = json!({"id": id, "max": max});
        }
        let resp = c
            .post(format!("{url}/_search"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("search");
        assert_eq!(resp.status().as_u16(), 200);
        let raw = resp.bytes().await.expect("body");
        bytes += raw.len() as u64;
        pages += 1;
        // Only the last hit's `sort` is needed to continue: find it without parsing the page,
        // so the numbers measure the server rather than this client's JSON parser.
        let n = memchr::memmem::find_iter(&raw, b"{\"_index\":").count() as u64;
        if n == 0 {
            break;
        }
        docs += n;
        let at = memchr::memmem::rfind(&raw, b"\"sort\":[").expect("sort values") + 7;
        let len = raw[at..]
            .iter()
            .position(|b| *b == b']')
            .expect("end of sort")
            + 1;
        after = Some(serde_json::from_slice(&raw[at..at + len]).expect("sort json"));
    }
    (docs, bytes, pages)
}

fn main() {
    let n: u64 = std::env::var("SEARCHSIM_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = SearchSim::start(Config::opensearch_3().with_refresh_interval(None))
            .await
            .expect("start");
        let spec = DataSpec {
            docs: n,
            days: 4,
            shards: 3,
            ..DataSpec::default()
        };
        let t = Instant::now();
        let summary = load(sim.cluster(), &spec).expect("load");
        let load_secs = t.elapsed().as_secs_f64();
        println!(
            "loaded {} docs ({:.1} MB) into {} indices in {:.2}s ({:.0} docs/s)",
            summary.docs,
            summary.bytes as f64 / 1e6,
            summary.indices.len(),
            load_secs,
            summary.docs as f64 / load_secs
        );
        let c = reqwest::Client::new();
        let url = sim.url();
        let mut rows = Vec::new();
        let scenarios: [(&'static str, Value, Option<u32>); 3] = [
            ("pit sort _shard_doc", json!(["_shard_doc"]), None),
            (
                "pit sort @timestamp,_shard_doc",
                json!([{"@timestamp": "asc"}, "_shard_doc"]),
                None,
            ),
            ("pit 4 slices, _shard_doc", json!(["_shard_doc"]), Some(4)),
        ];
        for (name, sort, slices) in scenarios {
            let pit: Value = c
                .post(format!("{url}/logs-*/_search/point_in_time?keep_alive=5m"))
                .send()
                .await
                .expect("pit")
                .json()
                .await
                .expect("pit json");
            let pit_id = pit["pit_id"].as_str().expect("pit id").to_string();
            let t = Instant::now();
            let (mut docs, mut bytes, mut pages) = (0, 0, 0);
            match slices {
                None => {
                    let r = page_through(&c, &url, &pit_id, sort, None).await;
                    (docs, bytes, pages) = r;
                }
                Some(max) => {
                    for id in 0..max {
                        let r =
                            page_through(&c, &url, &pit_id, sort.clone(), Some((id, max))).await;
                        docs += r.0;
                        bytes += r.1;
                        pages += r.2;
                    }
                }
            }
            assert_eq!(docs, summary.docs, "{name}: every document exactly once");
            rows.push(Row {
                name,
                docs,
                bytes,
                pages,
                secs: t.elapsed().as_secs_f64(),
            });
        }
        println!();
        println!(
            "{:<34} {:>10} {:>12} {:>10} {:>10} {:>9}",
            "scenario", "docs", "docs/s", "MB/s", "pages/s", "secs"
        );
        for r in rows {
            println!(
                "{:<34} {:>10} {:>12.0} {:>10.1} {:>10.1} {:>9.2}",
                r.name,
                r.docs,
                r.docs as f64 / r.secs,
                r.bytes as f64 / 1e6 / r.secs,
                r.pages as f64 / r.secs,
                r.secs
            );
        }
        sim.shutdown().await;
    });
}
