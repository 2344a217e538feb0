//! The distributed path across real processes: `spillway run --broker` coordinators and
//! `spillway worker` processes joined by a real RabbitMQ node, reading searchsim and writing to
//! SeaweedFS S3 or a local directory. Each test owns a RabbitMQ virtual host. The chaos test
//! also runs once against the real OpenSearch 3.x node of `scripts/services/opensearch.sh`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults};
use spillway_api::ShardMarker;
use spillway_e2e::procs::*;
use spillway_e2e::*;

fn docs_from_env(default: u64) -> u64 {
    std::env::var("SPILLWAY_E2E_DIST_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data(docs: u64, days: u32, seed: u64) -> DataSpec {
    DataSpec {
        docs,
        days,
        shards: 3,
        seed,
        large_every: 0,
        ..Default::default()
    }
}

/// An ExportJob manifest for `spec`'s data, with `extra` lines under `spec:` and `output` under
/// `spec.output:`.
fn job_yaml(name: &str, url: &str, spec: &DataSpec, extra: &str, output: &str) -> String {
    let end = spec.start + chrono::Days::new(u64::from(spec.days));
    format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\nspec:\n  source:\n    url: {url}\n    indices: [\"{prefix}*\"]\n  timeRange:\n    field: \"@timestamp\"\n    gte: {start}T00:00:00Z\n    lt: {end}T00:00:00Z\n{extra}  output:\n{output}",
        prefix = spec.index_prefix,
        start = spec.start,
    )
}

fn s3_output(bucket: &str) -> String {
    format!(
        "    format: parquet\n    compression: zstd\n    destination:\n      s3:\n        bucket: {bucket}\n        prefix: runs\n        endpoint: {}\n        forcePathStyle: true\n        secretRef: {{name: s3}}\n",
        s3_env().endpoint
    )
}

fn volume_output(dir: &Path) -> String {
    format!(
        "    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
        dir.display()
    )
}

/// A secrets directory holding the S3 test credentials as Secret `s3`.
fn secrets_dir(root: &Path) -> PathBuf {
    let dir = root.join("secrets");
    let s3 = s3_env();
    std::fs::create_dir_all(dir.join("s3")).unwrap();
    std::fs::write(dir.join("s3/accessKeyId"), &s3.access_key).unwrap();
    std::fs::write(dir.join("s3/secretAccessKey"), &s3.secret_key).unwrap();
    dir
}

fn write(root: &Path, name: &str, text: &str) -> PathBuf {
    let p = root.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn workers(n: usize, broker: &str, concurrency: u16, root: &Path) -> Vec<WorkerProc> {
    let secrets = root.join("secrets");
    (0..n)
        .map(|i| {
            WorkerProc::start(
                broker,
                concurrency,
                &secrets,
                root.join(format!("worker-{i}.log")),
            )
        })
        .collect()
}

fn worker_logs(ws: &[WorkerProc]) -> String {
    ws.iter()
        .enumerate()
        .map(|(i, w)| format!("--- worker {i} ---\n{}", tail(&w.log_text(), 30)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The run id `spillway run` printed (`output: <uri>/<job>/<run id>`).
fn run_dir_of(stdout: &str) -> String {
    let uri = stdout
        .lines()
        .find_map(|l| l.strip_prefix("output:"))
        .unwrap_or_else(|| panic!("no output line in {stdout}"))
        .trim();
    let mut parts = uri.rsplitn(3, '/');
    let run = parts.next().unwrap();
    let job = parts.next().unwrap();
    format!("runs/{job}/{run}")
}

/// Reads every Parquet part of an S3 run and checks the `_id` multiset equals the source.
async fn assert_exact_s3(
    storage: &spillway_sink::storage::s3::S3Storage,
    run_dir: &str,
    spec: &DataSpec,
) {
    let (manifest, files) = read_run(storage, run_dir).await;
    assert_eq!(manifest.documents, spec.docs);
    assert_eq!(manifest.expected_documents, spec.docs);
    let mut remaining: HashMap<String, String> = searchsim::datagen::docs(spec)
        .map(|d| (d.id, d.index))
        .collect();
    let mut seen = 0u64;
    for (_, body) in files {
        for row in parquet_rows(body) {
            let id = row["_id"].as_str().expect("_id column");
            let index = row["_index"].as_str().expect("_index column");
            match remaining.remove(id) {
                Some(expected_index) => assert_eq!(expected_index, index, "{id}"),
                None => panic!("{id} is exported twice or is not in the source"),
            }
            seen += 1;
        }
    }
    assert!(
        remaining.is_empty(),
        "{} documents are missing",
        remaining.len()
    );
    assert_eq!(seen, spec.docs);
    let orphans = storage
        .list_multipart_uploads(&format!("{run_dir}/"))
        .await
        .unwrap();
    assert!(
        orphans.is_empty(),
        "orphaned multipart uploads: {orphans:?}"
    );
}

/// Markers of a volume run, by shard id.
fn volume_markers(out: &Path) -> BTreeMap<String, ShardMarker> {
    files_under(out)
        .into_iter()
        .filter(|p| {
            p.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                == Some("shards")
        })
        .filter_map(|p| serde_json::from_slice::<ShardMarker>(&std::fs::read(&p).ok()?).ok())
        .map(|m| (m.shard_id.clone(), m))
        .collect()
}

/// Every NDJSON record of a volume run: `_id` → count.
fn volume_ids(out: &Path) -> HashMap<String, u32> {
    let mut ids = HashMap::new();
    for p in files_under(out) {
        if p.extension().and_then(|x| x.to_str()) == Some("ndjson") {
            let body = std::fs::read(&p).unwrap();
            for row in ndjson_rows(p.to_str().unwrap(), &body) {
                *ids.entry(row["_id"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    ids
}

fn assert_exact_ids(ids: &HashMap<String, u32>, spec: &DataSpec) {
    let mut missing = 0;
    for d in searchsim::datagen::docs(spec) {
        match ids.get(&d.id) {
            Some(1) => {}
            Some(n) => panic!("{} exported {n} times", d.id),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "documents missing");
    assert_eq!(ids.len() as u64, spec.docs, "no foreign ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_four_workers_export_two_million_documents_exactly() {
    let spec = data(docs_from_env(2_000_000), 30, 2048);
    let (sim, loaded) = sim_with(Config::opensearch_3(), &spec).await;
    assert_eq!(loaded.docs, spec.docs);
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let broker = broker_vhost("dist-exact");
    let storage = s3_bucket("dist-exact").await;
    let target = (spec.docs / 60).max(1000);
    let job = write(
        root.path(),
        "dist-exact",
        &job_yaml(
            "dist-exact",
            &sim.url(),
            &spec,
            &format!(
                "  sharding:\n    targetDocsPerShard: {target}\n  parallelism:\n    maxConcurrentShards: 8\n"
            ),
            &s3_output("dist-exact"),
        ),
    );
    let ws = workers(4, &broker, 2, root.path());
    let coord = spawn_coordinator(&broker, &job, &root.path().join("secrets"));
    let done = wait_finished(coord, Duration::from_secs(900), "the coordinator");
    assert!(
        done.success,
        "the export failed:\n{}\n{}",
        done.stderr,
        worker_logs(&ws)
    );
    // Every worker took part.
    for (i, w) in ws.iter().enumerate() {
        assert!(
            w.log_text().contains("shard committed"),
            "worker {i} exported nothing:\n{}",
            worker_logs(&ws)
        );
    }
    assert_exact_s3(storage.as_ref(), &run_dir_of(&done.stdout), &spec).await;
    drop(ws);
    sim.shutdown().await;
}

/// Until the coordinator ends (at most `limit_s` seconds): every 2.5 s, SIGKILL a worker
/// picked by a seeded generator and start it again, then run `after_kill`. Returns how the
/// coordinator ended and the number of kills.
fn kill_workers_until_done(
    coord: std::process::Child,
    limit_s: u64,
    ws: &mut [WorkerProc],
    mut seed: u64,
    mut after_kill: impl FnMut(),
) -> (Finished, usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait_finished(
            coord,
            Duration::from_secs(limit_s),
            "the coordinator",
        ));
    });
    let mut kills = 0;
    loop {
        if let Ok(done) = rx.recv_timeout(Duration::from_millis(2500)) {
            return (done, kills);
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (seed >> 33) as usize % ws.len();
        ws[i].restart();
        kills += 1;
        after_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_chaos_killed_workers_broker_restart_and_429s() {
    let spec = data(docs_from_env(2_000_000) / 5, 10, 77);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            reject_rate: 0.1,
            // Slow enough that the job outlives several kills and the broker restart.
            latency_ms: 80,
            seed: 11,
            paths: vec!["_search".into()],
            ..Default::default()
        })
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let broker = broker_vhost("dist-chaos");
    let storage = s3_bucket("dist-chaos").await;
    let job = write(
        root.path(),
        "dist-chaos",
        &job_yaml(
            "dist-chaos",
            &sim.url(),
            &spec,
            "  sharding:\n    targetDocsPerShard: 8000\n    pageSize: 200\n  retry:\n    maxAttempts: 20\n",
            &s3_output("dist-chaos"),
        ),
    );
    let mut ws = workers(4, &broker, 2, root.path());
    let coord = spawn_coordinator(&broker, &job, &root.path().join("secrets"));
    let started = Instant::now();
    let mut restarted_broker = false;
    let (done, kills) = kill_workers_until_done(coord, 900, &mut ws, 12345, || {
        if !restarted_broker && started.elapsed() > Duration::from_secs(6) {
            restart_broker();
            restarted_broker = true;
        }
    });
    assert!(
        done.success,
        "the export failed under chaos:\n{}\n{}",
        done.stderr,
        worker_logs(&ws)
    );
    assert!(
        kills >= 3,
        "the job ended before the chaos did much ({kills} kills)"
    );
    assert!(restarted_broker, "the broker was restarted mid-job");
    assert!(
        sim.cluster().stats()["faults"]["reject"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "429s were injected"
    );
    assert_exact_s3(storage.as_ref(), &run_dir_of(&done.stdout), &spec).await;
    // Dead letters, if any, were all forwarded to the coordinator.
    let (_, dead) = queue_depths(&broker).await;
    assert_eq!(dead, 0, "nothing is left in the dead-letter queue");
    drop(ws);
    sim.shutdown().await;
}

/// The chaos test against a real OpenSearch 3.x node: workers killed with SIGKILL and
/// restarted every 2.5 s while they read 150,000 documents throttled to 15 requests a second.
/// The node cannot inject 429s, and the broker is not restarted here (this test runs beside
/// other tests that use the broker; the searchsim chaos test above does both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_killed_workers_against_real_opensearch_3() {
    let cluster = spillway_e2e::real::RealCluster::connect(
        spillway_e2e::real::Server::OpenSearch3,
        "dist-chaos-real-",
    )
    .await;
    let spec = cluster.spec(data(150_000, 5, 78));
    cluster.load(&spec).await;
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let broker = broker_vhost("dist-chaos-real");
    let storage = s3_bucket("dist-chaos-real").await;
    let job = write(
        root.path(),
        "dist-chaos-real",
        &job_yaml(
            "dist-chaos-real",
            &cluster.url(),
            &spec,
            "  sharding:\n    targetDocsPerShard: 6000\n    pageSize: 500\n  retry:\n    maxAttempts: 20\n",
            &s3_output("dist-chaos-real"),
        )
        .replace("    indices:", "    requestsPerSecond: 15\n    indices:"),
    );
    let mut ws = workers(4, &broker, 2, root.path());
    let coord = spawn_coordinator(&broker, &job, &root.path().join("secrets"));
    let (done, kills) = kill_workers_until_done(coord, 600, &mut ws, 4242, || {});
    assert!(
        done.success,
        "the export from the real node failed under chaos:\n{}\n{}",
        done.stderr,
        worker_logs(&ws)
    );
    assert!(
        kills >= 3,
        "the job ended before the chaos did much ({kills} kills)"
    );
    assert_exact_s3(storage.as_ref(), &run_dir_of(&done.stdout), &spec).await;
    let (_, dead) = queue_depths(&broker).await;
    assert_eq!(dead, 0, "nothing is left in the dead-letter queue");
    drop(ws);
    cluster.delete_indices().await;
}

/// Ready tasks and dead letters on a broker vhost.
async fn queue_depths(broker: &str) -> (u64, u64) {
    let q = spillway_queue::rabbit::RabbitQueue::connect(spillway_queue::rabbit::RabbitConfig {
        url: broker.to_string(),
        ..Default::default()
    })
    .await
    .expect("broker reachable");
    let depths = q.queue_depths().await.expect("queue depths");
    q.close().await;
    (depths.0 as u64, depths.1 as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_shard_is_dead_lettered_and_named_and_the_rest_is_committed() {
    // No time range: the plan is PIT slices only, and the poison matches slice 3's requests.
    let spec = data(24_000, 2, 5);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            poison: Some("\"slice\":{\"id\":3,".into()),
            ..Default::default()
        })
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let out = root.path().join("out");
    let broker = broker_vhost("dist-poison");
    let job = write(
        root.path(),
        "poison",
        &format!(
            "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: poison\nspec:\n  source:\n    url: {}\n    indices: [\"{}*\"]\n  sharding:\n    targetDocsPerShard: 3000\n  retry:\n    maxAttempts: 2\n  output:\n{}",
            sim.url(),
            spec.index_prefix,
            volume_output(&out)
        ),
    );
    let ws = workers(2, &broker, 2, root.path());
    let coord = spawn_coordinator(&broker, &job, &root.path().join("secrets"));
    let done = wait_finished(coord, Duration::from_secs(300), "the coordinator");
    assert!(!done.success, "a job with a poison shard must fail");
    let line =
        error_line(&done.stderr).unwrap_or_else(|| panic!("no error line:\n{}", done.stderr));
    assert!(
        line.contains("shard 000003") && line.contains("after 2 attempt"),
        "the error names the poison shard and its attempts: {line}"
    );
    assert!(
        sim.cluster().stats()["faults"]["poison"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    // Every other shard is committed with a marker, and no _SUCCESS was written.
    let markers = volume_markers(&out);
    assert_eq!(
        markers.len(),
        7,
        "8 slices, all but the poison one committed: {:?}",
        markers.keys()
    );
    assert!(!markers.contains_key("000003"));
    let committed: u64 = markers.values().map(|m| m.docs).sum();
    let ids = volume_ids(&out);
    assert_eq!(
        ids.len() as u64,
        committed,
        "the committed shards hold their documents"
    );
    assert!(ids.values().all(|n| *n == 1));
    assert!(
        !walk_names(&out).iter().any(|n| n == "_SUCCESS"),
        "no _SUCCESS after a failed job"
    );
    let (_, dead) = queue_depths(&broker).await;
    assert_eq!(
        dead, 0,
        "the poison task was forwarded out of the dead-letter queue"
    );
    drop(ws);
    sim.shutdown().await;
}

fn walk_names(dir: &Path) -> Vec<String> {
    files_under(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_share_the_workers_fairly() {
    let spec_a = DataSpec {
        index_prefix: "alpha-".into(),
        ..data(30_000, 3, 1)
    };
    let spec_b = DataSpec {
        index_prefix: "beta-".into(),
        ..data(30_000, 3, 2)
    };
    let (sim, _) = sim_with(Config::opensearch_3(), &spec_a).await;
    searchsim::datagen::load(sim.cluster(), &spec_b).expect("second data set loads");
    sim.cluster()
        .set_faults(Faults {
            latency_ms: 10,
            paths: vec!["_search".into()],
            ..Default::default()
        })
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let broker = broker_vhost("dist-fair");
    let extra =
        "  sharding:\n    targetDocsPerShard: 2000\n  parallelism:\n    maxConcurrentShards: 2\n";
    let out_a = root.path().join("a");
    let out_b = root.path().join("b");
    let job_a = write(
        root.path(),
        "alpha",
        &job_yaml("alpha", &sim.url(), &spec_a, extra, &volume_output(&out_a)),
    );
    let job_b = write(
        root.path(),
        "beta",
        &job_yaml("beta", &sim.url(), &spec_b, extra, &volume_output(&out_b)),
    );
    let ws = workers(2, &broker, 2, root.path());
    let secrets = root.path().join("secrets");
    let a = spawn_coordinator(&broker, &job_a, &secrets);
    let b = spawn_coordinator(&broker, &job_b, &secrets);
    let done_a = wait_finished(a, Duration::from_secs(300), "job alpha");
    let done_b = wait_finished(b, Duration::from_secs(300), "job beta");
    assert!(
        done_a.success,
        "alpha failed: {}\n{}",
        done_a.stderr,
        worker_logs(&ws)
    );
    assert!(
        done_b.success,
        "beta failed: {}\n{}",
        done_b.stderr,
        worker_logs(&ws)
    );
    assert_exact_ids(&volume_ids(&out_a), &spec_a);
    assert_exact_ids(&volume_ids(&out_b), &spec_b);
    // Both made progress before either finished: each job's first shard was committed before
    // the other job's last one.
    let ma = volume_markers(&out_a);
    let mb = volume_markers(&out_b);
    assert!(
        ma.len() >= 10 && mb.len() >= 10,
        "{} and {} shards",
        ma.len(),
        mb.len()
    );
    let first =
        |m: &BTreeMap<String, ShardMarker>| m.values().map(|m| m.completed_at).min().unwrap();
    let last =
        |m: &BTreeMap<String, ShardMarker>| m.values().map(|m| m.completed_at).max().unwrap();
    let first_finish = last(&ma).min(last(&mb));
    assert!(
        first(&ma) < first_finish && first(&mb) < first_finish,
        "both jobs progressed before either finished: alpha {}..{}, beta {}..{}",
        first(&ma),
        last(&ma),
        first(&mb),
        last(&mb)
    );
    // Interleaved, not one after the other: at least a quarter of each job's shards were
    // committed while the other job was still running.
    let overlap = |m: &BTreeMap<String, ShardMarker>| {
        m.values()
            .filter(|x| x.completed_at <= first_finish)
            .count()
    };
    assert!(
        overlap(&ma) * 4 >= ma.len() && overlap(&mb) * 4 >= mb.len(),
        "the jobs were served one after the other: {} of {} and {} of {} shards before the first finish",
        overlap(&ma),
        ma.len(),
        overlap(&mb),
        mb.len()
    );
    drop(ws);
    sim.shutdown().await;
}

async fn pit_expiry_run(
    policy: &str,
) -> (
    Finished,
    searchsim::RunningSim,
    DataSpec,
    PathBuf,
    tempfile::TempDir,
) {
    let spec = data(40_000, 4, 31);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            latency_ms: 30,
            paths: vec!["_search".into()],
            ..Default::default()
        })
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    secrets_dir(root.path());
    let out = root.path().join("out");
    let broker = broker_vhost(&format!("dist-pit-{}", policy.to_lowercase()));
    let job = write(
        root.path(),
        "pit",
        &job_yaml(
            "pit",
            &sim.url(),
            &spec,
            &format!(
                "  onSnapshotLoss: {policy}\n  sharding:\n    targetDocsPerShard: 2000\n    pageSize: 250\n"
            ),
            &volume_output(&out),
        ),
    );
    let ws = workers(2, &broker, 2, root.path());
    let coord = spawn_coordinator(&broker, &job, &root.path().join("secrets"));
    // Expire every PIT once some shards are committed and others are not.
    let deadline = Instant::now() + Duration::from_secs(120);
    while volume_markers(&out).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no shard finished in 2 minutes:\n{}",
            worker_logs(&ws)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/_searchsim/pits/_expire", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "expiring PITs: {}", r.status());
    let done = tokio::task::spawn_blocking(move || {
        wait_finished(coord, Duration::from_secs(300), "the coordinator")
    })
    .await
    .unwrap();
    drop(ws);
    (done, sim, spec, out, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pit_expiry_fails_the_job_when_the_policy_is_fail() {
    let (done, sim, _, out, _root) = pit_expiry_run("Fail").await;
    eprintln!("coordinator:\n{}", tail(&done.stderr, 40));
    assert!(!done.success, "the job must fail when its snapshot is lost");
    let line =
        error_line(&done.stderr).unwrap_or_else(|| panic!("no error line:\n{}", done.stderr));
    assert!(
        line.contains("snapshot") && line.contains("onSnapshotLoss"),
        "the error says the snapshot was lost and what to change: {line}"
    );
    assert!(!walk_names(&out).iter().any(|n| n == "_SUCCESS"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pit_expiry_renews_the_snapshot_when_the_policy_is_renew() {
    let (done, sim, spec, out, _root) = pit_expiry_run("Renew").await;
    assert!(
        done.success,
        "the job must renew its snapshot and finish: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("opened a new one"),
        "the coordinator logged the renewal:\n{}",
        tail(&done.stderr, 20)
    );
    assert_exact_ids(&volume_ids(&out), &spec);
    assert!(walk_names(&out).iter().any(|n| n == "_SUCCESS"));
    sim.shutdown().await;
}
