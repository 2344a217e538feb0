//! The client against the in-repo cluster simulator: snapshots, shard reading through
//! (window × slice) shards, retries under injected faults, PIT rotation and loss, errors.

use std::collections::HashMap;
use std::time::Duration;

use searchsim::datagen::{self, DataSpec};
use searchsim::{Config, Faults, RunningSim, SearchSim};
use serde_json::{Value, json};
use spillway_source::{
    Client, Flavor, RetryPolicy, RetryReason, ShardRequest, SliceRef, Snapshot, SnapshotKind,
    SourceConfig, SourceError, Target, TimeWindow,
};

const DAY_MS: i64 = 86_400_000;
const TIEBREAKER: &str = "event.id";

fn spec() -> DataSpec {
    DataSpec {
        docs: 3000,
        days: 3,
        shards: 3,
        large_every: 0,
        ..DataSpec::default()
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 15,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
    }
}

async fn start(config: Config, spec: &DataSpec) -> RunningSim {
    let sim = SearchSim::start(config.with_refresh_interval(None))
        .await
        .expect("searchsim starts");
    datagen::load(sim.cluster(), spec).expect("data loads");
    sim
}

async fn connect(url: &str) -> Client {
    let mut c = SourceConfig::new(url);
    c.retry = fast_retry();
    c.request_timeout = Duration::from_secs(20);
    Client::connect(c).await.expect("connects")
}

fn day_windows(spec: &DataSpec) -> Vec<TimeWindow> {
    let start = spec
        .start
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    (0..i64::from(spec.days))
        .map(|d| TimeWindow {
            gte_ms: start + d * DAY_MS,
            lt_ms: start + (d + 1) * DAY_MS,
        })
        .collect()
}

fn shard(
    target: &Target,
    window: Option<TimeWindow>,
    slice: Option<SliceRef>,
    page_size: u32,
) -> ShardRequest {
    ShardRequest {
        target: target.clone(),
        query: json!({"match_all": {}}),
        time_field: window.map(|_| "@timestamp".to_string()),
        window,
        slice,
        page_size,
        source_includes: vec![],
        source_excludes: vec![],
        // The generator's unique keyword; searchsim cannot sort on `_id` (real OpenSearch 2.x
        // can, through `_id` fielddata).
        tiebreaker_field: Some(TIEBREAKER.to_string()),
        index: None,
    }
}

/// Everything read: id → (index, source, times seen), and the PIT ids the readers ended on.
#[derive(Default)]
struct Collected {
    docs: HashMap<String, (String, String, usize)>,
    pages: usize,
    last_ids: Vec<String>,
}

async fn read_shards(
    client: &Client,
    target: &Target,
    windows: &[Option<TimeWindow>],
    slices: u32,
    page_size: u32,
) -> Result<Collected, SourceError> {
    let mut out = Collected::default();
    for w in windows {
        for s in 0..slices {
            let slice = (slices > 1).then_some(SliceRef { id: s, max: slices });
            let mut r = client.read_shard(shard(target, *w, slice, page_size));
            while let Some(page) = r.next_page().await? {
                out.pages += 1;
                assert!(page.len() <= page_size as usize);
                for d in page.docs() {
                    let e = out
                        .docs
                        .entry(d.id.to_string())
                        .or_insert_with(|| (d.index.to_string(), d.source.to_string(), 0));
                    e.2 += 1;
                }
            }
            assert!(r.is_done());
            assert_eq!(r.expected(), Some(r.exported()));
            if let Some(id) = r.snapshot_id() {
                out.last_ids.push(id.to_string());
            }
        }
    }
    Ok(out)
}

/// Every generated document exactly once, with its index and byte-exact source.
fn assert_exact(spec: &DataSpec, got: &Collected) {
    let expected: Vec<_> = datagen::docs(spec).collect();
    assert_eq!(got.docs.len(), expected.len(), "distinct documents read");
    for d in &expected {
        let (index, source, seen) = got
            .docs
            .get(&d.id)
            .unwrap_or_else(|| panic!("document {} was not read", d.id));
        assert_eq!(*seen, 1, "document {} read {seen} times", d.id);
        assert_eq!(index, &d.index);
        assert_eq!(source.as_bytes(), &d.source[..], "source of {}", d.id);
    }
}

async fn full_read(config: Config, expect_sort: Value, expect_flavor: Flavor) {
    let spec = spec();
    let sim = start(config, &spec).await;
    let client = connect(&sim.url()).await;
    assert_eq!(client.info().flavor, expect_flavor);
    assert!(client.info().capabilities.pit);

    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    assert_eq!(snap.kind, SnapshotKind::Pit);
    assert!(!snap.id.is_empty());
    let target = Target::Snapshot(snap.clone());

    // Writes after the snapshot are invisible to it.
    sim.cluster()
        .index_doc(
            "logs-2024.03.02",
            Some("late"),
            br#"{"@timestamp":"2024-03-02T12:00:00.000Z"}"#.to_vec(),
        )
        .unwrap();
    sim.cluster().refresh_all();

    let match_all = json!({"match_all": {}});
    assert_eq!(client.count(&target, &match_all).await.unwrap(), spec.docs);
    assert_eq!(
        client
            .count(&Target::Indices(vec!["logs-*".into()]), &match_all)
            .await
            .unwrap(),
        spec.docs + 1,
        "the live indices see the late write"
    );

    let r = client.read_shard(shard(&target, None, None, 10));
    assert_eq!(r.sort(), &expect_sort);
    let mut default_tiebreaker = shard(&target, None, None, 10);
    default_tiebreaker.tiebreaker_field = None;
    let r = client.read_shard(default_tiebreaker);
    if client.info().capabilities.shard_doc {
        assert_eq!(r.sort(), &expect_sort);
    } else {
        assert_eq!(r.sort(), &json!([{"_id": "asc"}]));
    }

    let windows: Vec<_> = day_windows(&spec).into_iter().map(Some).collect();
    let got = read_shards(&client, &target, &windows, 2, 100)
        .await
        .unwrap();
    assert_exact(&spec, &got);
    assert!(got.pages >= 30, "pages: {}", got.pages);

    // The same through slices only.
    let got = read_shards(&client, &target, &[None], 4, 100)
        .await
        .unwrap();
    assert_exact(&spec, &got);

    client.keep_alive(&snap).await.unwrap();
    client.close_snapshot(&snap).await.unwrap();
    client.close_snapshot(&snap).await.unwrap();
    assert_eq!(sim.cluster().open_pits(), 0);
    assert!(client.stats().requests() > 60);
    assert!(client.stats().bytes_received() > 100_000);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_2_reads_every_document_once_with_a_tiebreaker_field() {
    full_read(
        Config::opensearch(),
        json!([{"event.id": "asc"}]),
        Flavor::Opensearch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_3_3_reads_every_document_once_with_shard_doc() {
    full_read(
        Config::opensearch_3(),
        json!([{"_index": "asc"}, {"_shard_doc": "asc"}]),
        Flavor::Opensearch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_8_reads_every_document_once_with_shard_doc() {
    full_read(
        Config::elasticsearch(),
        json!([{"_shard_doc": "asc"}]),
        Flavor::Elasticsearch,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_pit_rotation_is_followed() {
    let spec = spec();
    let faults = Faults {
        pit_id_rotation: 0.5,
        seed: 3,
        ..Faults::default()
    };
    let sim = start(Config::elasticsearch().with_faults(faults), &spec).await;
    let client = connect(&sim.url()).await;
    let mut snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let target = Target::Snapshot(snap.clone());
    let windows: Vec<_> = day_windows(&spec).into_iter().map(Some).collect();
    let got = read_shards(&client, &target, &windows, 2, 100)
        .await
        .unwrap();
    assert_exact(&spec, &got);
    assert!(
        got.last_ids.iter().any(|id| *id != snap.id),
        "the simulator rotated the PIT id and the readers adopted it"
    );
    // The caller can adopt a rotated id; renew follows rotation as well.
    snap.id = got.last_ids.last().unwrap().clone();
    for _ in 0..10 {
        client.renew(&mut snap).await.unwrap();
    }
    client.keep_alive(&snap).await.unwrap();
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_unavailability_are_retried_and_the_result_stays_exact() {
    let spec = spec();
    let faults = Faults {
        reject_rate: 0.2,
        unavailable_rate: 0.05,
        drop_connection_rate: 0.03,
        latency_ms: 1,
        seed: 1,
        ..Faults::default()
    };
    let sim = start(Config::opensearch().with_faults(faults), &spec).await;
    let client = connect(&sim.url()).await;
    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let target = Target::Snapshot(snap.clone());
    let windows: Vec<_> = day_windows(&spec).into_iter().map(Some).collect();
    let got = read_shards(&client, &target, &windows, 2, 100)
        .await
        .unwrap();
    assert_exact(&spec, &got);

    let stats = client.stats().snapshot();
    let fired = &sim.cluster().stats()["faults"];
    assert!(stats.retries_rejected > 0, "{stats:?}");
    assert!(stats.retries_unavailable_5xx > 0, "{stats:?}");
    assert!(stats.retries_connection > 0, "{stats:?}");
    assert_eq!(
        Some(stats.retries_rejected),
        fired["reject"].as_u64(),
        "every injected 429 was retried once: {fired}"
    );
    assert_eq!(
        Some(stats.retries_unavailable_5xx),
        fired["unavailable"].as_u64(),
        "{fired}"
    );
    assert_eq!(
        client.stats().retries(RetryReason::Rejected),
        stats.retries_rejected
    );
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_short_pages_are_truncation_and_a_rerun_recovers() {
    let spec = spec();
    // The simulator leaves hits out of the middle of some pages; the cursor moves past
    // them, so only the hits.total check can notice.
    let faults = Faults {
        short_page_rate: 0.2,
        seed: 9,
        ..Faults::default()
    };
    let sim = start(Config::opensearch().with_faults(faults), &spec).await;
    let client = connect(&sim.url()).await;
    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let target = Target::Snapshot(snap.clone());
    let mut shards = Vec::new();
    for w in day_windows(&spec) {
        for id in 0..2 {
            shards.push(shard(&target, Some(w), Some(SliceRef { id, max: 2 }), 100));
        }
    }
    let mut done: HashMap<String, usize> = HashMap::new();
    let mut rerun = Vec::new();
    for req in &shards {
        let mut r = client.read_shard(req.clone());
        let mut ids = Vec::new();
        let outcome = loop {
            match r.next_page().await {
                Ok(Some(p)) => ids.extend(p.docs().map(|d| d.id.to_string())),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(()) => {
                assert_eq!(r.expected(), Some(ids.len() as u64));
                for id in ids {
                    *done.entry(id).or_default() += 1;
                }
            }
            Err(SourceError::Truncated { expected, got }) => {
                assert!(got < expected, "{got} < {expected}");
                assert_eq!(r.expected(), Some(expected));
                rerun.push(req.clone());
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let fired = sim.cluster().stats()["faults"]["short_page"]
        .as_u64()
        .unwrap_or(0);
    assert!(fired > 0, "short pages were injected");
    assert!(!rerun.is_empty(), "at least one shard noticed missing hits");

    // The caller re-runs the truncated shards; without the fault they complete exactly.
    sim.cluster().set_faults(Faults::default()).unwrap();
    for req in rerun {
        let mut r = client.read_shard(req);
        while let Some(p) = r.next_page().await.unwrap() {
            for d in p.docs() {
                *done.entry(d.id.to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(done.len() as u64, spec.docs);
    assert!(done.values().all(|n| *n == 1));
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_scroll_page_is_reported_as_truncated() {
    let spec = spec();
    // Dropped connections on scroll continuations: the server has already moved the
    // cursor, so the retried request returns the next page and one page is lost.
    let faults = Faults {
        drop_connection_rate: 0.3,
        paths: vec!["_search/scroll".into()],
        seed: 5,
        ..Faults::default()
    };
    let sim = start(Config::opensearch().with_faults(faults), &spec).await;
    let client = connect(&sim.url()).await;
    let target = Target::Indices(vec!["logs-*".into()]);
    let mut r = client.read_shard(shard(&target, None, None, 100));
    assert_eq!(
        r.sort(),
        &json!(["_doc"]),
        "live indices are read through a scroll"
    );
    let err = loop {
        match r.next_page().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("paging ended without noticing the lost page"),
            Err(e) => break e,
        }
    };
    match &err {
        SourceError::Truncated { expected, got } => {
            assert_eq!(*expected, spec.docs);
            assert!(*got < spec.docs, "{got}");
        }
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(client.stats().retries(RetryReason::Connection) > 0);
    assert!(
        r.next_page().await.unwrap().is_none(),
        "a failed reader stays done"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_pit_is_snapshot_lost() {
    let spec = spec();
    let sim = start(Config::opensearch(), &spec).await;
    let client = connect(&sim.url()).await;
    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let target = Target::Snapshot(snap.clone());
    let mut r = client.read_shard(shard(&target, None, None, 100));
    assert!(r.next_page().await.unwrap().is_some());

    // Expire through the simulator's HTTP admin endpoint (a plain reqwest client needs the
    // process-wide rustls provider; ours brings its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("{}/_searchsim/pits/_expire", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let err = r.next_page().await.unwrap_err();
    assert!(err.is_snapshot_lost(), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("onSnapshotLoss"), "{err}");
    let err = client.keep_alive(&snap).await.unwrap_err();
    assert!(matches!(err, SourceError::SnapshotLost { .. }), "{err}");
    let err = client
        .count(&target, &json!({"match_all": {}}))
        .await
        .unwrap_err();
    assert!(err.is_snapshot_lost(), "{err}");
    // Closing a lost snapshot is fine.
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_index_is_named() {
    let spec = DataSpec { docs: 10, ..spec() };
    for config in [Config::opensearch(), Config::elasticsearch()] {
        let sim = start(config, &spec).await;
        let client = connect(&sim.url()).await;
        let err = client
            .open_snapshot(&["logs-2024.03.01".into(), "no-such-index".into()], "1m")
            .await
            .unwrap_err();
        match &err {
            SourceError::IndexNotFound { index, .. } => assert_eq!(index, "no-such-index"),
            other => panic!("expected IndexNotFound, got {other}"),
        }
        assert!(err.to_string().contains("[no-such-index]"), "{err}");
        let err = client
            .count(&Target::Indices(vec!["nope".into()]), &json!({}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("[nope]"), "{err}");
        let err = client.mapping(&["nope".into()]).await.unwrap_err();
        assert!(err.to_string().contains("[nope]"), "{err}");
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_url_says_cannot_reach() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut c = SourceConfig::new(format!("http://elastic:pw-secret@127.0.0.1:{port}"));
    c.retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    let err = Client::connect(c).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot reach http://127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!msg.contains("pw-secret"), "{msg}");
    assert!(!format!("{err:?}").contains("pw-secret"));
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_histogram_and_mapping() {
    let spec = spec();
    let sim = start(Config::opensearch(), &spec).await;
    let client = connect(&sim.url()).await;
    let indices = vec!["logs-*".to_string()];
    let mapping = client.mapping(&indices).await.unwrap();
    assert_eq!(mapping["@timestamp"]["type"], "date", "{mapping}");

    let snap = client.open_snapshot(&indices, "5m").await.unwrap();
    let target = Target::Snapshot(snap.clone());
    let windows = day_windows(&spec);
    let all = TimeWindow {
        gte_ms: windows[0].gte_ms,
        lt_ms: windows[2].lt_ms,
    };
    let hours = client
        .date_histogram(
            &target,
            &json!({"match_all": {}}),
            "@timestamp",
            all,
            3_600_000,
        )
        .await
        .unwrap();
    assert!(hours.len() > 24, "{}", hours.len());
    assert_eq!(hours.iter().map(|(_, n)| n).sum::<u64>(), spec.docs);
    for w in hours.windows(2) {
        assert!(w[0].0 < w[1].0);
    }
    for (start, _) in &hours {
        assert!(all.contains(*start));
        assert_eq!((start - all.gte_ms) % 3_600_000, 0);
    }
    // A window that does not start on the hour: buckets stay aligned to the epoch and
    // count only documents inside the window.
    let odd = TimeWindow {
        gte_ms: all.gte_ms + 17 * 60_000,
        lt_ms: all.lt_ms - 3 * 60_000,
    };
    let shifted = client
        .date_histogram(
            &target,
            &json!({"match_all": {}}),
            "@timestamp",
            odd,
            3_600_000,
        )
        .await
        .unwrap();
    for (start, _) in &shifted {
        assert_eq!(start.rem_euclid(3_600_000), 0, "{start}");
        assert!(
            *start > odd.gte_ms - 3_600_000 && *start < odd.lt_ms,
            "{start}"
        );
    }
    assert!(
        shifted[0].0 < odd.gte_ms,
        "the first bucket starts before the window"
    );
    let in_odd = client
        .count(
            &target,
            &json!({"range": {"@timestamp": {"gte": odd.gte_ms, "lt": odd.lt_ms, "format": "epoch_millis"}}}),
        )
        .await
        .unwrap();
    assert_eq!(shifted.iter().map(|(_, n)| n).sum::<u64>(), in_odd);
    assert!(in_odd < spec.docs);

    // Per day: histogram buckets and counts agree with what reading finds.
    let days = client
        .date_histogram(
            &target,
            &json!({"match_all": {}}),
            "@timestamp",
            all,
            DAY_MS,
        )
        .await
        .unwrap();
    assert_eq!(days.len(), 3);
    for (i, (start, n)) in days.iter().enumerate() {
        assert_eq!(*start, windows[i].gte_ms);
        let mut r = client.read_shard(shard(&target, Some(windows[i]), None, 1000));
        while r.next_page().await.unwrap().is_some() {}
        assert_eq!(r.exported(), *n);
    }
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_filtering_is_passed_through() {
    let spec = DataSpec {
        docs: 200,
        ..spec()
    };
    let sim = start(Config::opensearch(), &spec).await;
    let client = connect(&sim.url()).await;
    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let mut req = shard(&Target::Snapshot(snap.clone()), None, None, 50);
    req.source_includes = vec!["@timestamp".into(), "event.*".into()];
    req.source_excludes = vec!["event.id".into()];
    let mut r = client.read_shard(req);
    let mut n = 0;
    while let Some(p) = r.next_page().await.unwrap() {
        for d in p.docs() {
            let v: Value = serde_json::from_str(d.source).unwrap();
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert!(
                keys.iter().all(|k| *k == "@timestamp" || *k == "event"),
                "{keys:?}"
            );
            assert!(v["event"].get("id").is_none(), "{v}");
            n += 1;
        }
    }
    assert_eq!(n, 200);
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_1_falls_back_to_sliced_scroll() {
    let spec = spec();
    let sim = start(Config::opensearch().with_version("1.3.19"), &spec).await;
    let client = connect(&sim.url()).await;
    assert!(!client.info().capabilities.pit);
    let snap = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    assert_eq!(snap.kind, SnapshotKind::None);
    let target = Target::Snapshot(snap.clone());
    let r = client.read_shard(shard(&target, None, None, 10));
    assert_eq!(r.sort(), &json!(["_doc"]));
    drop(r);
    let windows: Vec<_> = day_windows(&spec).into_iter().map(Some).collect();
    let got = read_shards(&client, &target, &windows, 2, 100)
        .await
        .unwrap();
    assert_exact(&spec, &got);
    assert_eq!(
        sim.cluster().stats()["open_scrolls"],
        json!(0),
        "every finished scroll was cleared"
    );
    assert_eq!(
        client
            .count(&target, &json!({"match_all": {}}))
            .await
            .unwrap(),
        spec.docs
    );

    // A reader dropped mid-way clears its scroll in the background.
    let mut r = client.read_shard(shard(&target, None, Some(SliceRef { id: 0, max: 2 }), 10));
    assert!(r.next_page().await.unwrap().is_some());
    assert_eq!(sim.cluster().stats()["open_scrolls"], json!(1));
    drop(r);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.cluster().stats()["open_scrolls"] != json!(0) {
        assert!(tokio::time::Instant::now() < deadline, "scroll not cleared");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_keeps_working_after_client_clone() {
    // Readers of one client share its counters: the clone is the same client.
    let spec = DataSpec {
        docs: 300,
        ..spec()
    };
    let sim = start(Config::opensearch(), &spec).await;
    let client = connect(&sim.url()).await;
    let other = client.clone();
    let snap: Snapshot = client
        .open_snapshot(&["logs-*".to_string()], "5m")
        .await
        .unwrap();
    let before = client.stats().requests();
    let n = other
        .count(&Target::Snapshot(snap.clone()), &json!({"match_all": {}}))
        .await
        .unwrap();
    assert_eq!(n, 300);
    assert_eq!(client.stats().requests(), before + 1);
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}

/// A tiebreaker field missing from a document gives a null sort value, which cannot be paged
/// from (real OpenSearch 2.19 and 3.9 answer such a `search_after` with HTTP 500): the reader
/// stops with an error naming the fix instead of sending it and retrying a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiebreaker_missing_from_a_document_is_a_clear_error() {
    let sim = SearchSim::start(Config::opensearch().with_refresh_interval(None))
        .await
        .expect("searchsim starts");
    let url = sim.url();
    let client = connect(&url).await;
    // A plain reqwest client needs a process-wide TLS crypto provider, even for HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{url}/gappy"))
        .json(&json!({"mappings": {"properties": {"k": {"type": "keyword"}}}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let mut bulk = String::new();
    for i in 0..6 {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"gappy\",\"_id\":\"d{i}\"}}}}\n"
        ));
        if i % 3 == 0 {
            bulk.push_str("{\"n\":1}\n");
        } else {
            bulk.push_str(&format!("{{\"k\":\"k{i}\"}}\n"));
        }
    }
    let r = http
        .post(format!("{url}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let snap = client.open_snapshot(&["gappy".into()], "1m").await.unwrap();
    let mut req = shard(&Target::Snapshot(snap.clone()), None, None, 5);
    req.tiebreaker_field = Some("k".into());
    let mut reader = client.read_shard(req);
    let err = loop {
        match reader.next_page().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the shard ended although a page ended on a null sort value"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SourceError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("tiebreakerField"), "{err}");
    client.close_snapshot(&snap).await.unwrap();
    sim.shutdown().await;
}
