//! The controller against kubesim (in process), searchsim and an in-memory queue with an
//! in-process worker pool: ExportJobs applied through the API end in the right phase, with
//! statuses that match the source, and suspend, delete and invalid specs behave.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults, RunningSim, SearchSim};
use spillway_api::{ExportJob, Phase};
use spillway_controller::{ControllerOptions, ControllerStats, Runs, run_controller};
use spillway_engine::worker::run_worker;
use spillway_engine::{Executor, LocalSecrets};
use spillway_queue::ShardQueue;
use spillway_queue::memory::MemoryQueue;
use tokio_util::sync::CancellationToken;

struct Env {
    _kube: kubesim::Server,
    client: Client,
    sim: RunningSim,
    spec: DataSpec,
    out: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn env(docs: u64, latency_ms: u64) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = kubesim::Server::new(kubesim::ServerOptions::default());
    let client = kube.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &spillway_api::crd::crd())
        .await
        .expect("the CRD is accepted");
    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("exports".into());
    let _ = nss.create(&PostParams::default(), &ns).await;

    let spec = DataSpec {
        docs,
        days: 3,
        shards: 3,
        seed: 8,
        large_every: 0,
        ..Default::default()
    };
    let sim = SearchSim::start(Config::opensearch_3()).await.unwrap();
    searchsim::datagen::load(sim.cluster(), &spec).unwrap();
    if latency_ms > 0 {
        sim.cluster()
            .set_faults(Faults {
                latency_ms,
                paths: vec!["_search".into()],
                ..Default::default()
            })
            .unwrap();
    }

    let cancel = CancellationToken::new();
    let memq = MemoryQueue::new(10);
    let queue: Arc<dyn ShardQueue> = Arc::new(memq);
    let executor = Arc::new(Executor::new(Arc::new(LocalSecrets::default()), None));
    tokio::spawn(run_worker(queue.clone(), executor, 4, cancel.clone()));
    tokio::spawn(run_controller(
        client.clone(),
        Runs::new(queue),
        ControllerOptions {
            status_interval: Duration::from_millis(200),
            ..Default::default()
        },
        Arc::new(ControllerStats::default()),
        cancel.clone(),
    ));
    Env {
        _kube: kube,
        client,
        sim,
        spec,
        out: tempfile::tempdir().unwrap(),
        cancel,
    }
}

fn job(env: &Env, name: &str, extra: &str) -> ExportJob {
    let end = env.spec.start + chrono::Days::new(u64::from(env.spec.days));
    let yaml = format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\n  namespace: exports\nspec:\n  source:\n    url: {url}\n    indices: [\"logs-*\"]\n  timeRange:\n    field: \"@timestamp\"\n    gte: {start}T00:00:00Z\n    lt: {end}T00:00:00Z\n  sharding:\n    targetDocsPerShard: 1500\n{extra}  output:\n    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {out}\n",
        url = env.sim.url(),
        start = env.spec.start,
        out = env.out.path().display(),
    );
    spillway_api::load_job_yaml(&yaml).unwrap()
}

fn jobs(env: &Env) -> Api<ExportJob> {
    Api::namespaced(env.client.clone(), "exports")
}

async fn wait_phase(env: &Env, name: &str, phase: Phase) -> ExportJob {
    let cond = move |o: Option<&ExportJob>| {
        o.and_then(|j| j.status.as_ref())
            .and_then(|s| s.phase)
            .is_some_and(|p| p == phase)
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(jobs(env), name, cond),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not reach {phase:?} within 2 minutes"))
    .expect("watch works")
    .expect("the job exists")
}

fn exported_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()) == Some("ndjson") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    ids.push(v["_id"].as_str().unwrap().to_string());
                }
            }
        }
    }
    ids.sort();
    ids
}

fn source_ids(spec: &DataSpec) -> Vec<String> {
    let mut ids: Vec<String> = searchsim::datagen::docs(spec).map(|d| d.id).collect();
    ids.sort();
    ids
}

/// Argo CD's view: `manifests/argocd/health.lua` run on the object, in Lua 5.1 as Argo CD
/// embeds it. Returns (status, message).
fn argo_health(j: &ExportJob) -> (String, String) {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/argocd/health.lua"
    ))
    .unwrap();
    let lua = mlua::Lua::new();
    use mlua::LuaSerdeExt;
    let obj = serde_json::to_value(j).unwrap();
    lua.globals()
        .set("obj", lua.to_value(&obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(&script).eval().expect("the health check runs");
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// Flux's and `kubectl wait`'s view: kstatus's generic rules for custom resources.
fn kstatus(j: &ExportJob) -> &'static str {
    let Some(st) = &j.status else {
        return "InProgress";
    };
    if st.observed_generation != j.metadata.generation {
        return "InProgress";
    }
    let is = |t: &str, v: &str| st.condition(t).is_some_and(|c| c.status == v);
    if is("Reconciling", "True") {
        return "InProgress";
    }
    if is("Stalled", "True") {
        return "Failed";
    }
    if is("Ready", "False") {
        return "InProgress";
    }
    "Current"
}

fn condition(j: &ExportJob, t: &str) -> String {
    j.status
        .as_ref()
        .and_then(|s| s.condition(t))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_applied_job_succeeds_with_an_exact_status() {
    let env = env(12_000, 0).await;
    jobs(&env)
        .create(&PostParams::default(), &job(&env, "daily", ""))
        .await
        .unwrap();
    let done = wait_phase(&env, "daily", Phase::Succeeded).await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.documents.exported, env.spec.docs);
    assert_eq!(st.documents.expected, env.spec.docs);
    assert_eq!(st.shards.succeeded, st.shards.total);
    assert_eq!(
        st.progress,
        Some(format!("{}/{}", st.shards.total, st.shards.total))
    );
    assert_eq!(st.observed_generation, done.metadata.generation);
    assert!(
        st.manifest_uri
            .as_deref()
            .unwrap()
            .ends_with("_manifest.json")
    );
    assert_eq!(condition(&done, "Ready"), "True");
    assert_eq!(condition(&done, "Complete"), "True");
    assert_eq!(condition(&done, "Reconciling"), "False");
    assert_eq!(condition(&done, "Stalled"), "False");
    assert!(
        done.finalizers()
            .iter()
            .any(|f| f == spillway_controller::FINALIZER)
    );
    assert_eq!(exported_ids(env.out.path()), source_ids(&env.spec));
    assert_eq!(env.sim.cluster().open_pits(), 0, "the PIT is closed");
    let (health, message) = argo_health(&done);
    assert_eq!(health, "Healthy", "{message}");
    assert!(message.contains("exported 12000 documents"), "{message}");
    assert_eq!(kstatus(&done), "Current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspend_then_resume_completes_exactly() {
    let env = env(12_000, 5).await;
    jobs(&env)
        .create(
            &PostParams::default(),
            &job(&env, "paused", "  suspend: true\n"),
        )
        .await
        .unwrap();
    let j = wait_phase(&env, "paused", Phase::Suspended).await;
    assert_eq!(condition(&j, "Suspended"), "True");
    assert_eq!(argo_health(&j).0, "Suspended");
    assert_eq!(kstatus(&j), "InProgress");
    assert!(
        exported_ids(env.out.path()).is_empty(),
        "nothing is exported while suspended"
    );
    let patch = serde_json::json!({"spec": {"suspend": false}});
    jobs(&env)
        .patch("paused", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // The spec change is seen (generation 2) before the coordinator acts on it.
    let changed = jobs(&env).get("paused").await.unwrap();
    if changed.status.as_ref().and_then(|s| s.observed_generation) != changed.metadata.generation {
        assert_eq!(argo_health(&changed).0, "Progressing");
        assert_eq!(kstatus(&changed), "InProgress");
    }
    let done = wait_phase(&env, "paused", Phase::Succeeded).await;
    assert_eq!(condition(&done, "Suspended"), "False");
    assert_eq!(argo_health(&done).0, "Healthy");
    assert_eq!(exported_ids(env.out.path()), source_ids(&env.spec));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_running_job_closes_its_snapshot() {
    let env = env(30_000, 40).await;
    jobs(&env)
        .create(
            &PostParams::default(),
            &job(
                &env,
                "doomed",
                "  parallelism:\n    maxConcurrentShards: 2\n",
            ),
        )
        .await
        .unwrap();
    let running = wait_phase(&env, "doomed", Phase::Running).await;
    let uid = running.uid().unwrap();
    let (health, message) = argo_health(&running);
    assert_eq!(health, "Progressing");
    assert!(message.starts_with("Exporting: "), "{message}");
    assert_eq!(kstatus(&running), "InProgress");
    assert_eq!(
        env.sim.cluster().open_pits(),
        1,
        "the running job holds one PIT"
    );
    jobs(&env)
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(jobs(&env), "doomed", conditions::is_deleted(&uid)),
    )
    .await
    .expect("the finalizer is removed within a minute")
    .unwrap();
    assert_eq!(
        env.sim.cluster().open_pits(),
        0,
        "the PIT is closed on deletion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_jobs_are_refused_or_stalled_with_what_to_fix() {
    let env = env(1_000, 0).await;
    // The schema's CEL rule refuses an empty time range.
    let mut bad = job(&env, "backwards", "");
    let tr = bad.spec.time_range.as_mut().unwrap();
    std::mem::swap(&mut tr.gte, &mut tr.lt);
    let err = jobs(&env)
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("gte after lt is refused by the API server");
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message
                    .contains("timeRange.gte must be before timeRange.lt"),
                "{}",
                e.message
            );
        }
        other => panic!("unexpected error {other}"),
    }
    // What only the coordinator checks ends Stalled with the fix in the message.
    let mut snappy = job(&env, "snappy-ndjson", "");
    snappy.spec.output.compression = spillway_api::Compression::Snappy;
    jobs(&env)
        .create(&PostParams::default(), &snappy)
        .await
        .unwrap();
    let j = wait_phase(&env, "snappy-ndjson", Phase::Failed).await;
    assert_eq!(condition(&j, "Stalled"), "True");
    assert_eq!(condition(&j, "Ready"), "False");
    let (health, message) = argo_health(&j);
    assert_eq!(health, "Degraded");
    assert!(message.contains("snappy is only for parquet"), "{message}");
    assert_eq!(kstatus(&j), "Failed");
    let msg = j.status.unwrap().last_error.unwrap();
    assert!(msg.contains("snappy is only for parquet"), "{msg}");
}

#[test]
fn the_argocd_configmap_patch_embeds_the_health_check() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/argocd/");
    let lua = std::fs::read_to_string(format!("{root}health.lua")).unwrap();
    let patch: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{root}argocd-cm-patch.yaml")).unwrap(),
    )
    .unwrap();
    let embedded = patch["data"]["resource.customizations.health.spillway.dev_ExportJob"]
        .as_str()
        .unwrap();
    assert_eq!(embedded.trim_end(), lua.trim_end());
    // And it handles an object without status (just applied).
    let fresh: ExportJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "spillway.dev/v1alpha1", "kind": "ExportJob",
        "metadata": {"name": "x", "generation": 1},
        "spec": {"source": {"url": "http://h:9200", "indices": ["a"]},
                 "output": {"destination": {"volume": {"path": "/x"}}}}
    }))
    .unwrap();
    assert_eq!(argo_health(&fresh).0, "Progressing");
    assert_eq!(kstatus(&fresh), "InProgress");
}
