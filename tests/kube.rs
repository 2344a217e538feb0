//! The Kubernetes deployment end to end, as processes: kubesim or the real kube-apiserver
//! (RBAC enforced, the processes running as `manifests/base`'s ServiceAccounts), two
//! `spillway coordinator` replicas electing a leader, three `spillway worker` processes reading
//! Secrets through the API, RabbitMQ, SeaweedFS and searchsim. Every manifest in
//! `manifests/examples/` is applied (pointed at the local services) and watched until it
//! succeeds; statuses and output are compared with the source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults, RunningSim};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_api::{ExportJob, Phase};
use spillway_e2e::procs::*;
use spillway_e2e::*;
use spillway_sink::storage::Storage;

const NS: &str = "exports";
const SYSTEM_NS: &str = "spillway-system";

/// Which API server a deployment runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum On {
    /// kubesim in process: every process authenticates with a token of its own, and every
    /// request is recorded (who wrote statuses, which permissions were used).
    Sim,
    /// The real kube-apiserver of `scripts/services/kube-apiserver.sh` (RBAC enforced),
    /// restarted with an empty etcd: the test is admin; the coordinators and workers run as
    /// the ServiceAccounts that `manifests/base` creates, with exactly its RBAC.
    Real,
}

/// The API server of a deployment.
enum ApiServer {
    Sim(kubesim::Server),
    Real { admin: PathBuf },
}

/// The deployment: API server, broker vhost, coordinators and workers.
struct Deployment {
    kube: ApiServer,
    client: Client,
    dir: tempfile::TempDir,
    broker: String,
    coordinators: Vec<Proc>,
    workers: Vec<Proc>,
}

/// A restartable child process with its log file.
struct Proc {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Proc {
    fn start(name: &str, args: Vec<String>, env: Vec<(String, String)>, log: PathBuf) -> Proc {
        let child = spawn(&args, &env, &log);
        Proc {
            name: name.to_string(),
            log,
            child,
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(bin("spillway"))
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spillway starts")
}

impl Deployment {
    async fn start(on: On, name: &str, coordinators: usize, workers: usize) -> Deployment {
        init();
        let (kube, client) = match on {
            On::Sim => {
                let kube = kubesim::Server::start(kubesim::ServerOptions::default())
                    .await
                    .expect("kubesim starts");
                let client = kube.client();
                (ApiServer::Sim(kube), client)
            }
            On::Real => {
                let admin = real_api_server();
                let client = client_from(&admin).await;
                (ApiServer::Real { admin }, client)
            }
        };
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &spillway_api::crd::crd())
            .await
            .expect("the CRD is accepted");
        if on == On::Real {
            // The API server serves the new resource once the CRD is Established.
            let established = await_condition(
                crds.clone(),
                "exportjobs.spillway.dev",
                conditions::is_crd_established(),
            );
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .expect("the CRD is established within 30 s")
                .unwrap();
        }
        let nss: Api<Namespace> = Api::all(client.clone());
        for ns in [NS, SYSTEM_NS] {
            let mut n = Namespace::default();
            n.metadata.name = Some(ns.into());
            nss.create(&PostParams::default(), &n).await.unwrap();
        }
        if let ApiServer::Real { admin } = &kube {
            apply_base_rbac(admin);
        }
        let dir = tempfile::tempdir().unwrap();
        let broker = broker_vhost(name);
        let mut d = Deployment {
            kube,
            client,
            dir,
            broker,
            coordinators: Vec::new(),
            workers: Vec::new(),
        };
        for i in 0..coordinators {
            d.add_coordinator(&format!("coordinator-{i}"));
        }
        for i in 0..workers {
            let id = format!("worker-{i}");
            let kubeconfig = d.kubeconfig(&id);
            let log = d.dir.path().join(format!("{id}.log"));
            let args = [
                "--log",
                "info",
                "worker",
                "--broker",
                &d.broker,
                "--concurrency",
                "2",
                "--kube-secrets",
                "--listen",
                "127.0.0.1:0",
            ]
            .map(String::from)
            .to_vec();
            d.workers.push(Proc::start(
                &id,
                args,
                vec![("KUBECONFIG".into(), kubeconfig)],
                log,
            ));
        }
        d
    }

    /// A kubeconfig whose current context authenticates as `user` (`coordinator-N` or
    /// `worker-N`): on kubesim a token of its own, on the real API server a token of the
    /// ServiceAccount `manifests/base` gives that component.
    fn kubeconfig(&self, user: &str) -> String {
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        match &self.kube {
            ApiServer::Sim(kube) => {
                kube.add_token(&format!("token-{user}"), user);
                let mut doc: Value = serde_yaml_ng::from_str(&kube.kubeconfig_yaml()).unwrap();
                doc["current-context"] = json!(format!("kubesim-{user}"));
                std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
            }
            ApiServer::Real { .. } => {
                let sa = if user.starts_with("coordinator") {
                    "spillway-coordinator"
                } else {
                    "spillway-worker"
                };
                let out = Command::new(repo_root().join("scripts/services/kube-apiserver.sh"))
                    .args(["sa-kubeconfig", SYSTEM_NS, sa])
                    .arg(&path)
                    .output()
                    .expect("kube-apiserver.sh runs");
                assert!(
                    out.status.success(),
                    "no ServiceAccount kubeconfig for {sa}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        path.display().to_string()
    }

    fn add_coordinator(&mut self, id: &str) {
        let kubeconfig = self.kubeconfig(id);
        let args = [
            "--log",
            "info",
            "coordinator",
            "--broker",
            &self.broker,
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            id,
            "--lease-duration",
            "4s",
            "--status-interval",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec();
        let log = self.dir.path().join(format!("{id}.log"));
        self.coordinators.push(Proc::start(
            id,
            args,
            vec![("KUBECONFIG".into(), kubeconfig)],
            log,
        ));
    }

    fn jobs(&self) -> Api<ExportJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        api.create(&PostParams::default(), &s).await.unwrap();
    }

    /// The identity holding the leader Lease.
    async fn leader(&self) -> Option<String> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), SYSTEM_NS);
        api.get_opt("spillway-coordinator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    fn logs(&self) -> String {
        self.coordinators
            .iter()
            .chain(self.workers.iter())
            .map(|p| {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    p.name,
                    lines[lines.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Users that wrote ExportJob statuses (kubesim records every request).
    fn status_writers(&self, kube: &kubesim::Server) -> Vec<String> {
        let mut users: Vec<String> = kube
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/status") && r.verb == "patch")
            .map(|r| r.user)
            .collect();
        users.sort();
        users.dedup();
        users
    }

    async fn wait_phase(&self, name: &str, phase: Phase, limit: Duration) -> ExportJob {
        let cond = move |o: Option<&ExportJob>| {
            o.and_then(|j| j.status.as_ref())
                .and_then(|s| s.phase)
                .is_some_and(|p| p == phase || (p == Phase::Failed && phase != Phase::Failed))
        };
        let j = tokio::time::timeout(limit, await_condition(self.jobs(), name, cond))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name} did not reach {phase:?} in {limit:?}:\n{}",
                    self.logs()
                )
            })
            .expect("watch works")
            .expect("the job exists");
        let got = j.status.as_ref().and_then(|s| s.phase);
        assert_eq!(
            got,
            Some(phase),
            "{name}: {:?}\n{}",
            j.status.as_ref().and_then(|s| s.last_error.clone()),
            self.logs()
        );
        j
    }
}

/// Restarts the real API server with an empty etcd (its certificates, and so the admin
/// kubeconfig, stay) and returns the admin kubeconfig.
fn real_api_server() -> PathBuf {
    let admin = std::env::var_os("SPILLWAY_KUBE_ADMIN_KUBECONFIG").unwrap_or_else(|| {
        panic!("SPILLWAY_KUBE_ADMIN_KUBECONFIG is not set: start the API server with `scripts/services/kube-apiserver.sh start` and eval the output of its `env` command (scripts/test.sh does both)")
    });
    let out = Command::new(repo_root().join("scripts/services/kube-apiserver.sh"))
        .arg("restart")
        .output()
        .expect("kube-apiserver.sh runs");
    assert!(
        out.status.success(),
        "restarting the API server failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(admin)
}

async fn client_from(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("the admin kubeconfig reads");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("the admin kubeconfig is valid");
    Client::try_from(config).expect("a client for the real API server")
}

/// Applies the ServiceAccounts, roles and bindings of `manifests/base` (as `kubectl
/// kustomize` renders them, namespaces filled in) to the real API server.
fn apply_base_rbac(admin: &Path) {
    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo_root().join("manifests/base"))
        .output()
        .expect("kubectl runs");
    assert!(
        rendered.status.success(),
        "kubectl kustomize manifests/base: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).unwrap();
    let keep = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| {
            d.lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .is_some_and(|k| keep.contains(&k.trim()))
        })
        .collect();
    assert!(
        docs.len() >= 6,
        "manifests/base renders {} RBAC objects",
        docs.len()
    );
    let mut apply = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(admin)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(docs.join("\n---\n").as_bytes())
        .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply of manifests/base RBAC: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One RBAC rule of the deployment's manifests.
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

/// The rules granted to `component` (`coordinator` or `worker`) by `manifests/base`, which a
/// chart test keeps equal to the Helm chart's default rendering.
fn granted(component: &str) -> Vec<Rule> {
    let path = repo_root().join(format!("manifests/base/{component}-rbac.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).unwrap();
        if !matches!(v["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for r in v["rules"].as_array().unwrap() {
            rules.push(Rule {
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                names: strings(&r["resourceNames"]),
                verbs: strings(&r["verbs"]),
            });
        }
    }
    rules
}

/// Grants the test does not exercise, each with the reason it is granted anyway.
const GRANTED_NOT_OBSERVED: &[(&str, &str, &str, &str)] = &[
    (
        "spillway.dev",
        "exportjobs",
        "delete",
        "ttlSecondsAfterFinished; exercised by the controller's reconcile tests",
    ),
    (
        "spillway.dev",
        "exportjobs/finalizers",
        "update",
        "required to set finalizers where the OwnerReferencesPermissionEnforcement admission plugin runs",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "a repeated event is patched into a series",
    ),
];

/// Every API call a component made is allowed by its RBAC rules, and every rule is used
/// (or listed in `GRANTED_NOT_OBSERVED`).
fn assert_rbac_is_exact(kube: &kubesim::Server, component: &str) {
    let rules = granted(component);
    let mut observed = std::collections::BTreeSet::new();
    for r in kube.requests() {
        if !r.user.starts_with(&format!("{component}-")) {
            continue;
        }
        let Some(resource) = r.resource.clone() else {
            continue; // discovery and other non-resource paths
        };
        let full = match &r.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let group = r.group.clone().unwrap_or_default();
        let allowed = rules.iter().any(|rule| {
            rule.groups.contains(&group)
                && rule.resources.contains(&full)
                && rule.verbs.contains(&r.verb)
                && (rule.names.is_empty()
                    || r.name.as_ref().is_some_and(|n| rule.names.contains(n)))
        });
        assert!(
            allowed,
            "{component} called {} {group}/{full} {:?} ({} {}) but its RBAC does not allow it",
            r.verb, r.name, r.method, r.path
        );
        observed.insert((group, full, r.verb.clone()));
    }
    for rule in &rules {
        for g in &rule.groups {
            for res in &rule.resources {
                for verb in &rule.verbs {
                    let key = (g.clone(), res.clone(), verb.clone());
                    let excused = GRANTED_NOT_OBSERVED.iter().any(|(eg, er, ev, _)| {
                        (*eg, *er, *ev) == (g.as_str(), res.as_str(), verb.as_str())
                    });
                    assert!(
                        observed.contains(&key) || excused,
                        "{component} is granted {verb} on {g}/{res} but never used it (observed: {observed:?})"
                    );
                }
            }
        }
    }
}

/// Loads `spec`'s documents into `sim`.
fn load(sim: &RunningSim, spec: &DataSpec) {
    searchsim::datagen::load(sim.cluster(), spec).expect("data loads");
}

fn example(name: &str) -> Value {
    let path = repo_root().join("manifests/examples").join(name);
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Ids (sorted) of every document the cluster returns for `query`; over TLS (with the
/// simulator's CA and basic auth) when the simulator serves HTTPS.
async fn source_ids(sim: &RunningSim, index: &str, query: Value) -> Vec<String> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = sim.ca_pem() {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    let c = builder.build().unwrap();
    let mut req = c
        .post(format!("{}/{index}/_search?size=10000", sim.url()))
        .json(&json!({"query": query, "_source": false, "track_total_hits": true}));
    if sim.ca_pem().is_some() {
        req = req.basic_auth("reader", Some("reader-password-1"));
    }
    let v: Value = req.send().await.unwrap().json().await.unwrap();
    let hits = v["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("search failed: {v}"));
    assert_eq!(
        hits.len() as u64,
        v["hits"]["total"]["value"].as_u64().unwrap(),
        "test data sets stay under 10,000 documents"
    );
    let mut ids: Vec<String> = hits
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn range_query(field: &str, gte: &str, lt: &str, user: Option<Value>) -> Value {
    let mut filter = vec![json!({"range": {field: {"gte": gte, "lt": lt}}})];
    if let Some(u) = user {
        filter.push(u);
    }
    json!({"bool": {"filter": filter}})
}

/// Ids of a run's files, for any format, read from a directory.
fn dir_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for p in files_under(dir) {
        let key = p.display().to_string();
        if key.contains("/data/") {
            ids.extend(ids_of(&key, std::fs::read(&p).unwrap().into()));
        }
    }
    ids.sort();
    ids
}

fn ids_of(key: &str, body: bytes::Bytes) -> Vec<String> {
    if key.contains(".parquet") {
        parquet_rows(body)
            .into_iter()
            .map(|r| r["_id"].as_str().unwrap().to_string())
            .collect()
    } else if key.contains(".csv") {
        // Without includeMetadata the generated `event.id` (equal to `_id`) identifies a row.
        csv_rows(key, &body)
            .into_iter()
            .map(|r| {
                r.get("_id")
                    .or_else(|| r.get("event.id"))
                    .expect("an id column")
                    .clone()
            })
            .collect()
    } else {
        ndjson_rows(key, &body)
            .into_iter()
            .map(|r| {
                r.get("_id")
                    .or_else(|| r.get("event").and_then(|e| e.get("id")))
                    .and_then(|v| v.as_str())
                    .expect("an id")
                    .to_string()
            })
            .collect()
    }
}

async fn s3_ids(storage: &dyn Storage, run_dir: &str) -> Vec<String> {
    let (_, files) = read_run(storage, run_dir).await;
    let mut ids: Vec<String> = files.into_iter().flat_map(|(k, b)| ids_of(&k, b)).collect();
    ids.sort();
    ids
}

/// The run directory (relative to the destination root) of a finished job.
fn run_dir(job: &ExportJob, prefix: &str) -> String {
    let st = job.status.as_ref().unwrap();
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!("{p}{}/{}", job.name_any(), st.run_id.as_ref().unwrap())
}

fn assert_counts(job: &ExportJob, expected: usize) {
    let st = job.status.as_ref().unwrap();
    assert_eq!(st.documents.expected, expected as u64, "{}", job.name_any());
    assert_eq!(st.documents.exported, expected as u64, "{}", job.name_any());
    assert_eq!(st.shards.succeeded, st.shards.total);
    assert_eq!(st.observed_generation, job.metadata.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_every_example_manifest_runs_to_success() {
    every_example_manifest_runs_to_success(On::Sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_real_api_server_every_example_manifest_runs_to_success() {
    every_example_manifest_runs_to_success(On::Real).await;
}

async fn every_example_manifest_runs_to_success(on: On) {
    let d = Deployment::start(on, "kube-examples", 2, 3).await;
    let s3 = s3_env();
    let out = d.dir.path().join("volumes");

    // One plain cluster (query-and-fields, suspended, volume-ndjson), one with TLS and basic
    // auth (s3-parquet-daily), one that verifies SigV4 signatures (sigv4-amazon-opensearch).
    let (plain, _) = sim_with(
        Config::opensearch_3(),
        &DataSpec {
            docs: 3_000,
            days: 31,
            seed: 1,
            index_prefix: "logs-".into(),
            large_every: 0,
            ..Default::default()
        },
    )
    .await;
    load(
        &plain,
        &DataSpec {
            docs: 2_000,
            days: 365,
            seed: 2,
            index_prefix: "metrics-".into(),
            start: chrono::NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
            large_every: 0,
            ..Default::default()
        },
    );
    let orders = DataSpec {
        docs: 1_500,
        days: 2,
        seed: 3,
        index_prefix: "orders-".into(),
        large_every: 0,
        ..Default::default()
    };
    load(&plain, &orders);
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/_aliases", plain.url()))
        .json(&json!({"actions": [{"add": {"index": "orders-*", "alias": "orders"}}]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "alias: {}",
        r.text().await.unwrap()
    );

    let tls_dir = tempfile::tempdir().unwrap();
    let auth = searchsim::Auth {
        users: vec![searchsim::User::new("reader", "reader-password-1")],
        ..Default::default()
    };
    let (secure, _) = sim_with(
        Config::opensearch_3()
            .with_tls(tls_dir.path())
            .with_auth(auth),
        &DataSpec {
            docs: 4_000,
            days: 31,
            seed: 4,
            large_every: 0,
            ..Default::default()
        },
    )
    .await;
    let (signed, _) = sim_with(
        Config::opensearch_3().with_sigv4("AKIDAUDIT", "audit-secret-key-1"),
        &DataSpec {
            docs: 2_500,
            days: 182,
            seed: 5,
            index_prefix: "audit-".into(),
            start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            large_every: 0,
            ..Default::default()
        },
    )
    .await;

    d.secret(
        "search-reader",
        &[("username", "reader"), ("password", "reader-password-1")],
    )
    .await;
    d.secret("search-ca", &[("ca.crt", secure.ca_pem().unwrap())])
        .await;
    for name in ["s3-writer", "minio-writer"] {
        d.secret(
            name,
            &[
                ("accessKeyId", &s3.access_key),
                ("secretAccessKey", &s3.secret_key),
            ],
        )
        .await;
    }
    d.secret(
        "aws-reader",
        &[
            ("accessKeyId", "AKIDAUDIT"),
            ("secretAccessKey", "audit-secret-key-1"),
        ],
    )
    .await;

    let point_s3 = |job: &mut Value, bucket: &str| {
        let s3v = &mut job["spec"]["output"]["destination"]["s3"];
        s3v["bucket"] = json!(bucket);
        s3v["endpoint"] = json!(s3_env().endpoint);
        s3v["forcePathStyle"] = json!(true);
        if s3v.get("secretRef").is_none() {
            s3v["secretRef"] = json!({"name": "s3-writer"});
        }
    };
    let mut expected: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();

    // s3-parquet-daily: TLS + basic auth → S3 Parquet.
    let mut j = example("s3-parquet-daily.yaml");
    j["spec"]["source"]["url"] = json!(secure.url());
    point_s3(&mut j, "kube-daily");
    s3_bucket("kube-daily").await;
    let ids = source_ids(
        &secure,
        "logs-*",
        range_query(
            "@timestamp",
            "2024-03-01T00:00:00Z",
            "2024-04-01T00:00:00Z",
            None,
        ),
    )
    .await;
    expected.insert(
        j["metadata"]["name"].as_str().unwrap().into(),
        (ids, "s3:kube-daily".into()),
    );
    let mut manifests = vec![j];

    // sigv4-amazon-opensearch: signed requests → S3 Parquet.
    let mut j = example("sigv4-amazon-opensearch.yaml");
    j["spec"]["source"]["url"] = json!(signed.url());
    point_s3(&mut j, "kube-audit");
    s3_bucket("kube-audit").await;
    // Read the source through the plain path: the signed cluster checks every request.
    let mut ids: Vec<String> = searchsim::datagen::docs(&DataSpec {
        docs: 2_500,
        days: 182,
        seed: 5,
        index_prefix: "audit-".into(),
        start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        large_every: 0,
        ..Default::default()
    })
    .map(|d| d.id)
    .collect();
    ids.sort();
    expected.insert(
        j["metadata"]["name"].as_str().unwrap().into(),
        (ids, "s3:kube-audit".into()),
    );
    manifests.push(j);

    // query-and-fields: a query and field selection → S3 Parquet.
    let mut j = example("query-and-fields.yaml");
    j["spec"]["source"]["url"] = json!(plain.url());
    point_s3(&mut j, "kube-incident");
    s3_bucket("kube-incident").await;
    let user_query = j["spec"]["source"]["query"].clone();
    let ids = source_ids(
        &plain,
        "logs-2024.03.*",
        range_query(
            "@timestamp",
            "2024-03-01T00:00:00Z",
            "2024-04-01T00:00:00Z",
            Some(user_query),
        ),
    )
    .await;
    assert!(
        !ids.is_empty(),
        "the example's query matches some generated documents"
    );
    expected.insert(
        j["metadata"]["name"].as_str().unwrap().into(),
        (ids, "s3:kube-incident".into()),
    );
    manifests.push(j);

    // volume-ndjson: an alias → NDJSON on a volume.
    let mut j = example("volume-ndjson.yaml");
    j["spec"]["source"]["url"] = json!(plain.url());
    let vol = out.join("orders");
    j["spec"]["output"]["destination"]["volume"]["path"] = json!(vol.display().to_string());
    let ids = source_ids(&plain, "orders", json!({"match_all": {}})).await;
    expected.insert(
        j["metadata"]["name"].as_str().unwrap().into(),
        (ids, format!("dir:{}", vol.display())),
    );
    manifests.push(j);

    // suspended: waits suspended, then resumes → CSV on a volume.
    let mut j = example("suspended.yaml");
    j["spec"]["source"]["url"] = json!(plain.url());
    let vol = out.join("backfill");
    j["spec"]["output"]["destination"]["volume"]["path"] = json!(vol.display().to_string());
    let ids = source_ids(
        &plain,
        "metrics-*",
        range_query(
            "@timestamp",
            "2023-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            None,
        ),
    )
    .await;
    expected.insert(
        j["metadata"]["name"].as_str().unwrap().into(),
        (ids, format!("dir:{}", vol.display())),
    );
    manifests.push(j);

    for mut m in manifests {
        m["metadata"]["namespace"] = json!(NS);
        let job: ExportJob = serde_json::from_value(m).unwrap();
        d.jobs()
            .create(&PostParams::default(), &job)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", job.name_any()));
    }
    // The suspended one waits, then resumes when told to.
    let suspended = d
        .wait_phase(
            "backfill-suspended",
            Phase::Suspended,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        dir_ids(&out.join("backfill")).is_empty(),
        "nothing exported while suspended"
    );
    assert_eq!(
        suspended
            .status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Suspended")
            .unwrap()
            .status,
        "True"
    );
    d.jobs()
        .patch(
            "backfill-suspended",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();

    for (name, (ids, dest)) in &expected {
        let job = d
            .wait_phase(name, Phase::Succeeded, Duration::from_secs(300))
            .await;
        assert_counts(&job, ids.len());
        let got = if let Some(bucket) = dest.strip_prefix("s3:") {
            let prefix = job
                .spec
                .output
                .destination
                .s3
                .as_ref()
                .unwrap()
                .prefix
                .clone();
            s3_ids(
                s3_bucket(bucket).await.as_ref(),
                &run_dir(&job, prefix.trim_end_matches('/')),
            )
            .await
        } else {
            dir_ids(Path::new(dest.strip_prefix("dir:").unwrap()))
        };
        assert_eq!(
            &got, ids,
            "{name}: the output holds exactly the source's documents"
        );
    }
    // Only the leader ever wrote statuses (and so drove the runs).
    let leader = d.leader().await.expect("a leader holds the lease");
    if let ApiServer::Sim(kube) = &d.kube {
        assert_eq!(
            d.status_writers(kube),
            vec![leader.clone()],
            "\n{}",
            d.logs()
        );
    }
    for p in &d.coordinators {
        let started = p.log_text().matches("starting the export").count();
        if p.name == leader {
            assert!(
                started >= expected.len(),
                "{} started {started} runs",
                p.name
            );
        } else {
            assert_eq!(
                started,
                0,
                "{} is a follower and started runs:\n{}",
                p.name,
                d.logs()
            );
        }
    }
    // The RBAC rules the chart grants are exactly the calls the roles made (kubesim); the
    // real API server enforced them on every call above, and refuses what they do not grant.
    match &d.kube {
        ApiServer::Sim(kube) => {
            assert_rbac_is_exact(kube, "coordinator");
            assert_rbac_is_exact(kube, "worker");
        }
        ApiServer::Real { .. } => {
            let worker = client_from(Path::new(&d.kubeconfig("worker-probe"))).await;
            let jobs: Api<ExportJob> = Api::namespaced(worker.clone(), NS);
            match jobs.list(&Default::default()).await {
                Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{}", e.message),
                other => panic!("the worker's ServiceAccount may not list ExportJobs: {other:?}"),
            }
            let coordinator = client_from(Path::new(&d.kubeconfig("coordinator-probe"))).await;
            let secrets: Api<Secret> = Api::namespaced(coordinator, NS);
            match secrets.list(&Default::default()).await {
                Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{}", e.message),
                other => panic!("the coordinator may get Secrets but not list them: {other:?}"),
            }
        }
    }
    for sim in [plain, secure, signed] {
        sim.shutdown().await;
    }
}

fn job_yaml(name: &str, url: &str, spec: &DataSpec, extra: &str, out: &Path) -> ExportJob {
    let end = spec.start + chrono::Days::new(u64::from(spec.days));
    let yaml = format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  source:\n    url: {url}\n    indices: [\"{prefix}*\"]\n  timeRange:\n    field: \"@timestamp\"\n    gte: {start}T00:00:00Z\n    lt: {end}T00:00:00Z\n{extra}  output:\n    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {out}\n",
        prefix = spec.index_prefix,
        start = spec.start,
        out = out.display(),
    );
    spillway_api::load_job_yaml(&yaml).unwrap()
}

fn sorted_source(spec: &DataSpec) -> Vec<String> {
    let mut ids: Vec<String> = searchsim::datagen::docs(spec).map(|d| d.id).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_delete_suspend_and_leader_failover() {
    delete_suspend_and_leader_failover(On::Sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_real_api_server_delete_suspend_and_leader_failover() {
    delete_suspend_and_leader_failover(On::Real).await;
}

async fn delete_suspend_and_leader_failover(on: On) {
    let mut d = Deployment::start(on, "kube-lifecycle", 2, 3).await;
    let spec = DataSpec {
        docs: 20_000,
        days: 4,
        seed: 9,
        large_every: 0,
        ..Default::default()
    };
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    // Slow enough (about 10 s a job) to be deleted, suspended or failed over mid-way.
    sim.cluster()
        .set_faults(Faults {
            latency_ms: 100,
            paths: vec!["_search".into()],
            ..Default::default()
        })
        .unwrap();
    let extra = "  sharding:\n    targetDocsPerShard: 1000\n    pageSize: 50\n  parallelism:\n    maxConcurrentShards: 4\n";

    // 1. Deleting a running job closes its PIT and leaves nothing half-written behind.
    let out = d.dir.path().join("doomed");
    d.jobs()
        .create(
            &PostParams::default(),
            &job_yaml("doomed", &sim.url(), &spec, extra, &out),
        )
        .await
        .unwrap();
    let running = d
        .wait_phase("doomed", Phase::Running, Duration::from_secs(60))
        .await;
    assert_eq!(sim.cluster().open_pits(), 1);
    d.jobs()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(
            d.jobs(),
            "doomed",
            conditions::is_deleted(&running.uid().unwrap()),
        ),
    )
    .await
    .expect("deleted within a minute")
    .unwrap();
    assert_eq!(
        sim.cluster().open_pits(),
        0,
        "the PIT is closed on deletion:\n{}",
        d.logs()
    );
    // No orphaned upload: temporary files of shards cut short are removed (a shard still being
    // written when the job went away finishes or aborts within moments; an orphan never goes).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let temps: Vec<_> = files_under(&out)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect();
        if temps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned uploads after deletion: {temps:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Suspend mid-run, then resume: exact output.
    let out = d.dir.path().join("paused");
    d.jobs()
        .create(
            &PostParams::default(),
            &job_yaml("paused", &sim.url(), &spec, extra, &out),
        )
        .await
        .unwrap();
    d.wait_phase("paused", Phase::Running, Duration::from_secs(60))
        .await;
    d.jobs()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    d.wait_phase("paused", Phase::Suspended, Duration::from_secs(60))
        .await;
    d.jobs()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let done = d
        .wait_phase("paused", Phase::Succeeded, Duration::from_secs(300))
        .await;
    assert_counts(&done, spec.docs as usize);
    assert_eq!(
        dir_ids(&out),
        sorted_source(&spec),
        "suspend/resume exports every document once"
    );

    // 3. Kill the leader mid-job: the follower takes over within the lease and finishes.
    let out = d.dir.path().join("failover");
    d.jobs()
        .create(
            &PostParams::default(),
            &job_yaml("failover", &sim.url(), &spec, extra, &out),
        )
        .await
        .unwrap();
    d.wait_phase("failover", Phase::Running, Duration::from_secs(60))
        .await;
    let leader = d.leader().await.expect("a leader");
    let idx = d
        .coordinators
        .iter()
        .position(|p| p.name == leader)
        .unwrap();
    d.coordinators[idx].kill9();
    let killed_at = Instant::now();
    let mut new_leader = None;
    while killed_at.elapsed() < Duration::from_secs(30) {
        if let Some(l) = d.leader().await
            && l != leader
        {
            new_leader = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leader = new_leader.unwrap_or_else(|| panic!("no follower took over:\n{}", d.logs()));
    assert!(
        killed_at.elapsed() < Duration::from_secs(4 + 3),
        "the follower took over within the 4 s lease (plus a retry period): {:?}",
        killed_at.elapsed()
    );
    let done = d
        .wait_phase("failover", Phase::Succeeded, Duration::from_secs(300))
        .await;
    assert_counts(&done, spec.docs as usize);
    assert_eq!(
        dir_ids(&out),
        sorted_source(&spec),
        "the new leader resumed and finished exactly"
    );
    let survivor = d
        .coordinators
        .iter_mut()
        .find(|p| p.name == new_leader)
        .unwrap();
    assert!(survivor.alive());
    sim.shutdown().await;
}

/// The CRD's CEL rules refuse invalid specs with their own message, as the API server's 422:
/// on kubesim's interpreter and on the real API server's CEL.
async fn invalid_specs_are_refused_by_the_crd_rules(on: On) {
    let d = Deployment::start(on, "kube-cel", 0, 0).await;
    let out = d.dir.path().join("out");
    let spec = DataSpec::default();
    type Breaks = fn(&mut ExportJob);
    let cases: [(&str, Breaks, &str); 3] = [
        (
            "backwards",
            |j| {
                let tr = j.spec.time_range.as_mut().unwrap();
                std::mem::swap(&mut tr.gte, &mut tr.lt);
            },
            "timeRange.gte must be before timeRange.lt",
        ),
        (
            "page-zero",
            |j| j.spec.sharding.page_size = 0,
            "sharding.pageSize must be between 1 and 10000",
        ),
        (
            "attempts",
            |j| j.spec.retry.max_attempts = 1000,
            "retry.maxAttempts must be between 1 and 100",
        ),
    ];
    for (name, break_it, message) in cases {
        let mut j = job_yaml(name, "http://127.0.0.1:9", &spec, "", &out);
        break_it(&mut j);
        let err = d
            .jobs()
            .create(&PostParams::default(), &j)
            .await
            .expect_err("the API server refuses the spec");
        match err {
            kube::Error::Api(e) => {
                assert_eq!(e.code, 422, "{name} on {on:?}: {}", e.message);
                assert!(
                    e.message.contains(message),
                    "{name} on {on:?}: {}",
                    e.message
                );
            }
            other => panic!("{name} on {on:?}: unexpected error {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_by_kubesim_with_the_crd_messages() {
    invalid_specs_are_refused_by_the_crd_rules(On::Sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_by_the_real_api_server_with_the_crd_messages() {
    invalid_specs_are_refused_by_the_crd_rules(On::Real).await;
}
