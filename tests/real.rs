//! spillway against the servers its users run: the export scenarios of the searchsim suites
//! (exactness in three formats, the edges of time ranges, resume after kill, Ctrl-C closing
//! the snapshot, bad input) and the page order's memory cost against real OpenSearch 2.19 and
//! 3.x nodes and a real Elasticsearch 8 node, started by `scripts/services/opensearch.sh` and
//! `scripts/services/elasticsearch.sh`. Every test module is one server; the tests of one server
//! run one at a time (nextest group per server), so node-wide counters such as open search
//! contexts belong to the test that reads them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use searchsim::datagen::DataSpec;
use serde_json::{Value, json};
use spillway_e2e::cli::*;
use spillway_e2e::real::{RealCluster, Server};
use spillway_e2e::scenarios::*;
use spillway_e2e::*;

/// The suite, once per server.
macro_rules! real_server_suite {
    ($($module:ident => $server:expr;)*) => {$(
        mod $module {
            use super::*;
            const SERVER: Server = $server;
            const NAME: &str = stringify!($module);

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn exactness_parquet_s3_ndjson_csv() {
                exactness(SERVER, NAME).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn time_range_edges_are_half_open_at_every_shard_boundary() {
                time_range_edges(SERVER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn killed_run_resumes_from_finished_shards() {
                killed_run_resumes(SERVER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ctrl_c_stops_cleanly_and_closes_the_snapshot() {
                ctrl_c_closes_the_snapshot(SERVER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn default_page_order_needs_no_id_fielddata() {
                default_order_needs_no_id_fielddata(SERVER).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_input_fails_with_one_clear_line() {
                bad_input(SERVER).await;
            }
        }
    )*};
}

real_server_suite! {
    opensearch_2_19 => Server::OpenSearch2;
    opensearch_3 => Server::OpenSearch3;
    elasticsearch_8 => Server::Elasticsearch;
}

/// 40,000 documents over 4 daily indices of 2 shards, one in 2,000 large (64–256 KiB).
async fn exactness(server: Server, name: &str) {
    let cluster = RealCluster::connect(server, "exact-").await;
    let spec = cluster.spec(DataSpec {
        docs: 40_000,
        days: 4,
        shards: 2,
        seed: 2025,
        large_every: 2_000,
        ..Default::default()
    });
    let loaded = cluster.load(&spec).await;
    assert_eq!(loaded.indices.len(), 4);
    let bucket = format!("real-{}", name.replace('_', "-"));
    exactness_in_three_formats(&cluster.url(), &spec, &bucket, "exact").await;
    cluster.delete_indices().await;
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// 2024-03-01T00:00:00Z.
const MARCH_1: i64 = 1_709_251_200_000;

/// Documents at every hour boundary of 2024-03-01 and one millisecond either side of it,
/// written in three date notations; one index maps the field as `date`, one as `date_nanos`
/// (with documents a nanosecond either side of midnight). Small shards make every hour its
/// own time window, so every boundary between two shards is crossed by documents on both
/// sides. The export must hold exactly the documents with `gte <= t < lt`.
async fn time_range_edges(server: Server) {
    let cluster = RealCluster::connect(server, "edges-").await;
    let mut want = Vec::new();
    let mut bulk = String::new();
    let mut n = 0;
    for (index, ty) in [("edges-millis", "date"), ("edges-nanos", "date_nanos")] {
        cluster
            .ok(
                "PUT",
                &format!("/{index}"),
                Some(json!({
                    "settings": {"number_of_shards": 2, "number_of_replicas": 0},
                    "mappings": {"properties": {"@timestamp": {"type": ty}, "n": {"type": "long"}}},
                })),
            )
            .await;
        let mut add = |ts: Value, inside: bool| {
            let id = format!("{index}-{n}");
            n += 1;
            bulk.push_str(&format!(
                "{}\n{}\n",
                json!({"index": {"_index": index, "_id": id}}),
                json!({"@timestamp": ts, "n": n})
            ));
            if inside {
                want.push(id);
            }
        };
        for h in 0..=24i64 {
            let edge = MARCH_1 + h * HOUR_MS;
            for (delta, notation) in [(-1i64, 0), (0, 1), (1, 2)] {
                let t = edge + delta;
                let ts = match notation {
                    // ISO in UTC with milliseconds,
                    0 => json!(iso(t, 0)),
                    // ISO with a +02:00 offset,
                    1 => json!(iso(t, 2)),
                    // epoch milliseconds as a number.
                    _ => json!(t),
                };
                add(ts, (MARCH_1..MARCH_1 + DAY_MS).contains(&t));
            }
        }
        if ty == "date_nanos" {
            add(json!("2024-02-29T23:59:59.999999999Z"), false);
            add(json!("2024-03-01T00:00:00.000000001Z"), true);
            add(json!("2024-03-01T23:59:59.999999999Z"), true);
            add(json!("2024-03-02T00:00:00.000000001Z"), false);
        }
    }
    let (status, v) = cluster
        .request_text("POST", "/_bulk?refresh=true", bulk)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["errors"], json!(false), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let range = "    gte: 2024-03-01T00:00:00Z\n    lt: 2024-03-02T00:00:00Z\n";
    let text = job_text("edges", &cluster.url(), "\"edges-*\"", range, &out, "").replace(
        "    targetDocsPerShard: 2000\n",
        "    targetDocsPerShard: 3\n    pageSize: 2\n",
    );
    let job = write_job(dir.path(), "edges", &text);
    let o = Command::new(bin("spillway"))
        .args(["run", "--workers", "4", "--no-progress"])
        .arg(&job)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = markers(&out);
    assert!(
        shards >= 24,
        "every hour is a shard of its own, so each boundary is crossed: {shards} shards"
    );
    let mut got = committed_ndjson_ids(&out);
    got.sort();
    want.sort();
    let missing: Vec<_> = want.iter().filter(|id| !got.contains(id)).collect();
    let extra: Vec<_> = got.iter().filter(|id| !want.contains(id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "missing {missing:?}, outside the range or twice {extra:?}"
    );
    cluster.delete_indices().await;
}

/// `t` (epoch ms) as ISO 8601 with a UTC offset of `hours`.
fn iso(t: i64, hours: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(hours * 3600).unwrap();
    chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn mid_run_spec(cluster: &RealCluster) -> DataSpec {
    cluster.spec(DataSpec {
        docs: 40_000,
        days: 3,
        shards: 3,
        seed: 99,
        large_every: 0,
        ..Default::default()
    })
}

const MARCH: &str = "    gte: 2024-03-01T00:00:00Z\n    lt: 2024-03-04T00:00:00Z\n";

/// A `spillway run` child of a 40,000-document job, throttled to 8 requests per second so
/// that it is mid-way once it has committed `shards` shards.
fn start_mid_run(
    cluster: &RealCluster,
    dir: &std::path::Path,
    name: &str,
    shards: usize,
) -> (std::path::PathBuf, std::path::PathBuf, std::process::Child) {
    let out = dir.join("out");
    let text = job_text(
        name,
        &cluster.url(),
        &format!("\"{}*\"", mid_run_spec(cluster).index_prefix),
        MARCH,
        &out,
        "    requestsPerSecond: 8\n",
    )
    .replace(
        "    targetDocsPerShard: 2000\n",
        "    targetDocsPerShard: 2000\n    pageSize: 1000\n",
    );
    let job = write_job(dir, name, &text);
    let mut child = Command::new(bin("spillway"))
        .args(["run", "--workers", "2", "--no-progress"])
        .arg(&job)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spillway starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while markers(&out) < shards {
        assert!(
            Instant::now() < deadline,
            "no shard finished within 2 minutes"
        );
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "the run ended before it was stopped: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (out, job, child)
}

async fn killed_run_resumes(server: Server) {
    let cluster = RealCluster::connect(server, "resume-").await;
    let spec = mid_run_spec(&cluster);
    cluster.load(&spec).await;
    let dir = tempfile::tempdir().unwrap();
    let (out, job, mut child) = start_mid_run(&cluster, dir.path(), "resume", 3);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let finished = markers(&out);
    assert!(files_named(&out, "_SUCCESS").is_empty());
    assert!(
        finished < 20,
        "the run was killed mid-way ({finished} of 20 shards)"
    );

    resume_and_check(&job, &out, finished, &spec);
    cluster.delete_indices().await;
}

async fn ctrl_c_closes_the_snapshot(server: Server) {
    let cluster = RealCluster::connect(server, "interrupt-").await;
    let spec = mid_run_spec(&cluster);
    cluster.load(&spec).await;
    // Contexts of other work on this node (an earlier test's killed run holds its PIT until
    // keepAlive) are the baseline; this run's are counted above it.
    let before = cluster
        .open_contexts_settled(0, Duration::from_secs(15))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (out, _job, child) = start_mid_run(&cluster, dir.path(), "interrupt", 1);
    let during = cluster.open_contexts().await;
    assert!(
        during >= before + 9,
        "the run's snapshot holds a context on each of the 9 shards: {during} open, {before} before the run; {}",
        cluster.open_pits().await
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "an interrupted run exits non-zero: {}; stderr:\n{stderr}",
        o.status
    );
    assert!(
        stderr.contains("interrupted"),
        "stderr says the run was interrupted:\n{stderr}"
    );
    let success = files_named(&out, "_SUCCESS");
    assert!(
        success.is_empty(),
        "an interrupted run writes no _SUCCESS: {success:?}"
    );
    // The run closes its PIT before it exits; the node frees the contexts of searches that
    // were in flight a moment later. A leaked PIT would hold them for keepAlive (10m).
    let after = cluster
        .open_contexts_settled(before, Duration::from_secs(20))
        .await;
    assert!(
        after <= before,
        "the snapshot is closed on Ctrl-C: {after} contexts open 20 s after exit, {before} before the run; {}; stderr:\n{stderr}",
        cluster.open_pits().await
    );
    let leftovers: Vec<_> = files_under(&out)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&out)
                .unwrap()
                .to_string_lossy()
                .contains(".tmp")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files were left behind: {leftovers:?}"
    );
    cluster.delete_indices().await;
}

/// The default page order loads no `_id` fielddata and works where `_id` fielddata is
/// disabled (`indices.id_field_data.enabled: false`); on OpenSearch 2.19, an explicit
/// `tiebreakerField: _id` is measured beside it and does load `_id` fielddata.
async fn default_order_needs_no_id_fielddata(server: Server) {
    let cluster = RealCluster::connect(server, "fielddata-").await;
    let spec = cluster.spec(DataSpec {
        docs: 20_000,
        days: 2,
        shards: 3,
        seed: 31,
        large_every: 0,
        ..Default::default()
    });
    cluster.load(&spec).await;
    // `whole`: no time range, so each index's shards are cut further by `_id` hash slices.
    let export = |name: &'static str, tiebreaker: Option<&'static str>, whole: bool| {
        let url = cluster.url();
        let spec = spec.clone();
        async move {
            let out = tempfile::tempdir().unwrap();
            let mut j = job(
                name,
                &url,
                &spec,
                "  sharding:\n    targetDocsPerShard: 3000\n    pageSize: 1000\n",
                &volume_output(out.path()),
            );
            j.spec.source.tiebreaker_field = tiebreaker.map(str::to_string);
            if whole {
                j.spec.time_range = None;
            }
            let (report, _) = run(&j, spillway_engine::LocalSecrets::default(), 4).await;
            report.map(|r| (out, r.run_id))
        }
    };
    let check = |name: &str, result: Result<(tempfile::TempDir, String), _>| {
        let spec = spec.clone();
        let name = name.to_string();
        async move {
            let (out, run_id) = result.unwrap_or_else(|e: spillway_engine::EngineError| {
                panic!("{name}: the export failed: {e}")
            });
            assert_exact(
                &spec,
                exported_ids(out.path(), &format!("{name}/{run_id}")).await,
            );
        }
    };
    cluster
        .ok("POST", "/_cache/clear?fielddata=true", None)
        .await;
    let before = cluster.id_fielddata_bytes().await;
    check("fd-default", export("fd-default", None, false).await).await;
    let after_default = cluster.id_fielddata_bytes().await;
    assert_eq!(
        after_default,
        before,
        "the default page order loaded {} bytes of `_id` fielddata",
        after_default - before
    );

    let set = |enabled: Value| json!({"persistent": {"indices.id_field_data.enabled": enabled}});
    cluster
        .ok("PUT", "/_cluster/settings", Some(set(json!(false))))
        .await;
    let disabled = export("fd-disabled", None, true).await;
    // Reset before asserting: a failure must not leave the node refusing `_id` sorts.
    cluster
        .ok("PUT", "/_cluster/settings", Some(set(Value::Null)))
        .await;
    if server == Server::OpenSearch2
        && let Ok((out, run_id)) = &disabled
    {
        // Two daily indices of ~10,000 documents in 3 shards at 3,000 a shard: each index
        // shard is read in 2 parts (slice max 6).
        let plan: spillway_api::Plan = serde_json::from_slice(
            &std::fs::read(
                out.path()
                    .join(format!("fd-disabled/{run_id}"))
                    .join(spillway_api::layout::PLAN),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            plan.shards
                .iter()
                .all(|s| s.index.is_some() && s.slice.is_some_and(|x| x.max == 6)),
            "every shard is half of one index shard: {:?}",
            plan.shards
        );
    }
    check("fd-disabled", disabled).await;

    if server == Server::OpenSearch2 {
        check("fd-id", export("fd-id", Some("_id"), false).await).await;
        let after_id = cluster.id_fielddata_bytes().await;
        eprintln!(
            "`_id` fielddata on {server:?} for {} documents: {before} B before, {after_default} B after the default order, {after_id} B after tiebreakerField: _id",
            spec.docs
        );
        assert!(
            after_id > after_default,
            "sorting on `_id` is served from fielddata on OpenSearch 2.19 ({after_id} B), which is why it is not the default"
        );
    }
    cluster
        .ok("POST", "/_cache/clear?fielddata=true", None)
        .await;
    cluster.delete_indices().await;
}

async fn bad_input(server: Server) {
    let cluster = RealCluster::connect(server, "badinput-").await;
    let spec = cluster.spec(DataSpec {
        docs: 2_000,
        days: 3,
        large_every: 0,
        ..Default::default()
    });
    cluster.load(&spec).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = cluster.url();
    let indices = format!("\"{}*\"", spec.index_prefix);

    // A missing index: the server's own error, naming the index.
    let line = fails(
        &write_job(
            dir.path(),
            "missing",
            &job_text(
                "missing",
                &url,
                "\"badinput-no-such-index\"",
                MARCH,
                &out,
                "",
            ),
        ),
        &out,
        None,
    );
    assert!(line.contains("badinput-no-such-index"), "{line}");

    // A query the server cannot parse: its reason reaches the user.
    let line = fails(
        &write_job(
            dir.path(),
            "badquery",
            &job_text(
                "badquery",
                &url,
                &indices,
                MARCH,
                &out,
                "    query: {no_such_query: {field: x}}\n",
            ),
        ),
        &out,
        None,
    );
    assert!(line.contains("no_such_query"), "{line}");

    // A time field that is not a date in the mapping.
    let text = job_text("notadate", &url, &indices, MARCH, &out, "")
        .replace("field: \"@timestamp\"", "field: \"service\"");
    let line = fails(&write_job(dir.path(), "notadate", &text), &out, None);
    assert!(line.contains("service"), "{line}");

    // The same job with good input works, so the failures above were the input's.
    let ok = Command::new(bin("spillway"))
        .args(["run", "--no-progress"])
        .arg(write_job(
            dir.path(),
            "good",
            &job_text("good", &url, &indices, MARCH, &out, ""),
        ))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(files_named(&out, "_SUCCESS").len(), 1);
    assert_eq!(committed_ndjson_ids(&out).len(), 2_000);
    cluster.delete_indices().await;
}
