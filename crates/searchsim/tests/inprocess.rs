//! An in-process simulator driven over HTTP by another thread with its own runtime (the way
//! a test drives it from a child process): concurrent PIT slice pages under a latency fault
//! each come back promptly, while the embedding runtime's own thread is blocked, and together
//! they return every document exactly once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults, SearchSim};
use serde_json::{Value, json};

const SLICES: u64 = 4;
const PAGE: u64 = 500;

/// Pages one slice of the PIT to the end; returns the ids seen and the slowest request.
async fn page_slice(
    client: &reqwest::Client,
    url: &str,
    pit: &str,
    slice: u64,
) -> (Vec<String>, Duration) {
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": PAGE,
            "pit": {"id": pit, "keep_alive": "1m"},
            "slice": {"id": slice, "max": SLICES},
            "sort": [{"_shard_doc": "asc"}],
            "track_total_hits": after.is_none(),
            "query": {"range": {"@timestamp": {"gte": "2024-03-01T00:00:00Z", "lt": "2024-03-04T00:00:00Z"}}},
        });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let t = Instant::now();
        let resp = client
            .post(format!("{url}/_search"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("search is sent");
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        slowest = slowest.max(t.elapsed());
        let hits = v["hits"]["hits"].as_array().expect("hits").clone();
        if hits.is_empty() {
            return (ids, slowest);
        }
        for h in &hits {
            ids.push(h["_id"].as_str().expect("_id").to_string());
        }
        after = Some(hits.last().expect("a hit")["sort"].clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pit_pages_from_another_runtime_are_prompt() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spec = DataSpec {
        docs: 40_000,
        days: 3,
        shards: 3,
        seed: 99,
        large_every: 0,
        ..Default::default()
    };
    let sim = SearchSim::start(Config::opensearch_3())
        .await
        .expect("start");
    let loaded = searchsim::datagen::load(sim.cluster(), &spec).expect("load");
    sim.cluster()
        .set_faults(Faults {
            latency_ms: 30,
            ..Default::default()
        })
        .expect("faults");
    let url = sim.url();
    let driver = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let opened: Value = client
                .post(format!("{url}/logs-*/_search/point_in_time?keep_alive=1m"))
                .send()
                .await
                .expect("open pit")
                .json()
                .await
                .expect("pit json");
            let pit = opened["pit_id"].as_str().expect("pit_id").to_string();
            let runs =
                futures::future::join_all((0..SLICES).map(|s| page_slice(&client, &url, &pit, s)))
                    .await;
            let closed = client
                .delete(format!("{url}/_search/point_in_time"))
                .header("content-type", "application/json")
                .body(json!({"pit_id": [pit]}).to_string())
                .send()
                .await
                .expect("close pit");
            assert_eq!(closed.status().as_u16(), 200);
            runs
        })
    });
    // Like a test waiting on a child process: this thread blocks until the driver is done.
    let runs = driver.join().expect("driver thread");
    let mut seen = HashSet::new();
    for (slice, (ids, slowest)) in runs.iter().enumerate() {
        assert!(
            slowest < &Duration::from_millis(1000),
            "slice {slice}: a page took {slowest:?} (latency fault is 30 ms)"
        );
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} returned twice");
        }
    }
    assert_eq!(seen.len() as u64, loaded.docs);
    assert_eq!(sim.cluster().open_pits(), 0);
    sim.shutdown().await;
}
